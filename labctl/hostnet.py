"""Networks already on this machine, which a new lab's subnet must not overlap.

Vagrant's docker provider makes a bridge network on the spec's subnet, and VirtualBox a
host-only one. On a subnet this machine already routes elsewhere (a Docker network, a
VPN, the LAN), Docker refuses the network ("Pool overlaps with other one on this address
space") after the hosts' images are built, or the lab's traffic goes to the wrong place.
`up` checks before anything is created: this machine's routes first (read from
/proc/net/route, no process and no engine), then Docker's own networks, whose names and
labs a route cannot tell.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

from docker import DockerClient

from labctl.paths import docker_network_name
from labctl.spec import LabSpec
from roles.contract import LAB_LABEL

ROUTES = Path("/proc/net/route")
# Interfaces that a lab's own network may already have, on its own subnet: the docker
# provider's bridge (`vagrant up` again on a lab that is up) and VirtualBox's host-only
# adapter (which Vagrant reuses for the same subnet).
OWN_INTERFACE_PREFIXES = {"docker": ("br-",), "virtualbox": ("vboxnet",)}


def routes() -> list[tuple[str, ipaddress.IPv4Network]]:
    """(interface, destination network) of this machine's IPv4 routes, the default route
    left out; none where the kernel has no /proc/net/route (macOS)."""
    try:
        lines = ROUTES.read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, destination, mask = fields[0], fields[1], fields[7]
        # Little-endian hex, as the kernel prints them.
        address = socket.inet_ntoa(struct.pack("<I", int(destination, 16)))
        netmask = socket.inet_ntoa(struct.pack("<I", int(mask, 16)))
        network = ipaddress.IPv4Network(f"{address}/{netmask}", strict=False)
        if network.prefixlen:
            found.append((iface, network))
    return found


def _interface(iface: str) -> str:
    if iface == "docker0":
        return "Docker's default bridge, docker0"
    if iface.startswith("br-"):
        return f"a Docker network's bridge, {iface} (`docker network ls -f id={iface[3:]}`)"
    return f"this machine's interface {iface}"


def route_clash(spec: LabSpec, provider: str) -> str | None:
    """The first of this machine's routes the spec's subnet overlaps, in one sentence."""
    subnet = spec.network.subnet
    own = OWN_INTERFACE_PREFIXES.get(provider, ())
    for iface, network in routes():
        if not network.overlaps(subnet) or (network == subnet and iface.startswith(own)):
            continue
        return (
            f"network.subnet {subnet} overlaps {network}, routed to {_interface(iface)}; "
            "pick a subnet nothing on this machine uses (see `ip route`)."
        )
    return None


def docker_network_clash(client: DockerClient, spec: LabSpec) -> str | None:
    """A Docker network on the spec's subnet that is not this lab's, in one sentence: any
    other network that overlaps it, or the lab's own network name in another lab's use."""
    subnet = spec.network.subnet
    labs_on: dict[str, set[str]] = {}
    for container in client.containers.list(all=True, filters={"label": LAB_LABEL}):
        for name in container.attrs.get("NetworkSettings", {}).get("Networks") or {}:
            labs_on.setdefault(name, set()).add(container.labels.get(LAB_LABEL, "?"))
    for network in client.networks.list():
        configs = (network.attrs.get("IPAM") or {}).get("Config") or []
        for config in configs:
            try:
                other = ipaddress.ip_network(config.get("Subnet", ""), strict=False)
            except ValueError:
                continue
            if other.version != 4 or not other.overlaps(subnet):
                continue
            others = labs_on.get(network.name, set()) - {spec.name}
            if network.name == docker_network_name(spec) and not others:
                continue
            user = f", used by lab {', '.join(sorted(others))}" if others else ""
            return (
                f"network.subnet {subnet} overlaps Docker network {network.name} "
                f"({other}{user}); pick another subnet, or remove that network first."
            )
    return None
