"""Role `consul`: one Consul agent container per host, server or client per the spec.

The seed's `docker run --net=host consul agent -server -bootstrap-expect 1 -bind=...
-client=0.0.0.0 -join=...`, with three changes: every server gets the same
bootstrap_expect (the number of servers), as Consul recommends, instead of one
server bootstrapping alone; bind and advertise are set explicitly, because a
VirtualBox VM has two private addresses and Consul refuses to guess; and the
configuration is a JSON file, validated by `consul validate` before it replaces
the one an agent runs on (a host's first one is checked by the agent's own start,
which refuses it with the same words, and the wait after the start says so).
"""

from __future__ import annotations

import json
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server

from roles.contract import (
    CONSUL_CONFIG_DIR,
    CONSUL_CONTAINER,
    CONSUL_ROLE,
    LAB_CONTAINER_ARGS,
    LAB_LABEL,
    LAB_WAIT,
    LOCAL_CONSUL,
    ROLE_LABEL,
    SECRETS_DIR,
    TEMPLATES,
    TOKEN_HEADER,
    ConsulAgent,
    LabHost,
)
from roles.docker import apt_env
from roles.facts import ConsulPassingServices
from roles.host_images import image_ref
from roles.operations import (
    agent_fact,
    container,
    container_digest,
    lab_wait,
    replaces_running,
    rolling,
    root_only_file,
    spec_hash,
    validated_config,
)

DEFAULTS = {
    # Datacenter name shared by every agent of the lab.
    "consul_datacenter": "dc1",
    # Address the HTTP API, DNS and UI listen on (the seed's -client=0.0.0.0).
    "consul_client_addr": "0.0.0.0",
    # Serve the web UI on :8500/ui (the seed's -ui).
    "consul_ui": True,
    # The agent's -log-level.
    "consul_log_level": "INFO",
    # Seconds between attempts to join the servers while they are not up yet (an agent
    # started before its servers listen joins within this; the ACL bootstrap waits on it).
    "consul_retry_interval": "1s",
    # Named volume for the agent's -data-dir (services registered via the API persist there).
    "consul_data_volume": "consul-data",
    # Seconds to wait for a (re)started agent to answer its HTTP API.
    "consul_ready_timeout": 120,
    # With ACLs (the spec's security.acl): what an agent does when no server can say
    # what a token may do (extend-cache: what it knew, else deny).
    "consul_acl_down_policy": "extend-cache",
}

# The gossip key's file, apart from agent.json: it is secret, readable by the agent only.
GOSSIP_FILE = "gossip.json"


def agent_config(data) -> dict:
    """The agent's configuration, as Consul's JSON config keys."""
    lab: LabHost = data.lab_host
    agent: ConsulAgent = lab.consul
    config = {
        "datacenter": data.consul_datacenter,
        "node_name": lab.name,
        "server": agent.server,
        "bind_addr": lab.address,
        "advertise_addr": lab.address,
        "client_addr": data.consul_client_addr,
        "data_dir": "/consul/data",
        "log_level": data.consul_log_level,
        "ui_config": {"enabled": bool(data.consul_ui)},
        "retry_join": [a for a in agent.join if a != lab.address],
        "retry_interval": data.consul_retry_interval,
        "leave_on_terminate": not agent.server,
        "disable_update_check": True,
    }
    if agent.server:
        config["bootstrap_expect"] = agent.servers
    if agent.acl:
        # Deny by default; tokens set through the agent token API (labctl.security) are
        # kept in the data directory across restarts.
        config["acl"] = {
            "enabled": True,
            "default_policy": "deny",
            "down_policy": data.consul_acl_down_policy,
            "enable_token_persistence": True,
        }
    return config


def token_header(lab: LabHost) -> str | None:
    """The header file roles pass to curl, when the lab has ACLs (None: the seed's)."""
    return TOKEN_HEADER if lab.consul.acl else None


def _install_tools(data) -> None:
    apt.packages(
        name="Install curl (registration and checks)", packages=["curl"], _env=apt_env(data)
    )
    files.put(
        name="Install lab-wait (the waits of rolling changes)",
        src=str(TEMPLATES / "lab-wait"),
        dest=LAB_WAIT,
        mode="755",
    )


def _write_token_header(agent: ConsulAgent) -> None:
    """The host's registration token as a curl header, in a root-only file."""
    files.directory(
        name="Make the root-only secrets directory",
        path=SECRETS_DIR,
        user="root",
        group="root",
        mode="700",
    )
    # Empty until labctl made the host's token (the first stage of an `up`).
    token = agent.registration_token
    root_only_file("Write the host's Consul token header",
                   f"X-Consul-Token: {token}\n" if token else "", TOKEN_HEADER)  # fmt: skip


def config_files(data, image: str) -> dict[str, dict]:
    """agent.json, and the gossip key's own file: read by the agent, which runs as the
    image's `consul` user, so owned by that user."""
    agent: ConsulAgent = data.lab_host.consul
    config = json.dumps(agent_config(data), indent=2, sort_keys=True) + "\n"
    files = {"agent.json": {"content": config}}
    if agent.gossip_key:
        files[GOSSIP_FILE] = {
            "content": json.dumps({"encrypt": agent.gossip_key}) + "\n",
            "mode": "600",
            "owner_from": (image, "consul"),
        }
    return files


def agent_container(data, image_id: str, files: dict[str, dict]) -> dict:
    """The agent container's spec: what `container` creates it from."""
    lab: LabHost = data.lab_host
    volume = f"src={data.consul_data_volume},dst=/consul/data"
    return {
        "image_id": image_id,
        "args": [
            *LAB_CONTAINER_ARGS,
            f"--mount=type=volume,{volume},volume-label={LAB_LABEL}={lab.lab_name}",
            f"-v={CONSUL_CONFIG_DIR}:/consul/config",
        ],
        "command": ["agent"],
        "labels": {LAB_LABEL: lab.lab_name, ROLE_LABEL: CONSUL_ROLE},
        "depends_on": spec_hash({name: f["content"] for name, f in files.items()}),
    }


def replaced_ready(lab: LabHost, spec: dict) -> str:
    """What a replaced agent is waited for before the next host's: its API, for a server
    the leader and every server in the raft peer set (quorum is never lost), and the
    instances that passed before passing again (never all out of the LB). Those are read
    only when the agent is to be replaced: an agent that refuses the host's token (one
    Consul lost) stops a replacement, not the `up` that makes it again."""
    header = token_header(lab)
    passing = []
    if replaces_running(CONSUL_CONTAINER, container_digest(**spec)):
        passing = agent_fact(ConsulPassingServices, LOCAL_CONSUL, header)
    servers = lab.consul.servers if lab.consul.server else 0
    return lab_wait("agent", LOCAL_CONSUL, str(servers), *passing, consul_header=header)


@deploy("Deploy Consul agent", data_defaults=DEFAULTS)
def consul_agent() -> None:
    data = host.data
    lab: LabHost = data.lab_host
    image, image_id = image_ref(CONSUL_ROLE)
    _install_tools(data)
    if lab.consul.acl:
        _write_token_header(lab.consul)
    files = config_files(data, image)
    validated_config(
        name="Write and validate the agent configuration",
        config_dir=CONSUL_CONFIG_DIR,
        files=files,
        validate=(
            f"docker run --rm --network=none -v {{}}:/consul/config:ro --entrypoint consul "
            f"{shlex.quote(image)} validate /consul/config"
        ),
    )
    spec = agent_container(data, image_id, files)
    agent = rolling(
        container,
        CONSUL_CONTAINER,
        name=f"Run the Consul {'server' if lab.consul.server else 'client'} agent",
        image=image,
        replaced_ready=replaced_ready(lab, spec),
        **spec,
    )
    server.shell(
        name="Wait for the agent's HTTP API",
        commands=[agent_answers_command(CONSUL_CONTAINER, LOCAL_CONSUL, data.consul_ready_timeout)],
        _if=agent.did_change,
    )


def agent_answers_command(container: str, http_addr: str, timeout: float) -> str:
    """Wait until the agent in `container` answers at `http_addr`; an agent that stops
    instead (Consul refuses a configuration at its start, as `consul validate` does) fails
    the wait at once, with the agent's last lines."""
    name = shlex.quote(container)
    stopped = (
        f'[ "$(docker inspect -f {{{{.State.Running}}}} {name})" = true ] || '
        f"{{ echo 'the Consul agent stopped; its last lines:' >&2; "
        f"docker logs --tail 5 {name} >&2; exit 1; }}"
    )
    answers = f"curl -fsS -o /dev/null {http_addr}/v1/status/leader"
    script = f"until {answers}; do {stopped}; sleep 0.2; done"
    return f"timeout {int(timeout)} sh -c {shlex.quote(script)}"

