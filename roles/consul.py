"""Role `consul`: one Consul agent container per host, server or client per the spec.

The seed's `docker run --net=host consul agent -server -bootstrap-expect 1 -bind=...
-client=0.0.0.0 -join=...`, with three changes: every server gets the same
bootstrap_expect (the number of servers), as Consul recommends, instead of one
server bootstrapping alone; bind and advertise are set explicitly, because a
VirtualBox VM has two private addresses and Consul refuses to guess; and the
configuration is a JSON file, validated by `consul validate` before the
container is (re)started.
"""

from __future__ import annotations

import json
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server

from labctl.spec import PROJECT_ROOT
from roles.docker import apt_env
from roles.facts import ConsulPassingServices
from roles.images import image_ref
from roles.operations import (
    LAB_LABEL,
    ROLE_LABEL,
    agent_fact,
    container,
    container_digest,
    lab_wait,
    replaces_running,
    spec_hash,
    validated_config,
)

LAB_WAIT = PROJECT_ROOT / "templates" / "lab-wait"

DEFAULTS = {
    # Datacenter name shared by every agent of the lab.
    "consul_datacenter": "dc1",
    # Address the HTTP API, DNS and UI listen on (the seed's -client=0.0.0.0).
    "consul_client_addr": "0.0.0.0",
    # Serve the web UI on :8500/ui (the seed's -ui).
    "consul_ui": True,
    # The agent's -log-level.
    "consul_log_level": "INFO",
    # Seconds between attempts to join the servers while they are not up yet.
    "consul_retry_interval": "5s",
    # Host directory mounted as the agent's -config-dir.
    "consul_config_dir": "/etc/lab/consul",
    # Named volume for the agent's -data-dir (services registered via the API persist there).
    "consul_data_volume": "consul-data",
    # The agent's container on every host.
    "consul_container_name": "consul",
    # Where roles on this host reach the local agent's HTTP API.
    "consul_http_addr": "http://127.0.0.1:8500",
    # Seconds to wait for a (re)started agent to answer its HTTP API.
    "consul_ready_timeout": 120,
    # Root-only directory of the host's Consul secrets: `consul_token_header` holds the
    # host's registration token as an HTTP header, for curl -H @file.
    "consul_secrets_dir": "/etc/lab/secrets",
    "consul_token_header": "/etc/lab/secrets/consul.header",
    # With ACLs (the spec's security.acl): what an agent does when no server can say
    # what a token may do (extend-cache: what it knew, else deny).
    "consul_acl_down_policy": "extend-cache",
}

# The gossip key's file, apart from agent.json: it is secret, readable by the agent only.
GOSSIP_FILE = "gossip.json"


def agent_config(data) -> dict:
    """The agent's configuration, as Consul's JSON config keys."""
    config = {
        "datacenter": data.consul_datacenter,
        "node_name": data.lab_host,
        "server": data.consul_server,
        "bind_addr": data.lab_address,
        "advertise_addr": data.lab_address,
        "client_addr": data.consul_client_addr,
        "data_dir": "/consul/data",
        "log_level": data.consul_log_level,
        "ui_config": {"enabled": bool(data.consul_ui)},
        "retry_join": [a for a in data.consul_join if a != data.lab_address],
        "retry_interval": data.consul_retry_interval,
        "leave_on_terminate": not data.consul_server,
        "disable_update_check": True,
    }
    if data.consul_server:
        config["bootstrap_expect"] = data.consul_bootstrap_expect
    if data.consul_acl:
        # Deny by default; tokens set through the agent token API (labctl.security) are
        # kept in the data directory across restarts.
        config["acl"] = {
            "enabled": True,
            "default_policy": "deny",
            "down_policy": data.consul_acl_down_policy,
            "enable_token_persistence": True,
        }
    return config


def token_header(data) -> str | None:
    """The header file roles pass to curl, when the lab has ACLs (None: the seed's)."""
    return data.consul_token_header if data.consul_acl else None


@deploy("Deploy Consul agent", data_defaults=DEFAULTS)
def consul_agent() -> None:
    image, image_id = image_ref("consul")
    data = host.data
    config_dir = data.consul_config_dir
    config = json.dumps(agent_config(data), indent=2, sort_keys=True) + "\n"

    apt.packages(
        name="Install curl (registration and checks)", packages=["curl"], _env=apt_env(data)
    )
    files.put(
        name="Install lab-wait (the waits of rolling changes)",
        src=str(LAB_WAIT),
        dest="/usr/local/bin/lab-wait",
        mode="755",
    )
    if data.consul_acl:
        files.directory(
            name="Make the root-only secrets directory",
            path=data.consul_secrets_dir,
            user="root",
            group="root",
            mode="700",
        )
        # Empty until labctl made the host's token (the first stage of an `up`).
        header_line = f"X-Consul-Token: {data.consul_token}\n" if data.consul_token else ""
        files.put(
            name="Write the host's Consul token header",
            src=StringIO(header_line),
            dest=data.consul_token_header,
            user="root",
            group="root",
            mode="600",
        )
    config_files = {"agent.json": {"content": config}}
    if data.consul_encrypt:
        # Read by the agent, which runs as the image's `consul` user: owned by that user.
        config_files[GOSSIP_FILE] = {
            "content": json.dumps({"encrypt": data.consul_encrypt}) + "\n",
            "mode": "600",
            "owner_from": (image, "consul"),
        }
    validated_config(
        name="Write and validate the agent configuration",
        config_dir=config_dir,
        files=config_files,
        validate=(
            f"docker run --rm --network=none -v {{}}:/consul/config:ro --entrypoint consul "
            f"{shlex.quote(image)} validate /consul/config"
        ),
    )
    # A replaced agent is waited for before the next host's: its API, for a server
    # the leader and every server in the raft peer set (quorum is never lost), and
    # the instances that passed before passing again (never all out of the LB). Those
    # are read only when the agent is to be replaced: an agent that refuses the host's
    # token (one Consul lost) stops a replacement, not the `up` that makes it again.
    servers = data.consul_bootstrap_expect if data.consul_server else 0
    header = token_header(data)
    spec = {
        "image_id": image_id,
        "args": [
            "--net=host",
            "--restart=unless-stopped",
            "--mount=type=volume,"
            f"src={data.consul_data_volume},dst=/consul/data,"
            f"volume-label={LAB_LABEL}={data.lab_name}",
            f"-v={config_dir}:/consul/config",
        ],
        "command": ["agent"],
        "labels": {LAB_LABEL: data.lab_name, ROLE_LABEL: "consul"},
        "depends_on": spec_hash({name: f["content"] for name, f in config_files.items()}),
    }
    replacing = replaces_running(data.consul_container_name, container_digest(**spec))
    passing = agent_fact(ConsulPassingServices, data.consul_http_addr, header) if replacing else []
    agent = container(
        name=f"Run the Consul {data.consul_role} agent",
        container_name=data.consul_container_name,
        image=image,
        replaced_ready=lab_wait(
            "agent", data.consul_http_addr, str(servers), *passing, consul_header=header
        ),
        _serial=True,
        **spec,
    )
    server.shell(
        name="Wait for the agent's HTTP API",
        commands=[
            f"timeout {int(data.consul_ready_timeout)} sh -c "
            f"'until curl -fsS -o /dev/null {data.consul_http_addr}/v1/status/leader; "
            "do sleep 1; done'"
        ],
        _if=agent.did_change,
    )
