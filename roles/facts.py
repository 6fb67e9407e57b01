"""Facts the roles' operations read, where pyinfra has no built-in that fits.

Each is a tiny class in pyinfra's style: `command()` runs on the host, `process()`
turns its output into data. They never fail on a host that lacks what they ask
about (no container, no agent yet): they answer "absent". A Consul agent that
answers, but not with what was asked (a 403, a 500, no answer in time), is not
absent: its facts say why, as a str, and the operation reading them stops.

A fact marked `host_state_only` changes only by commands run on its host (not by other
hosts, nor by time): a caller may answer a second read of it in one run with the first,
until a command runs on that host (labctl does: labctl/fact_cache.py).
"""

from __future__ import annotations

import json
import shlex

from pyinfra.api import FactBase

from roles.contract import SPEC_LABEL, vrrp_outranked_command


class DockerImageIds(FactBase):
    """Image ID by reference (repository:tag) of every tagged image on the host."""

    host_state_only = True  # see the module's docstring

    requires_command = "docker"

    def command(self) -> str:
        return "docker image ls --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}'"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return dict(line.split() for line in output if len(line.split()) == 2)


class DockerContainerState(FactBase):
    """{"spec": <spec label>, "running": bool} of a container, or None when absent."""

    host_state_only = True  # see the module's docstring

    requires_command = "docker"

    def command(self, container: str) -> str:
        template = f'{{{{index .Config.Labels "{SPEC_LABEL}"}}}} {{{{.State.Running}}}}'
        name = shlex.quote(container)
        return f"docker inspect --format {shlex.quote(template)} {name} 2>/dev/null || true"

    def process(self, output: list[str]) -> dict | None:
        # A container made without the label (e.g. by hand, as in the seed) prints
        # " true": present, with an empty spec, so it is recreated, not run twice.
        words = " ".join(output).rsplit(None, 1)
        if not words or words[-1] not in ("true", "false"):
            return None
        return {"spec": words[0].strip() if len(words) == 2 else "", "running": words[-1] == "true"}


class ImageUserIds(FactBase):
    """{"user": uid, "group": gid} of a user inside an image (e.g. the official Consul
    image's `consul`, which its agent runs as), for files the container must read."""

    host_state_only = True  # see the module's docstring

    requires_command = "docker"

    def command(self, image: str, user: str) -> str:
        # The image's /etc/passwd, from a container created and never started: a start
        # (`docker run id`) costs a second on a busy host, and this is read on the way to
        # the first Consul election. The command fails when the image has no such user.
        image, entry = shlex.quote(image), shlex.quote(f"^{user}:")
        return (
            f"c=$(docker create --network=none --entrypoint sh {image}) && "
            f'{{ docker cp "$c:/etc/passwd" - | tar -xOf - | grep {entry}; s=$?; '
            f'docker rm "$c" >/dev/null; exit $s; }}'
        )

    def process(self, output: list[str]) -> dict[str, str]:
        uid, gid = output[0].strip().split(":")[2:4]
        return {"user": uid, "group": gid}


# How to list Docker objects by label, and remove them (the teardown's way).
DOCKER_OBJECTS = {
    "container": ("ps -a", "{{.Names}}", "docker rm -f -v"),
    "volume": ("volume ls", "{{.Name}}", "docker volume rm -f"),
    "network": ("network ls", "{{.Name}}", "docker network rm"),
}


class DockerLabelled(FactBase):
    """Names of the containers, volumes or networks (`kind`) carrying a label (key=value)."""

    host_state_only = True  # see the module's docstring

    requires_command = "docker"

    def command(self, kind: str, label: str) -> str:
        listing, name_format, _ = DOCKER_OBJECTS[kind]
        return f"docker {listing} --filter label={shlex.quote(label)} --format '{name_format}'"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


# curl's exit status when nothing listens on the agent's port: no agent (yet).
CURL_COULD_NOT_CONNECT = 7
CURL_TIMED_OUT = 28
AGENT_TIMEOUT_S = 10


def curl_token_option(header: str | None) -> str:
    """curl's option sending the token header kept in the file `header` (root-only,
    written by role consul), so the token is never on a command line; "" without one."""
    return f" -H @{shlex.quote(header)}" if header else ""


def agent_get_command(http_addr: str, path: str, header: str | None = None) -> str:
    """curl of the local agent's API that always exits 0 and prints the body, then a last
    line "<HTTP status> <curl's exit status>" (see agent_answer), with the token in the
    file `header` when there is one."""
    return (
        f"curl -sS --max-time {AGENT_TIMEOUT_S}{curl_token_option(header)} "
        f"-w '\\n%{{http_code}} ' {shlex.quote(http_addr)}{path}; echo $?"
    )


def agent_answer(output: list[str], path: str) -> object | str | None:
    """What agent_get_command printed: the JSON of a 200; None when nothing listens (the agent
    is not there yet: a first converge); else a str saying why there is no answer."""
    status, _, curl_exit = (output[-1] if output else "").strip().partition(" ")
    body = "\n".join(output[:-1]).strip()
    if curl_exit == str(CURL_COULD_NOT_CONNECT):
        return None
    if curl_exit == str(CURL_TIMED_OUT):
        return f"did not answer GET {path} within {AGENT_TIMEOUT_S} s"
    if curl_exit != "0":
        return f"broke off GET {path} (curl exit status {curl_exit or 'unknown'})"
    if status != "200":
        return f"answered {status} ({body[:120] or 'no text'}) to GET {path}"
    try:
        return json.loads(body)
    except ValueError:
        return f"answered GET {path} with something that is not JSON ({body[:60]!r})"


class ConsulAgentServices(FactBase):
    """The local Consul agent's services (GET /v1/agent/services), by ID, as far as the
    token in `header` may see them; {} when no agent listens (not started yet); a str
    saying why when the agent answers otherwise (see agent_answer)."""

    requires_command = "curl"

    def command(self, http_addr: str, header: str | None = None) -> str:
        return agent_get_command(http_addr, "/v1/agent/services", header)

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict | str:
        answer = agent_answer(output, "/v1/agent/services")
        return {} if answer is None else answer


class ConsulPassingServices(FactBase):
    """IDs of the local agent's service instances whose every check passes (GET
    /v1/agent/checks, as far as the token in `header` may see); [] when no agent
    listens; a str saying why when the agent answers otherwise (see agent_answer)."""

    requires_command = "curl"

    def command(self, http_addr: str, header: str | None = None) -> str:
        return agent_get_command(http_addr, "/v1/agent/checks", header)

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str] | str:
        answer = agent_answer(output, "/v1/agent/checks")
        if isinstance(answer, str):
            return answer
        status: dict[str, bool] = {}
        for check in (answer or {}).values():
            if check.get("ServiceID"):
                sid = check["ServiceID"]
                status[sid] = status.get(sid, True) and check.get("Status") == "passing"
        return sorted(sid for sid, passing in status.items() if passing)


class LoadBalancerHealth(FactBase):
    """What `lb-health` (templates/lb) reports inside the LB container:
    {"nginx", "listening", "consul_template": bool, "config": current|waiting|stale},
    or None when the container is absent or not running."""

    requires_command = "docker"

    def command(self, container: str) -> str:
        return f"docker exec {shlex.quote(container)} lb-health 2>/dev/null || true"

    def process(self, output: list[str]) -> dict | None:
        try:
            return json.loads("\n".join(output))
        except ValueError:
            return None


class AddressesOnInterfaces(FactBase):
    """Every interface that holds `address`, with the address as it holds it (prefix
    length included, which `ip addr del` must match): [(interface, "a.b.c.d/n"), ...]."""

    requires_command = "ip"

    def command(self, address: str) -> str:
        return f"ip -o -4 addr show to {shlex.quote(address)}/32"

    def process(self, output: list[str]) -> list[tuple[str, str]]:
        # `3: eth1    inet 192.168.56.10/24 ...`, `1: lo    inet 192.168.56.10/32 scope host lo`
        held = []
        for line in output:
            words = line.split()
            if len(words) > 3 and words[2] == "inet":
                held.append((words[1].split("@")[0], words[3]))
        return held


class OutrankedHolder(FactBase):
    """When this LB host holds the shared address while an LB ahead of it in priority
    order serves: that LB's address (templates/keepalived/vrrp-handover `outranked`);
    None otherwise. Other hosts change it: always asked."""

    def command(self, address: str, higher: list[str]) -> str:
        return vrrp_outranked_command(address, higher)

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


class InterfaceWithAddress(FactBase):
    """The name of the interface that holds `address` on the host, or None."""

    requires_command = "ip"

    def command(self, address: str) -> str:
        return f"ip -o -4 addr show to {shlex.quote(address)}/32"

    def process(self, output: list[str]) -> str | None:
        words = output[0].split() if output else []
        # `3: eth1    inet 192.168.56.4/24 ...`; a VLAN's shows as eth1.10@eth1.
        return words[1].split("@")[0] if len(words) > 1 else None
