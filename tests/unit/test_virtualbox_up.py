"""`vagrant up` on the virtualbox provider, run by Vagrant's own VirtualBox provider
against a fake VBoxManage answering like VirtualBox 6.1, 7.0 and 7.1 (Linux and macOS).

The assertions are on the commands VirtualBox would receive. Vagrant's middleware runs
as it ships (import, naming, networks, forwarded ports, boot); only the guest side is
faked (tests/support/virtualbox_up.rb). The Vagrant here is Debian's 2.3.4: it has no
7.1 driver, so 7.1 is run twice: as 2.3.4 is (refused) and with the driver Vagrant
2.4.2 added, an empty subclass of the 7.0 driver (see the harness).

Sources: Vagrant 2.3.4 plugins/providers/virtualbox/action/network.rb (host-only set-up,
HOSTONLY_DEFAULT_RANGE), driver/version_5_0.rb (`hostonlyif create` / `ipconfig`),
driver/version_7_0.rb (`hostonlynet add` on macOS), driver/meta.rb (driver per version).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from labctl import virtualbox
from labctl.spec import VIRTUALBOX_HOSTONLY_RANGE, load_spec
from tests.conftest import PROJECT_ROOT, seed_hosts
from tests.support.virtualbox_harness import UpResult, fake_virtualbox, start_up

DEFAULT = PROJECT_ROOT / "lab.yaml"
MASK = "255.255.255.0"
GATEWAY = "192.168.56.1"  # Vagrant's adapter address: the subnet's first, the spec's gateway


def two_hosts() -> list[dict]:
    server1, _, server3 = seed_hosts()
    return [server1, server3]


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def project_copy(root: Path, vagrantfile: str) -> Path:
    """Another checkout of the project (its own labctl, so its own checkout ID)."""
    shutil.copytree(
        PROJECT_ROOT / "labctl", root / "labctl", ignore=shutil.ignore_patterns("__pycache__")
    )
    (root / "Vagrantfile").write_text(vagrantfile)
    return root


def seed_netmask_project(root: Path) -> Path:
    """A checkout whose Vagrantfile passes the seed's `netmask: 24` to VirtualBox too."""
    vagrantfile = (PROJECT_ROOT / "Vagrantfile").read_text()
    seed, found = re.subn(r'netmask: lab\["virtualbox"\]\["netmask"\]', 'netmask: lab["netmask"]',
                          vagrantfile)  # fmt: skip
    assert found == 1, "the Vagrantfile no longer gives VirtualBox the dotted mask"
    return project_copy(root, seed)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, UpResult]:
    """Every scenario, started at once. The seed's three hosts on 6.1; elsewhere two (a
    new host-only network, then a machine that finds it) or one, as the check needs:
    each machine costs some 40 VBoxManage calls and a second of Vagrant's boot wait."""
    tmp = tmp_path_factory.mktemp("virtualbox-up")
    two = write(tmp / "two-hosts.yaml", {"hosts": two_hosts()})
    one = write(tmp / "one-host.yaml", {"hosts": two_hosts()[:1]})
    outside = write(
        tmp / "outside.yaml",
        {
            "network": {"subnet": "203.0.113.0/24", "allow_any_subnet": True},
            "hosts": [two_hosts()[0] | {"address": "203.0.113.2"}],
        },
    )
    started = {
        "6.1": start_up(DEFAULT, tmp / "6.1", "6.1"),
        "7.0": start_up(two, tmp / "7.0", "7.0"),
        "7.1+driver": start_up(two, tmp / "7.1d", "7.1", driver_7_1=True),
        "7.0 macOS": start_up(one, tmp / "7.0m", "7.0", darwin=True),
        "7.1+driver macOS": start_up(two, tmp / "7.1dm", "7.1", darwin=True, driver_7_1=True),
        "7.1": start_up(DEFAULT, tmp / "7.1", "7.1"),
        "outside range": start_up(outside, tmp / "outside", "6.1"),
        "seed netmask": start_up(one, tmp / "seed", "6.1", project=seed_netmask_project(tmp / "p")),
    }  # fmt: skip
    try:
        results = {name: run.result() for name, run in started.items()}
        # A second checkout of the same lab on the VirtualBox the 7.0 run left VMs on.
        vagrantfile = (PROJECT_ROOT / "Vagrantfile").read_text()
        started["second checkout"] = start_up(
            one, tmp / "c2", "7.0", project=project_copy(tmp / "checkout2", vagrantfile),
            state=started["7.0"].state,
        )  # fmt: skip
        results["second checkout"] = started["second checkout"].result()
    finally:
        for run in started.values():
            run.stop()
    return results


def assert_all_up(result: UpResult, count: int) -> None:
    assert result.errors() == {}, result.output[-3000:]
    assert [m["state"] for m in result.machines] == ["running"] * count
    # childprocess raises ArgumentError for any non-String argv element.
    assert result.non_string_argv == []


def modifyvm_values(result: UpResult, option: str) -> list[str]:
    return [c[c.index(option) + 1] for c in result.commands("modifyvm") if option in c]


@pytest.mark.parametrize("scenario", ["6.1", "7.0", "7.1+driver"])
def test_linux_hostonly_interface_gets_the_dotted_mask(runs, scenario):
    result = runs[scenario]
    spec, _ = load_spec(DEFAULT)
    assert_all_up(result, len(result.machines))
    # One interface for the lab, configured once, on the spec's gateway with a dotted mask;
    # the second and third machines find it.
    assert result.commands("hostonlyif", "create") == [["hostonlyif", "create"]]
    assert result.commands("hostonlyif", "ipconfig") == [
        ["hostonlyif", "ipconfig", "vboxnet0", "--ip", GATEWAY, "--netmask", MASK]
    ]
    assert str(spec.gateway) == GATEWAY
    assert not result.commands("hostonlynet")
    adapters = [c[2:] for c in result.commands("modifyvm") if "--hostonlyadapter2" in c]
    assert adapters == [
        ["--nic1", "nat", "--nic2", "hostonly", "--hostonlyadapter2", "vboxnet0",
         "--cableconnected2", "on"]
    ] * len(result.machines)  # fmt: skip


@pytest.mark.parametrize("scenario", ["6.1", "7.0", "7.1+driver", "7.0 macOS"])
def test_vms_are_named_sized_and_configured_from_the_spec(runs, scenario):
    result = runs[scenario]
    spec, _ = load_spec(DEFAULT)
    machines = {m["name"]: m for m in result.machines}
    names = modifyvm_values(result, "--name")
    assert names == [virtualbox.vm_name(spec, m.removeprefix("dynlb-")) for m in machines]
    assert modifyvm_values(result, "--cpus") == ["1"] * len(names)
    assert modifyvm_values(result, "--memory") == ["1024"] * len(names)
    by_host = {h.name: str(h.address) for h in spec.hosts}
    for name, machine in machines.items():
        host = name.removeprefix("dynlb-")
        calls = {c["capability"]: c["args"] for c in machine["guest"]}
        assert calls["change_host_name"] == [host]
        [network] = calls["configure_networks"][0]
        assert (network["ip"], network["netmask"]) == (by_host[host], MASK)
        assert network["type"] == "static"
    # Each VM boots headless with SSH forwarded on loopback only, on a port of its own.
    started = [c[1] for c in result.commands("startvm")]
    assert started == [m["id"] for m in machines.values()]
    ssh = modifyvm_values(result, "--natpf1")
    assert all(re.fullmatch(r"ssh,tcp,127\.0\.0\.1,\d+,,22", rule) for rule in ssh)
    assert len(set(ssh)) == len(machines)


@pytest.mark.parametrize("scenario", ["7.0 macOS", "7.1+driver macOS"])
def test_macos_virtualbox_7_gets_a_hostonly_network_with_the_dotted_mask(runs, scenario):
    result = runs[scenario]
    assert_all_up(result, len(result.machines))
    assert result.commands("hostonlynet", "add") == [
        ["hostonlynet", "add", "--name", "vagrantnet-vbox1", "--netmask", MASK,
         "--lower-ip", "192.168.56.0", "--upper-ip", "192.168.56.0"]
    ]  # fmt: skip
    assert not [c for c in result.commands("hostonlyif") if c[1] != "list"]
    adapters = [c[2:] for c in result.commands("modifyvm") if "--host-only-net2" in c]
    assert adapters == [
        ["--nic2", "hostonlynet", "--host-only-net2", "vagrantnet-vbox1", "--cableconnected2", "on"]
    ] * len(result.machines)  # fmt: skip


def test_vagrant_2_3_4_refuses_virtualbox_7_1_before_any_change(runs):
    result = runs["7.1"]
    assert set(result.errors().values()) == {"Vagrant::Errors::ProviderNotUsable"}
    message = result.machines[0]["message"]
    assert "not supported by this version of Vagrant" in message
    assert "6.1, 7.0" in message  # the driver list Vagrant prints: 7.1 is not in it
    assert result.calls == [["--version"]]
    # labctl names the release that fixes it (`doctor`, and `up` before Vagrant runs).
    problem = virtualbox.compatibility_problem((7, 1, 4), (2, 3, 4), "amd64")
    assert "Vagrant 2.4.2 or later" in problem


def test_vagrant_checks_the_range_the_spec_checks(runs):
    """The spec's subnet rule is Vagrant's: same default range, and an address outside it
    stops Vagrant before VirtualBox is asked for an interface."""
    assert runs["6.1"].hostonly_default_range == [str(VIRTUALBOX_HOSTONLY_RANGE)]
    result = runs["outside range"]
    assert set(result.errors().values()) == {"Vagrant::Errors::VirtualBoxInvalidHostSubnet"}
    assert "192.168.56.0/21" in result.machines[0]["message"]
    assert not result.commands("hostonlyif", "create")


def test_the_seeds_integer_netmask_stops_the_first_up(runs):
    """What this Vagrantfile fixes: `netmask: 24` reaches `hostonlyif ipconfig` as an
    Integer and Vagrant's subprocess layer refuses it before VirtualBox runs."""
    result = runs["seed netmask"]
    assert result.errors() == {"dynlb-server1": "ArgumentError"}
    assert "all arguments must be String" in result.machines[0]["message"]
    assert result.non_string_argv[0][:3] == ['"hostonlyif"', '"ipconfig"', '"vboxnet0"']
    assert result.non_string_argv[0][-1] == "24"
    assert result.commands("hostonlyif", "create")
    assert not result.commands("hostonlyif", "ipconfig")


def test_a_second_checkout_of_the_same_lab_does_not_clash(runs):
    first, second = runs["7.0"], runs["second checkout"]
    assert_all_up(second, 1)
    [name] = modifyvm_values(second, "--name")
    assert name.startswith("dynlb-server1-")
    assert name not in modifyvm_values(first, "--name")
    # It joined the host-only interface the first checkout's lab made.
    assert not second.commands("hostonlyif", "create")
    assert modifyvm_values(second, "--hostonlyadapter2") == ["vboxnet0"]


def test_the_fake_refuses_what_virtualbox_refuses(tmp_path):
    def vboxmanage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["VBoxManage", *args], env=os.environ | env, capture_output=True, text=True,
            timeout=30,
        )  # fmt: skip

    linux = fake_virtualbox(tmp_path / "linux", "6.1")
    assert vboxmanage(linux, "hostonlyif", "create").returncode == 0
    ipconfig = ["hostonlyif", "ipconfig", "vboxnet0", "--ip"]
    prefix = vboxmanage(linux, *ipconfig, GATEWAY, "--netmask", "24")
    assert (prefix.returncode, "Invalid netmask '24'" in prefix.stderr) == (1, True)
    outside = vboxmanage(linux, *ipconfig, "203.0.113.1", "--netmask", MASK)
    assert (outside.returncode, "E_ACCESSDENIED" in outside.stderr) == (1, True)
    assert vboxmanage(linux, "list", "hostonlynets").returncode == 2  # 7.0 and later only
    macos = fake_virtualbox(tmp_path / "macos", "7.1", host="darwin")
    assert "vboxnetctl" in vboxmanage(macos, "hostonlyif", "create").stderr
