"""The host data labctl hands the roles, built from the lab spec and the lab's state: for
each host its LabHost (roles/contract.py) and the role tunables the spec sets, and the
pyinfra groups, by role. Roles are data and groups; no code branches on host names.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from labctl.images.spec_images import LabImage, lab_images
from labctl.remote import SshData, openssh_command
from labctl.security import LabSecrets, consul_template_token
from labctl.spec import LabSpec
from labctl.spec_types import Host
from roles.contract import (
    LAB_HOST,
    ConsulAgent,
    HealthCheck,
    HostImages,
    Image,
    ImagePlan,
    LabHost,
    LoadBalancer,
    ObtainedImage,
    Registration,
    Registrator,
    Vrrp,
    VrrpPeer,
)

InventoryHost = tuple[str, dict[str, Any]]
# Seconds the OpenSSH command streaming a host's image archive waits for its connection.
ARCHIVE_CONNECT_TIMEOUT = 60


def consul_agent(spec: LabSpec, host: Host, secrets: LabSecrets) -> ConsulAgent | None:
    """The host's agent: every server expects all servers (Consul's advice), and the join
    list puts the bootstrap server first, like the seed's -join."""
    if host.consul == "none":
        return None
    servers = spec.consul_servers
    bootstrap = next((h for h in servers if h.bootstrap), servers[0])
    join = [bootstrap] + [h for h in servers if h is not bootstrap]
    return ConsulAgent(
        server=host.consul == "server",
        servers=len(servers),
        join=tuple(str(h.address) for h in join),
        acl=spec.security.acl,
        gossip_key=secrets.gossip_key,
        registration_token=secrets.secret(f"registration-{host.name}"),
    )


def load_balancer(spec: LabSpec, host: Host, secrets: LabSecrets) -> LoadBalancer | None:
    """An LB host's settings: /_lab/ answers the lab's network and every host (on the ssh
    road hosts may sit outside network.subnet)."""
    if not host.lb:
        return None
    cidrs = [str(spec.network.subnet)] + [f"{h.address}/32" for h in spec.hosts]
    token = secrets.secret(consul_template_token(spec, host.name))
    return LoadBalancer(allow_cidrs=tuple(cidrs), consul_token=token, vrrp=vrrp(spec))


def vrrp(spec: LabSpec) -> Vrrp | None:
    """The address the LBs share, when there are several (network.lb_address)."""
    if not spec.lb_pair:
        return None
    return Vrrp(
        address=str(spec.network.lb_address),
        prefixlen=spec.network.subnet.prefixlen,
        lbs=tuple(VrrpPeer(h.name, str(h.address)) for h in spec.lb_hosts),
        unicast=spec.network.lb_unicast,
    )


def registrations(spec: LabSpec) -> dict[str, Registration]:
    """Each service's registration settings (the spec's `services`), by name."""
    return {
        s.name: Registration(
            tags=tuple(s.tags), check=HealthCheck(**s.check.model_dump()), mode=s.registration
        )
        for s in spec.services
    }


def registrator(spec: LabSpec, host: Host, secrets: LabSecrets) -> Registrator | None:
    """Registrator on this host, where the spec runs it (LabSpec.registrator_hosts)."""
    if host.name not in {h.name for h in spec.registrator_hosts}:
        return None
    return Registrator(token=secrets.secret(f"registrator-{host.name}"))


def _image_plan(plan: dict | None) -> ImagePlan | None:
    if plan is None:
        return None
    obtained = {ref: ObtainedImage(**image) for ref, image in plan["images"].items()}
    return ImagePlan(images=obtained, base_image=plan["base_image"], bundle=plan["bundle"])


def host_images(
    host: Host, images: list[LabImage], state: dict, connection: SshData | None
) -> HostImages:
    """The images the host runs, as labctl resolved them (`state`), and how it gets them."""
    archive = state.get("image_archives", {}).get(host.name)
    load_command = None
    if archive and connection and shutil.which("ssh"):
        # OpenSSH streams it several times faster than pyinfra's SFTP, one process per host.
        load_command = tuple(openssh_command(connection, "docker load", ARCHIVE_CONNECT_TIMEOUT))
    return HostImages(
        images={key: Image(**image) for key, image in state.get("images", {}).items()},
        needed=tuple(i.key for i in images if host.name in i.hosts),
        delivery=state.get("delivery", "control"),
        archive=archive,
        archive_load_command=load_command,
        plan=_image_plan(state.get("image_plans", {}).get(host.name)),
    )


def lab_host(
    spec: LabSpec,
    host: Host,
    state: dict | None = None,
    connection: SshData | None = None,
    images: list[LabImage] | None = None,
    secrets: LabSecrets | None = None,
) -> LabHost:
    """What the roles read for one host: its part in the lab and, once labctl has resolved
    them (`state`), the images it runs and its secrets."""
    state = state or {}
    secrets = secrets or LabSecrets.of(spec)
    return LabHost(
        lab_name=spec.name,
        name=host.name,
        address=str(host.address),
        consul=consul_agent(spec, host, secrets),
        lb=load_balancer(spec, host, secrets),
        lb_addresses=tuple(str(h.address) for h in spec.lb_hosts),
        instances=tuple(i for i in spec.instances() if i.host == host.name),
        services=registrations(spec),
        images=host_images(host, lab_images(spec) if images is None else images, state, connection),
        registrator=registrator(spec, host, secrets),
    )


def role_settings(spec: LabSpec, state: dict) -> dict[str, Any]:
    """The role tunables the spec and the lab's state set (role docker's)."""
    return {
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
    state = state or {}
    # Image tags hash the recipes (and the consul-template binary), secrets are files:
    # once, not per host.
    images = lab_images(spec)
    secrets = LabSecrets.of(spec)
    settings = role_settings(spec, state)
    instance_hosts = {i.host for i in spec.instances()}
    entries = {}
    for host in spec.hosts:
        ssh = connection.get(host.name, {})
        data = lab_host(spec, host, state, ssh, images, secrets)
        entries[host.name] = (host.name, {**ssh, **settings, LAB_HOST: data})

    def members(predicate) -> list[InventoryHost]:
        return [entries[h.name] for h in spec.hosts if predicate(h)]

    return {
        "lab": members(lambda h: True),
        "consul_servers": members(lambda h: h.consul == "server"),
        "consul_clients": members(lambda h: h.consul == "client"),
        "lb": members(lambda h: h.lb),
        "demo": members(lambda h: h.name in instance_hosts),
    }


def inventory_groups(spec_path: Path | None = None) -> dict[str, list[InventoryHost]]:
    """What inventory.py gives pyinfra: the spec (`spec_path`, else $LAB_SPEC, else
    lab.yaml) with the counts `labctl scale` recorded, its hosts' connection data and
    groups."""
    from labctl.connections import connection_data
    from labctl.paths import read_state, with_state
    from labctl.spec import load_spec

    spec = with_state(load_spec(spec_path)[0])
    return groups(spec, connection_data(spec), read_state(spec))
