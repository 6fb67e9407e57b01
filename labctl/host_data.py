"""pyinfra inventory derived from the lab spec (and, for Vagrant providers, from
`vagrant ssh-config` read through python-vagrant, cached: labctl.connections).

Roles are host data flags and groups; no code branches on host names.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from labctl.images import LabImage, lab_images
from labctl.remote import SshData
from labctl.security import LabSecrets
from labctl.spec import Host, LabSpec

InventoryHost = tuple[str, dict[str, Any]]


def host_data(
    spec: LabSpec,
    host: Host,
    state: dict | None = None,
    images: list[LabImage] | None = None,
    lab_secrets: LabSecrets | None = None,
) -> dict[str, Any]:
    """The data every role reads for one host: flags, cluster-wide facts and, once
    labctl has resolved them (`state`), the images it runs and its secrets."""
    state = state or {}
    images = lab_images(spec) if images is None else images
    lab_secrets = lab_secrets or LabSecrets.of(spec)
    servers = spec.consul_servers
    bootstrap = next((h for h in servers if h.bootstrap), servers[0])
    lb_host = next((h for h in spec.hosts if h.lb), None)
    return {
        "lab_name": spec.name,
        "lab_host": host.name,
        "lab_address": str(host.address),
        "lab_subnet": str(spec.network.subnet),
        "lab_peers": [str(h.address) for h in spec.hosts if h is not host],
        # Where the roles' rolling waits read the LB's running upstreams (None: no LB).
        "lab_lb_address": str(lb_host.address) if lb_host else None,
        # Which roles deploy.py runs: all, or `agents` (up to Consul; labctl passes
        # --data lab_stage=agents before it makes the ACL tokens).
        "lab_stage": "all",
        "consul_role": host.consul,
        "consul_server": host.consul == "server",
        "consul_bootstrap": host.bootstrap,
        "consul_version": spec.versions.consul,
        # Every server is started with the same bootstrap_expect (Consul's advice);
        # the join list puts the bootstrap server first, like the seed's -join.
        "consul_bootstrap_expect": len(servers),
        "consul_join": [str(bootstrap.address)]
        + [str(h.address) for h in servers if h is not bootstrap],
        # Secure by default (labctl.security); None where the spec turns it off or
        # labctl has not made the secret yet (the first stage of an `up` with ACLs).
        "consul_acl": spec.security.acl,
        "consul_encrypt": lab_secrets.gossip_key,
        "consul_token": lab_secrets.secret(f"registration-{host.name}"),
        "lb_consul_token": lab_secrets.secret("consul-template") if host.lb else None,
        "lb": host.lb,
        # Who may read the LB's /_lab/ state besides loopback: the lab's network and
        # every host (on the ssh road hosts may sit outside network.subnet).
        "lb_allow_cidrs": [str(spec.network.subnet)] + [f"{h.address}/32" for h in spec.hosts],
        "demo_instances": [asdict(i) for i in spec.demo_instances() if i.host == host.name],
        # Each service's registration settings (the spec's `services`), by name.
        "demo_services": {
            s.name: {"tags": list(s.tags), "check": s.check.model_dump()} for s in spec.services
        },
        "consul_template_version": spec.versions.consul_template,
        "nginx_version": spec.versions.nginx,
        "lab_host_images": [i.key for i in images if host.name in i.hosts],
        "lab_images": state.get("images", {}),
        "lab_image_delivery": state.get("delivery", "control"),
        "lab_image_archive": state.get("image_archives", {}).get(host.name),
        "lab_image_plan": state.get("image_plans", {}).get(host.name),
        # The apt proxy the hosts fetch the engine's packages through (labctl.aptcache).
        "docker_apt_proxy": state.get("apt_proxy"),
        # Hosts that pull do so through their engine's mirrors (daemon.json).
        "docker_registry_mirrors": [
            m if "://" in m else f"https://{m}" for m in spec.images.registry_mirrors
        ],
    }


def groups(
    spec: LabSpec, connection: dict[str, SshData], state: dict | None = None
) -> dict[str, list[InventoryHost]]:
    """pyinfra groups: every host once in `lab`, then one group per role."""
    # Image tags hash the recipes (and the consul-template binary), secrets are files:
    # once, not per host.
    images = lab_images(spec)
    lab_secrets = LabSecrets.of(spec)
    instance_hosts = set(spec.instance_hosts())
    entries = {
        host.name: (
            host.name,
            {**connection.get(host.name, {}), **host_data(spec, host, state, images, lab_secrets)},
        )
        for host in spec.hosts
    }

    def members(predicate) -> list[InventoryHost]:
        return [entries[h.name] for h in spec.hosts if predicate(h)]

    return {
        "lab": members(lambda h: True),
        "consul_servers": members(lambda h: h.consul == "server"),
        "consul_clients": members(lambda h: h.consul == "client"),
        "lb": members(lambda h: h.lb),
        "demo": members(lambda h: h.name in instance_hosts),
    }
