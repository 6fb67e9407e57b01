"""A new lab's subnet against the networks already on this machine (labctl.hostnet): this
machine's routes (a /proc/net/route of the test's own) and Docker's networks (a fake
engine), each clash named in one sentence before anything is created."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest

from labctl import hostnet
from labctl.spec import parse_spec
from tests.conftest import seed_hosts

# eth0 on 10.0.2.0/24 (and the default route through it), Docker's docker0, a Docker
# network's bridge on 192.168.63.0/24 and VirtualBox's host-only adapter.
ROUTES = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
br-512935345f6a\t003FA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
vboxnet0\t0038A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


@pytest.fixture(autouse=True)
def routes(tmp_path, monkeypatch):
    table = tmp_path / "route"
    table.write_text(ROUTES)
    monkeypatch.setattr(hostnet, "ROUTES", table)


def spec_on(subnet: str, provider: str = "docker"):
    first = subnet.rsplit(".", 1)[0]
    hosts = [h | {"address": f"{first}.{i + 2}"} for i, h in enumerate(seed_hosts())]
    data = {"name": "netlab", "provider": provider, "hosts": hosts,
            "network": {"subnet": subnet, "allow_any_subnet": True}}  # fmt: skip
    return parse_spec(data)[0]


def test_routes_are_read_as_the_kernel_prints_them():
    assert hostnet.routes() == [
        ("eth0", ipaddress.IPv4Network("10.0.2.0/24")),
        ("docker0", ipaddress.IPv4Network("172.17.0.0/16")),
        ("br-512935345f6a", ipaddress.IPv4Network("192.168.63.0/24")),
        ("vboxnet0", ipaddress.IPv4Network("192.168.56.0/24")),
    ]


@pytest.mark.parametrize(("subnet", "says"), [
    ("10.0.2.0/24", "overlaps 10.0.2.0/24, routed to this machine's interface eth0"),
    ("172.17.5.0/24", "overlaps 172.17.0.0/16, routed to Docker's default bridge, docker0"),
    ("192.168.63.0/25", "overlaps 192.168.63.0/24, routed to a Docker network's bridge, "
                        "br-512935345f6a (`docker network ls -f id=512935345f6a`)"),
    ("192.168.56.0/24", "overlaps 192.168.56.0/24, routed to this machine's interface "
                        "vboxnet0"),
])  # fmt: skip
def test_a_subnet_this_machine_routes_elsewhere_is_named(subnet, says):
    clash = hostnet.route_clash(spec_on(subnet), "docker")
    assert clash == (f"network.subnet {subnet} {says}; pick a subnet nothing on this machine "
                     "uses (see `ip route`).")  # fmt: skip


def test_the_labs_own_network_is_no_clash():
    """`up` again: the docker provider's bridge on exactly the subnet (the engine then tells
    whose it is), VirtualBox's host-only adapter that Vagrant reuses."""
    assert hostnet.route_clash(spec_on("192.168.63.0/24"), "virtualbox") is not None
    assert hostnet.route_clash(spec_on("192.168.56.0/24"), "virtualbox") is None
    assert hostnet.route_clash(spec_on("192.168.71.0/24"), "docker") is None


def test_no_route_table_no_clash(tmp_path, monkeypatch):
    monkeypatch.setattr(hostnet, "ROUTES", tmp_path / "none")
    assert hostnet.route_clash(spec_on("10.0.2.0/24"), "docker") is None


def engine(networks: dict[str, str], containers: dict[str, tuple[str, str]]):
    """A Docker client with these networks (name -> subnet) and lab containers
    (name -> (lab, network))."""
    return SimpleNamespace(
        networks=SimpleNamespace(list=lambda: [
            SimpleNamespace(name=name, attrs={"IPAM": {"Config": [{"Subnet": subnet}]}})
            for name, subnet in networks.items()
        ]),
        containers=SimpleNamespace(list=lambda **_: [
            SimpleNamespace(labels={"io.labctl.lab": lab},
                            attrs={"NetworkSettings": {"Networks": {network: {}}}})
            for lab, network in containers.values()
        ]),
    )  # fmt: skip


def test_a_docker_network_on_the_subnet_is_named():
    client = engine({"bridge": "172.17.0.0/16", "other": "192.168.71.0/25"}, {})
    assert hostnet.docker_network_clash(client, spec_on("192.168.71.0/24")) == (
        "network.subnet 192.168.71.0/24 overlaps Docker network other (192.168.71.0/25); pick "
        "another subnet, or remove that network first."
    )


def test_the_labs_own_network_in_another_labs_use_is_named():
    own = "vagrant_network_192.168.71.0/24"
    client = engine({own: "192.168.71.0/24"}, {"a-server1": ("otherlab", own)})
    assert hostnet.docker_network_clash(client, spec_on("192.168.71.0/24")) == (
        f"network.subnet 192.168.71.0/24 overlaps Docker network {own} (192.168.71.0/24, used "
        "by lab otherlab); pick another subnet, or remove that network first."
    )


def test_the_labs_own_network_is_its_own():
    own = "vagrant_network_192.168.71.0/24"
    client = engine({own: "192.168.71.0/24"}, {"netlab-server1": ("netlab", own)})
    assert hostnet.docker_network_clash(client, spec_on("192.168.71.0/24")) is None
