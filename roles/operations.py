"""Facts and operations the roles share, where pyinfra has no built-in that fits.

Each operation reads a fact, yields only the commands needed, and records a
no-op otherwise, so a re-apply of an unchanged lab reports zero changes.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.facts.files import Sha1File
from pyinfra.operations import files

from labctl.paths import LAB_LABEL

__all__ = ["LAB_LABEL", "ROLE_LABEL", "SPEC_LABEL"]

# Label holding a hash of everything a container was created from. pyinfra's
# docker.container does not notice changed arguments; this label does.
SPEC_LABEL = "io.labctl.spec"
ROLE_LABEL = "io.labctl.role"


class DockerImageIds(FactBase):
    """Image ID by reference (repository:tag) of every tagged image on the host."""

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


class DockerContainersByLabel(FactBase):
    """Names of the containers carrying a label (key=value)."""

    requires_command = "docker"

    def command(self, label: str) -> str:
        return f"docker ps -a --filter label={shlex.quote(label)} --format '{{{{.Names}}}}'"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


class ConsulAgentServices(FactBase):
    """The local Consul agent's services (GET /v1/agent/services), by ID."""

    requires_command = "curl"

    def command(self, http_addr: str) -> str:
        return f"curl -fsS --max-time 10 {shlex.quote(http_addr)}/v1/agent/services"

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict:
        return json.loads("\n".join(output) or "{}")


def spec_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@operation()
def images_present(images: dict[str, str], archive: str):
    """Load `archive` (a `docker save` of `images`: ref -> ID) unless the host has them all."""
    current = host.get_fact(DockerImageIds)
    if all(current.get(ref) == image_id for ref, image_id in images.items()):
        host.noop(f"images present: {', '.join(sorted(images))}")
        return
    remote = f"/tmp/lab-images-{spec_hash(images)}.tar"
    yield from files.put._inner(src=archive, dest=remote)
    yield f"docker load -i {remote} && rm -f {remote}"


@operation()
def container(
    container_name: str,
    image: str,
    image_id: str,
    args: list[str],
    command: list[str] = (),
    labels: dict[str, str] | None = None,
    depends_on: str = "",
):
    """A running container created from exactly this spec; recreated when the spec changes.

    `depends_on` is any extra content (e.g. a config file's hash) whose change must
    recreate the container too.
    """
    labels = dict(labels or {})
    digest = spec_hash(image_id, args, list(command), labels, depends_on)
    name = container_name
    state = host.get_fact(DockerContainerState, container=name)
    if state is not None and state["spec"] == digest:
        if state["running"]:
            host.noop(f"container {name} is up to date")
        else:
            yield f"docker start {shlex.quote(name)}"
        return
    if state is not None:
        yield f"docker rm -f {shlex.quote(name)}"
    label_args = [f"--label={k}={v}" for k, v in sorted((labels | {SPEC_LABEL: digest}).items())]
    yield shlex.join(["docker", "run", "-d", f"--name={name}", *label_args, *args, image, *command])


@operation()
def containers_pruned(label: str, keep: list[str]):
    """Remove the containers carrying `label` (key=value) whose names are not in `keep`."""
    stale = [n for n in host.get_fact(DockerContainersByLabel, label=label) if n not in keep]
    if not stale:
        host.noop(f"no stale containers labelled {label}")
        return
    yield "docker rm -f " + " ".join(shlex.quote(n) for n in stale)


@operation()
def validated_file(content: str, dest: str, validate: str):
    """Install `content` at `dest` only if `validate` (run with {} as the staged file's
    directory) accepts it; a rejected file never replaces the one in use."""
    digest = hashlib.sha1(content.encode()).hexdigest()
    if host.get_fact(Sha1File, path=dest) == digest:
        host.noop(f"{dest} is up to date")
        return
    staging_dir = f"{dest}.staged.d"
    staged = f"{staging_dir}/{dest.rsplit('/', 1)[-1]}"
    q_dir, q_staged, q_dest = (shlex.quote(p) for p in (staging_dir, staged, dest))
    yield f"rm -rf {q_dir} && mkdir -p {q_dir}"
    yield from files.put._inner(src=StringIO(content), dest=staged)
    yield validate.format(q_dir)
    yield f"mv {q_staged} {q_dest} && rm -rf {q_dir}"


@operation()
def consul_service(http_addr: str, definition: dict):
    """Register a service with the local agent unless it is registered from this definition."""
    digest = spec_hash(definition)
    registered = host.get_fact(ConsulAgentServices, http_addr=http_addr).get(definition["ID"])
    if registered and registered.get("Meta", {}).get("lab_spec") == digest:
        host.noop(f"service {definition['ID']} is registered")
        return
    body = definition | {"Meta": {**definition.get("Meta", {}), "lab_spec": digest}}
    yield (
        f"printf %s {shlex.quote(json.dumps(body, ensure_ascii=False))} | curl -fsS -X PUT "
        f"--data-binary @- {http_addr}/v1/agent/service/register?replace-existing-checks=true"
    )


@operation()
def consul_services_absent(http_addr: str, managed_by: str, keep: list[str]):
    """Deregister the services this lab registered (Meta.lab_managed) that are not in `keep`."""
    services = host.get_fact(ConsulAgentServices, http_addr=http_addr)
    stale = sorted(
        sid
        for sid, service in services.items()
        if service.get("Meta", {}).get("lab_managed") == managed_by and sid not in keep
    )
    if not stale:
        host.noop("no stale services")
        return
    for sid in stale:
        yield f"curl -fsS -X PUT {http_addr}/v1/agent/service/deregister/{shlex.quote(sid)}"
