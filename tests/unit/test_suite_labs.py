"""What the test suite owns (tests/support/suite_labs.py): names and subnets that are never
a person's first labs', the seed's lab moved there unchanged, and the clash check's
sentence for everything on a suite lab's way that the suite did not make. The same check
against a real engine, interfaces and routes: tests/e2e/test_00_ownership.py."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest
import yaml

from labctl.paths import lab_dir, vagrant_dotfile_path
from labctl.spec import DEFAULT_SPEC, VIRTUALBOX_HOSTONLY_RANGE, load_spec, parse_spec
from tests.support import suite_labs
from tests.support.suite_labs import (
    SUITE_LABEL,
    SuiteLab,
    block_of,
    both_halves,
    check_settings,
    clash_sentence,
    clashes,
    mark,
    owner,
    repository_labs,
    seed_spec_data,
    without_place,
)

DEFAULTS = ("e2e", "192.168.240")


def test_the_suites_labs_by_default_are_e2e_on_192_168_240_to_247():
    shared, probes = both_halves(*DEFAULTS)
    assert [(lab.name, str(lab.subnet)) for lab in (*shared, *probes)] == [
        ("e2e", "192.168.240.0/24"),
        ("e2e-ssh", "192.168.241.0/24"),
        ("e2e-offline", "192.168.242.0/24"),
        ("e2e-noimage", "192.168.243.0/24"),
        ("e2e-own", "192.168.244.0/24"),
        ("e2e-own-ssh", "192.168.245.0/24"),
        ("e2e-own-offline", "192.168.246.0/24"),
        ("e2e-own-noimage", "192.168.247.0/24"),
    ]
    assert {lab.subnet for lab in (*shared, *probes)} == set(block_of(DEFAULTS[1]))


def test_they_are_never_the_default_labs_nor_an_examples_and_outside_virtualboxs_range():
    check_settings(*DEFAULTS)  # raises when they meet a spec of this repository
    names = {name for labs in both_halves(*DEFAULTS) for name in labs.names()}
    subnets = block_of(DEFAULTS[1])
    specs = repository_labs()
    assert {"lab.yaml", "examples/ha.yaml", "examples/ssh.yaml"} <= set(specs)
    assert specs["lab.yaml"].name == "dynlb"
    for spec in specs.values():
        assert spec.name not in names
        assert not any(spec.network.subnet.overlaps(s) for s in subnets)
    # A lab made with VirtualBox's default settings is never on them.
    assert not any(s.overlaps(VIRTUALBOX_HOSTONLY_RANGE) for s in subnets)


@pytest.mark.parametrize(
    ("name", "prefix", "sentence"),
    [
        ("dynlb", "192.168.240", "LAB_E2E_NAME='dynlb': the suite's lab dynlb would have the "
         "name of lab.yaml's lab, which may be a person's; pick another."),
        ("dynlb-ha", "192.168.240", "LAB_E2E_NAME='dynlb-ha': the suite's lab dynlb-ha would "
         "have the name of examples/ha.yaml's lab, which may be a person's; pick another."),
        ("e2e", "192.168.50", "LAB_E2E_SUBNET='192.168.50': the suite's subnets, "
         "192.168.50.0/24 and the 7 after it, would overlap 192.168.56.0/24 of lab.yaml, "
         "where a person's lab may be; pick others."),
        ("e2e", "10.20.0", "LAB_E2E_SUBNET='10.20.0': the suite's subnets, 10.20.0.0/24 and "
         "the 7 after it, would overlap 10.20.0.0/24 of examples/ssh.yaml, where a person's "
         "lab may be; pick others."),
        ("e2e", "192.168.250", "LAB_E2E_SUBNET='192.168.250': the suite takes 8 /24 subnets "
         "from there, which runs past 192.168.255.0; start lower."),
        ("e2e", "192.168", "LAB_E2E_SUBNET='192.168' is not three octets; write the first "
         "three octets of the suite's first /24, e.g. 192.168.240."),
        ("a-name-that-is-too-long", "192.168.240", "LAB_E2E_NAME='a-name-that-is-too-long' "
         "must be 2-20 lowercase letters, digits or '-', starting with a letter: the suite "
         "adds suffixes such as -own-noimage to it, and a lab name has at most 32."),
        ("a", "192.168.240", "LAB_E2E_NAME='a' must be 2-20 lowercase letters, digits or "
         "'-', starting with a letter: the suite adds suffixes such as -own-noimage to it, "
         "and a lab name has at most 32."),
    ],
)  # fmt: skip
def test_settings_that_would_meet_a_persons_lab_are_refused_in_one_sentence(name, prefix, sentence):
    with pytest.raises(pytest.UsageError) as refused:
        check_settings(name, prefix)
    assert str(refused.value) == sentence


def test_the_offline_road_runs_the_seeds_lab_moved_and_otherwise_as_it_is():
    lab = SuiteLab("e2e-offline", "192.168.242")
    moved, _ = parse_spec(seed_spec_data(lab))
    seed, _ = load_spec(DEFAULT_SPEC)
    assert moved.name == "e2e-offline" and str(moved.network.subnet) == "192.168.242.0/24"
    assert [str(h.address) for h in moved.hosts] == ["192.168.242.2", "192.168.242.3",
                                                     "192.168.242.4"]  # fmt: skip
    assert without_place(moved) == without_place(seed)
    # What without_place leaves out is the place only: a changed role would show.
    changed = seed_spec_data(lab)
    changed["hosts"][2]["lb"] = False
    changed["hosts"][0]["lb"] = True
    assert without_place(parse_spec(changed)[0]) != without_place(seed)
    # Only name, network and addresses differ from lab.yaml.
    raw = yaml.safe_load(DEFAULT_SPEC.read_text())
    assert {k: v for k, v in seed_spec_data(lab).items() if k not in ("name", "network", "hosts")} \
        == {k: v for k, v in raw.items() if k not in ("name", "network", "hosts")}  # fmt: skip


# --- the clash check, against a fake engine, interfaces and routes ----------------------


@dataclass
class Thing:
    """A Docker container, volume or network as the docker SDK gives it."""

    name: str
    id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    network: str | None = None  # a container's


class Engine:
    def __init__(self, containers=(), volumes=(), networks=()):
        self.containers = Listing(list(containers))
        self.volumes = Listing(list(volumes))
        self.networks = Listing(list(networks))


@dataclass
class Listing:
    things: list

    def list(self, all: bool = False, filters: dict | None = None) -> list:
        found = self.things
        for key, value in (filters or {}).items():
            if key == "label":
                k, v = value.split("=", 1)
                found = [t for t in found if (t.labels or t.attrs.get("Labels") or {}).get(k) == v]
            elif key == "network":
                found = [t for t in found if t.network == value]
        return found


def network(name: str, subnet: str, nid: str = "0123456789abcdef", labels=None) -> Thing:
    attrs = {"IPAM": {"Config": [{"Subnet": subnet}]}, "Labels": labels or {}, "Options": {}}
    return Thing(name, nid, attrs=attrs)


LAB = SuiteLab("e2e", "192.168.240")
SPEC = parse_spec(
    {"name": "e2e", "provider": "docker", "network": {"subnet": "192.168.240.0/24"},
     "hosts": [{"name": "node1", "address": "192.168.240.2", "consul": "server"}]}
)[0]  # fmt: skip


@pytest.fixture
def host(monkeypatch):
    """This machine's interfaces and routes, as `ip` would give them (loopback, a LAN)."""
    addresses = [("lo", ipaddress.IPv4Interface("127.0.0.1/8")),
                 ("eth0", ipaddress.IPv4Interface("10.0.0.5/24"))]  # fmt: skip
    routes = [(ipaddress.IPv4Network("10.0.0.0/24"), "eth0")]
    monkeypatch.setattr(suite_labs, "host_addresses", lambda: addresses)
    monkeypatch.setattr(suite_labs, "host_routes", lambda: routes)
    return addresses, routes


def test_nothing_on_the_way_is_no_clash(host):
    engine = Engine(networks=[network("bridge", "172.17.0.0/16")])
    assert clashes(SPEC, engine) == []


def test_the_suites_own_leftovers_are_no_clash(host):
    """A marked lab's containers as Vagrant recorded them, its volumes, its network; what
    the suite labelled; the Docker network's bridge and route."""
    mark(SPEC)
    machine = vagrant_dotfile_path(SPEC) / "machines" / "e2e-node1" / "docker"
    machine.mkdir(parents=True)
    (machine / "id").write_text("c1\n")
    lab = {"io.labctl.lab": "e2e"}
    net = network("vagrant_network_192.168.240.0/24", "192.168.240.0/24")
    engine = Engine(
        containers=[Thing("e2e-node1", "c1", lab, network=net.id),
                    Thing("e2e-rogue-agent", "c2", lab | {SUITE_LABEL: owner("e2e")},
                          network=net.id)],
        volumes=[Thing("e2e-node1-var-lib-docker", attrs={"Labels": lab})],
        networks=[net],
    )  # fmt: skip
    addresses, routes = host
    addresses.append(("br-0123456789ab", ipaddress.IPv4Interface("192.168.240.1/24")))
    routes.append((ipaddress.IPv4Network("192.168.240.0/24"), "br-0123456789ab"))
    assert clashes(SPEC, engine) == []


def test_what_the_suite_did_not_make_is_named_in_one_sentence(host):
    lab_dir(SPEC).mkdir(parents=True)  # no mark: someone's
    lab = {"io.labctl.lab": "e2e"}
    theirs = network("vagrant_network_192.168.240.0/24", "192.168.240.0/24")
    engine = Engine(
        containers=[Thing("e2e-node1", "c9", lab, network=theirs.id),
                    Thing("web", "c8", network="f00d")],
        volumes=[Thing("e2e-node1-var-lib-docker", attrs={"Labels": lab})],
        networks=[theirs, network("compose_default", "192.168.240.128/25", "f00d")],
    )  # fmt: skip
    addresses, routes = host
    addresses.append(("vboxnet0", ipaddress.IPv4Interface("192.168.240.1/24")))
    routes.append((ipaddress.IPv4Network("192.168.240.0/24"), "vboxnet0"))
    routes.append((ipaddress.IPv4Network("192.168.0.0/16"), "tun0"))
    found = clashes(SPEC, engine)
    assert found == [
        f"{lab_dir(SPEC)} (a lab's local state without the suite's mark)",
        "Docker containers e2e-node1 labelled io.labctl.lab=e2e",
        "Docker volumes e2e-node1-var-lib-docker labelled io.labctl.lab=e2e",
        "Docker network vagrant_network_192.168.240.0/24 (192.168.240.0/24, with containers "
        "e2e-node1)",
        "Docker network compose_default (192.168.240.128/25, with containers web)",
        "interface vboxnet0 (192.168.240.1/24)",
        "a route to 192.168.0.0/16 (tun0)",
    ]
    sentence = clash_sentence(SPEC, found)
    assert sentence.count(". ") == 0 and sentence.endswith("(docs/testing.md).")
    assert sentence.startswith(
        "the test suite's lab e2e on 192.168.240.0/24 would meet what the suite did not make: "
    )


def test_a_container_of_another_checkouts_lab_of_that_name_is_not_the_suites(host):
    """Vagrant's records in this checkout's marked lab name its containers; another
    checkout's lab of the same name has others, and the suite's label names the checkout."""
    mark(SPEC)
    lab = {"io.labctl.lab": "e2e"}
    engine = Engine(containers=[
        Thing("e2e-node1", "c7", lab),
        Thing("e2e-rogue-agent", "c6", lab | {SUITE_LABEL: "e2e.0badc0de"}),
    ])  # fmt: skip
    assert clashes(SPEC, engine) == [
        "Docker containers e2e-node1, e2e-rogue-agent labelled io.labctl.lab=e2e"
    ]


def test_the_ssh_roads_machines_on_their_network_are_the_suites(host):
    """They carry the suite's label only (never the lab's, which `down` sweeps)."""
    road = network("e2e-ssh-net", "192.168.241.0/24", labels={SUITE_LABEL: owner("e2e-ssh")})
    machines = [Thing(f"e2e-ssh-m{n}", f"m{n}", {SUITE_LABEL: owner("e2e-ssh")}, network=road.id)
                for n in (1, 2, 3)]  # fmt: skip
    first = suite_labs.ssh_place("e2e-ssh", SuiteLab("e2e-ssh", "192.168.241"))
    assert clashes(first, Engine(machines, networks=[road])) == []
    # A machine of someone else's on that network is not.
    stranger = Thing("db", "s1", network=road.id)
    assert clashes(first, Engine([*machines, stranger], networks=[road])) == [
        "Docker network e2e-ssh-net (192.168.241.0/24, with containers db, e2e-ssh-m1, "
        "e2e-ssh-m2, e2e-ssh-m3)"
    ]


def test_the_ssh_roads_second_lab_meets_the_first_ones_machines_as_kin(host):
    road = network("e2e-ssh-net", "192.168.241.0/24", labels={SUITE_LABEL: owner("e2e-ssh")})
    machine = Thing("e2e-ssh-m1", "m1", {SUITE_LABEL: owner("e2e-ssh")}, network=road.id)
    second = suite_labs.ssh_place("e2e-ssh-b", SuiteLab("e2e-ssh", "192.168.241"))
    assert clashes(second, Engine([machine], networks=[road]), kin=("e2e-ssh",)) == []
    assert clashes(second, Engine([machine], networks=[road])) == [
        "Docker network e2e-ssh-net (192.168.241.0/24, with containers e2e-ssh-m1)"
    ]
