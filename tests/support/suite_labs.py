"""What the test suite owns on this machine, and the check that it meets nothing else.

A person's lab is their data. The suite's labs have names and subnets of their own: eight
consecutive /24 subnets, by default 192.168.240.0/24 to 192.168.247.0/24 (LAB_E2E_SUBNET
names the first one's three octets), outside VirtualBox's host-only range 192.168.56.0/21
where a lab made with the default settings sits; and names that start with `e2e`
(LAB_E2E_NAME). Settings that would give the suite a name or subnet of a spec of this
repository (the default lab `dynlb` on 192.168.56.0/24, the examples) are refused at
collection (check_settings).

The suite marks what it makes:
- each of its labs' local state, `.lab/<name>/`, gets MARK before the lab is made; `down`
  removes it with the rest;
- the host containers Vagrant made for a marked lab are the ones Vagrant recorded in it
  (`.lab/<name>/vagrant/machines/<machine>/docker/id`);
- whatever the suite makes itself on the engine (the ssh road's machines and their network,
  a rogue agent) carries SUITE_LABEL=<lab>.<checkout id>.

Before a lab of the suite is made, and before the leftovers of an interrupted earlier
run are removed, `refuse_clashes` looks for anything on the lab's way that the suite did
not make: a `.lab/<name>` without the mark, Docker containers or volumes labelled with
the lab's name, a Docker network on its subnet, an interface or route on its subnet. It
names them all in one sentence and stops that lab's tests; nothing is touched.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
import yaml

from labctl.paths import docker_network_name, lab_dir, vagrant_dotfile_path
from labctl.spec import DEFAULT_SPEC, NAME_RE, PROJECT_ROOT, LabSpec, load_spec
from roles.contract import LAB_LABEL
from testbed.ownership import SUITE_LABEL, owner

# In a lab's local state: the suite made this lab (and may remove it).
MARK = "made-by-the-test-suite"
# How many consecutive /24 subnets the suite takes.
BLOCK = 8


@dataclass(frozen=True)
class SuiteLab:
    """A lab the suite makes: its name and its subnet's first three octets."""

    name: str
    prefix: str

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.prefix}.0/24")

    def address(self, last: int) -> str:
        return f"{self.prefix}.{last}"


@dataclass(frozen=True)
class SuiteLabs:
    """Every lab of one suite run: the shared lab and the roads with labs of their own."""

    shared: SuiteLab
    ssh: SuiteLab
    offline: SuiteLab
    noimage: SuiteLab

    def __iter__(self):
        return iter((self.shared, self.ssh, self.offline, self.noimage))

    def names(self) -> set[str]:
        """Every lab name these take, the ssh road's second lab (`<ssh>-b`) included."""
        return {lab.name for lab in self} | {f"{self.ssh.name}-b"}


def both_halves(base_name: str, first_prefix: str) -> tuple[SuiteLabs, SuiteLabs]:
    """The labs of the suite's tests, on the first half of its block, and the ownership
    test's (tests/e2e/test_00_ownership.py), which runs beside them, on the second."""
    return (
        suite_labs(base_name, first_prefix),
        suite_labs(f"{base_name}-own", first_prefix, offset=BLOCK // 2),
    )


def suite_labs(base_name: str, first_prefix: str, offset: int = 0) -> SuiteLabs:
    """The suite's labs from its base name and the first /24 of its block (`offset`:
    where in the block they start)."""
    a, b, c = first_prefix.split(".")

    def lab(suffix: str, n: int) -> SuiteLab:
        return SuiteLab(base_name + suffix, f"{a}.{b}.{int(c) + offset + n}")

    return SuiteLabs(lab("", 0), lab("-ssh", 1), lab("-offline", 2), lab("-noimage", 3))


def repository_labs() -> dict[str, LabSpec]:
    """Every lab spec of this repository, a person's first labs: lab.yaml (the default lab)
    and examples/*.yaml, by file."""
    files = [DEFAULT_SPEC, *sorted((PROJECT_ROOT / "examples").glob("*.yaml"))]
    return {str(f.relative_to(PROJECT_ROOT)): load_spec(f)[0] for f in files}


def block_of(first_prefix: str) -> list[ipaddress.IPv4Network]:
    """The suite's subnets: BLOCK /24s from the one whose first three octets are given."""
    a, b, c = first_prefix.split(".")
    return [ipaddress.IPv4Network(f"{a}.{b}.{int(c) + n}.0/24") for n in range(BLOCK)]


def check_settings(base_name: str, first_prefix: str) -> None:
    """LAB_E2E_NAME and LAB_E2E_SUBNET as the suite can use them: never a name or subnet of
    a spec of this repository (the default lab's above all)."""
    octets = first_prefix.split(".")
    if len(octets) != 3 or not all(o.isdigit() and int(o) <= 255 for o in octets):
        raise pytest.UsageError(
            f"LAB_E2E_SUBNET={first_prefix!r} is not three octets; write the first three "
            "octets of the suite's first /24, e.g. 192.168.240."
        )
    if int(octets[2]) + BLOCK - 1 > 255:
        raise pytest.UsageError(
            f"LAB_E2E_SUBNET={first_prefix!r}: the suite takes {BLOCK} /24 subnets from there, "
            f"which runs past {'.'.join(octets[:2])}.255.0; start lower."
        )
    if not (NAME_RE.match(base_name) and NAME_RE.match(f"{base_name}-own-noimage")):
        raise pytest.UsageError(
            f"LAB_E2E_NAME={base_name!r} must be 2-20 lowercase letters, digits or '-', "
            "starting with a letter: the suite adds suffixes such as -own-noimage to it, "
            "and a lab name has at most 32."
        )
    names = {name for labs in both_halves(base_name, first_prefix) for name in labs.names()}
    for file, spec in repository_labs().items():
        if any(spec.network.subnet.overlaps(subnet) for subnet in block_of(first_prefix)):
            raise pytest.UsageError(
                f"LAB_E2E_SUBNET={first_prefix!r}: the suite's subnets, {first_prefix}.0/24 and "
                f"the {BLOCK - 1} after it, would overlap {spec.network.subnet} of {file}, where "
                "a person's lab may be; pick others."
            )
        if spec.name in names:
            raise pytest.UsageError(
                f"LAB_E2E_NAME={base_name!r}: the suite's lab {spec.name} would have the name of "
                f"{file}'s lab, which may be a person's; pick another."
            )


BASE_NAME = os.environ.get("LAB_E2E_NAME", "e2e")
FIRST_PREFIX = os.environ.get("LAB_E2E_SUBNET", "192.168.240")
check_settings(BASE_NAME, FIRST_PREFIX)
LABS, PROBE_LABS = both_halves(BASE_NAME, FIRST_PREFIX)


def seed_spec_data(lab: SuiteLab) -> dict:
    """The default lab (lab.yaml, the seed's) as it is, moved to the suite's lab: its own
    name and subnet, each host at the same last octet. Nothing else changes; the subnet
    lies outside VirtualBox's range, so `allow_any_subnet` says so."""
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["name"] = lab.name
    data["network"] = data.get("network", {}) | {
        "subnet": str(lab.subnet),
        "allow_any_subnet": True,
    }
    for host in data["hosts"]:
        host["address"] = lab.address(int(host["address"].rsplit(".", 1)[1]))
    return data


def without_place(spec: LabSpec) -> dict:
    """The spec but for where its lab is: its name, its subnet (and whether that may lie
    outside VirtualBox's range) and its hosts' addresses."""
    data = spec.model_dump(mode="json", by_alias=True)
    del data["name"], data["network"]["subnet"], data["network"]["allow_any_subnet"]
    for host in data["hosts"]:
        del host["address"]
    return data


# --- the mark ---------------------------------------------------------------------------


def is_marked(spec: LabSpec) -> bool:
    return (lab_dir(spec) / MARK).is_file()


def mark(spec: LabSpec) -> None:
    """Mark the lab's local state as the suite's (made before `up`, gone with `down`)."""
    lab_dir(spec).mkdir(parents=True, exist_ok=True)
    (lab_dir(spec) / MARK).write_text(
        "This lab was made by the test suite (tests/support/suite_labs.py), which may remove it.\n"
    )


def vagrant_machine_ids(spec: LabSpec) -> set[str]:
    """The containers Vagrant made for this lab, as it recorded them in the lab's state."""
    machines = vagrant_dotfile_path(spec) / "machines"
    return {path.read_text().strip() for path in machines.glob("*/docker/id")}


# --- the check --------------------------------------------------------------------------


def host_addresses() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """Every IPv4 address of this machine, with its interface (`ip -j addr`)."""
    return [
        (link["ifname"], ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
        for link in _ip("addr")
        for a in link.get("addr_info", [])
        if a.get("family", "inet") == "inet"
    ]


def host_routes() -> list[tuple[ipaddress.IPv4Network, str]]:
    """This machine's IPv4 routes other than the default one, each with its device (or its
    type, for a route without one: blackhole, unreachable, ...)."""
    return [
        (ipaddress.IPv4Network(r["dst"], strict=False), r.get("dev") or r.get("type", "?"))
        for r in _ip("route")
        if r.get("dst") not in (None, "default")
    ]


def _ip(what: str) -> list[dict]:
    try:
        result = subprocess.run(
            ["ip", "-j", "-4", what, "show"], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        pytest.fail(
            "the suite checks this machine's interfaces and routes with `ip`, which is "
            "missing; install iproute2.",
            pytrace=False,
        )
    if result.returncode != 0:
        pytest.fail(f"`ip -j -4 {what} show` failed: {result.stderr.strip()}", pytrace=False)
    return json.loads(result.stdout or "[]")


def docker_subnets(network) -> list[ipaddress.IPv4Network]:
    configs = (network.attrs.get("IPAM") or {}).get("Config") or []
    nets = [ipaddress.ip_network(c["Subnet"], strict=False) for c in configs if c.get("Subnet")]
    return [n for n in nets if n.version == 4]


def _bridge(network) -> str:
    options = network.attrs.get("Options") or {}
    return options.get("com.docker.network.bridge.name") or f"br-{network.id[:12]}"


def _names(things: Iterable) -> str:
    return ", ".join(sorted(t.name for t in things))


def clashes(spec: LabSpec, client, kin: Iterable[str] = ()) -> list[str]:
    """What stands on this lab's way and is not the suite's, one phrase each (`kin`: other
    labs of the suite whose things this one meets, e.g. the machines it runs on)."""
    found: list[str] = []
    marked = is_marked(spec)
    if lab_dir(spec).exists() and not marked:
        found.append(f"{lab_dir(spec)} (a lab's local state without the suite's mark)")

    ours = {owner(name) for name in (spec.name, *kin)}
    vagrant_made = vagrant_machine_ids(spec) if marked else set()

    def suites(container) -> bool:
        return container.id in vagrant_made or container.labels.get(SUITE_LABEL) in ours

    label = {"label": f"{LAB_LABEL}={spec.name}"}
    containers = client.containers.list(all=True, filters=label)
    if others := [c for c in containers if not suites(c)]:
        found.append(f"Docker containers {_names(others)} labelled {LAB_LABEL}={spec.name}")
    volumes = client.volumes.list(filters=label)
    others = [
        v
        for v in volumes
        if not marked and (v.attrs.get("Labels") or {}).get(SUITE_LABEL) not in ours
    ]
    if others:
        found.append(f"Docker volumes {_names(others)} labelled {LAB_LABEL}={spec.name}")

    subnet = spec.network.subnet
    bridges: set[str] = set()  # every Docker network's own, named as the network
    for network in client.networks.list():
        bridges.add(_bridge(network))
        on_subnet = [n for n in docker_subnets(network) if n.overlaps(subnet)]
        if not on_subnet:
            continue
        # Stopped ones too: they take their network back when they start.
        members = client.containers.list(all=True, filters={"network": network.id})
        vagrant_network = network.name == docker_network_name(spec) and marked
        suite_made = (network.attrs.get("Labels") or {}).get(SUITE_LABEL) in ours
        if (vagrant_network or suite_made) and all(suites(c) for c in members):
            continue
        with_them = f", with containers {_names(members)}" if members else ""
        subnets = ", ".join(map(str, on_subnet))
        found.append(f"Docker network {network.name} ({subnets}{with_them})")

    named: set[str] = set()
    for ifname, address in host_addresses():
        if ifname not in bridges and address.network.overlaps(subnet):
            found.append(f"interface {ifname} ({address})")
            named.add(ifname)
    for destination, dev in host_routes():
        if dev not in bridges | named and destination.overlaps(subnet):
            found.append(f"a route to {destination} ({dev})")
    return found


def ssh_place(name: str, lab: SuiteLab) -> LabSpec:
    """What the clash check needs of an ssh lab on the road's machines: name and subnet."""
    return LabSpec.model_validate(
        {"name": name, "provider": "ssh", "network": {"subnet": str(lab.subnet)}, "hosts": []}
    )


def claim_ssh_road(lab: SuiteLab, client) -> None:
    """Before the ssh road's machines are made: nothing on their subnet, nor under the
    names of the road's two labs (`<lab>`, and `<lab>-b`, refused on the same machines),
    that the suite did not make."""
    for name in (lab.name, f"{lab.name}-b"):
        refuse_clashes(ssh_place(name, lab), client, kin=(lab.name,))


def clash_sentence(spec: LabSpec, found: list[str]) -> str:
    return (
        f"the test suite's lab {spec.name} on {spec.network.subnet} would meet what the "
        f"suite did not make: {'; '.join(found)}; nothing was touched: remove those "
        "yourself (a lab: `labctl --spec ITS_SPEC down`), or give the suite other names and "
        "subnets with LAB_E2E_NAME and LAB_E2E_SUBNET (docs/testing.md)."
    )


def refuse_clashes(spec: LabSpec, client, kin: Iterable[str] = ()) -> None:
    """Stop this lab's tests, naming every clash in one sentence, before anything changes."""
    if found := clashes(spec, client, kin):
        pytest.fail(clash_sentence(spec, found), pytrace=False)
