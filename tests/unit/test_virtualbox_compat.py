"""Which VirtualBox the installed Vagrant can drive, which box this machine runs, and VM
names per checkout: labctl/virtualbox.py, `labctl doctor` and the start of `up`.

The support table is checked against the installed Vagrant's own driver map
(plugins/providers/virtualbox/driver/meta.rb), and `doctor` / `up` against a fake
VBoxManage answering `--version` like VirtualBox 7.0 and 7.1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labctl import system, virtualbox
from labctl.spec import SpecError, load_spec, parse_spec
from labctl.vagrant import vagrantfile_data
from tests.conftest import PROJECT_ROOT, seed_hosts
from tests.support.virtualbox_harness import fake_virtualbox

DEFAULT = PROJECT_ROOT / "lab.yaml"


@pytest.mark.parametrize(
    ("vbox", "vagrant", "arch", "expected"),
    [
        ((6, 1, 50), (2, 3, 4), "amd64", None),
        ((7, 0, 20), (2, 3, 4), "amd64", None),
        # Debian bookworm's Vagrant with today's VirtualBox.
        ((7, 1, 4), (2, 3, 4), "amd64",
         "VirtualBox 7.1.4 needs Vagrant 2.4.2 or later, but Vagrant 2.3.4 knows VirtualBox "
         "only up to 7.0; install Vagrant 2.4.2 or later from HashiCorp's packages"),
        ((7, 1, 4), (2, 4, 1), "amd64", "needs Vagrant 2.4.2 or later"),
        ((7, 1, 4), (2, 4, 2), "amd64", None),
        ((7, 2, 0), (2, 4, 8), "amd64", "needs Vagrant 2.4.9 or later"),
        ((7, 2, 0), (2, 4, 9), "amd64", None),
        ((6, 1, 50), (2, 2, 6), "amd64", "needs Vagrant 2.2.7 or later"),
        # A VirtualBox newer than the table: fine for a Vagrant newer than the table too.
        ((7, 3, 0), (2, 4, 9), "amd64", "is newer than any VirtualBox Vagrant 2.4.9 supports"),
        ((7, 3, 0), (2, 5, 0), "amd64", None),
        # Apple silicon: VirtualBox runs there from 7.1 on.
        ((7, 0, 20), (2, 4, 9), "arm64", "cannot run arm64 guests; install VirtualBox 7.1"),
        ((7, 1, 4), (2, 3, 4), "arm64", "needs Vagrant 2.4.2 or later"),
        ((7, 1, 4), (2, 4, 2), "arm64", None),
    ],
)  # fmt: skip
def test_compatibility(vbox, vagrant, arch, expected):
    problem = virtualbox.compatibility_problem(vbox, vagrant, arch)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem
        assert problem.endswith(".") and problem.count(". ") == 0  # one sentence


def installed_vagrant_drivers() -> set[tuple[int, int]]:
    source_root = subprocess.run(
        ["ruby", "-e", 'require "vagrant"; puts Vagrant.source_root'],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    meta = Path(source_root, "plugins/providers/virtualbox/driver/meta.rb").read_text()
    return {(int(a), int(b)) for a, b in re.findall(r'"(\d+)\.(\d+)" => Version_', meta)}


def test_the_table_matches_the_installed_vagrants_own_drivers():
    vagrant = virtualbox.installed_vagrant()
    drivers = installed_vagrant_drivers()
    table = virtualbox.FIRST_VAGRANT_FOR_VIRTUALBOX
    assert drivers & set(table) == {minor for minor, first in table.items() if first <= vagrant}
    assert vagrant <= virtualbox.NEWEST_KNOWN_VAGRANT


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("7.1.4r165100\n", (7, 1, 4)),
        ("6.1.50_Debianr161033\n", (6, 1, 50)),
        ("WARNING: vboxdrv kernel module is not loaded (6.1.2 ...)\n7.0.20r163906\n", (7, 0, 20)),
        ("WARNING: The vboxdrv kernel module is not loaded.\n", None),
    ],
)  # fmt: skip
def test_virtualbox_version_is_read_like_vagrant_reads_it(monkeypatch, output, version):
    monkeypatch.setattr(virtualbox, "_version_output", lambda command: output)
    assert virtualbox.installed_virtualbox() == version


@pytest.fixture
def fake_vbox(tmp_path, monkeypatch):
    """Put a fake VBoxManage of the given VirtualBox version first on PATH."""

    def install(version: str) -> dict[str, str]:
        env = fake_virtualbox(tmp_path / version, version)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return env

    return install


def test_up_on_virtualbox_7_1_stops_naming_the_vagrant_release(fake_vbox):
    fake_vbox("7.1")
    if virtualbox.installed_vagrant() >= (2, 4, 2):
        pytest.fail("this check expects Debian's Vagrant 2.3.4, which has no 7.1 driver")
    with pytest.raises(system.PrerequisiteError) as caught:
        system.ensure_provider("virtualbox")
    assert "VirtualBox 7.1.4 needs Vagrant 2.4.2 or later" in str(caught.value)


def test_up_on_virtualbox_7_0_passes_the_check(fake_vbox):
    fake_vbox("7.0")
    system.ensure_provider("virtualbox")


def test_doctor_shows_the_virtualbox_version_and_the_vagrant_to_install(fake_vbox):
    env = fake_vbox("7.1")
    result = subprocess.run(
        [sys.executable, "-m", "labctl", "doctor"], cwd=PROJECT_ROOT, capture_output=True,
        text=True, timeout=120, env=os.environ | env | {"COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"VirtualBox\s+│\s+7\.1\.4\s+│", result.stdout)
    problem = " ".join(result.stderr.split())
    assert "virtualbox provider: VirtualBox 7.1.4 needs Vagrant 2.4.2 or later" in problem


@pytest.mark.parametrize(
    ("machine", "box"),
    [
        ("x86_64", ("debian/bookworm64", "12.20240905.1")),
        ("AMD64", ("debian/bookworm64", "12.20240905.1")),  # Windows
        ("arm64", ("bento/debian-12", "202510.26.0")),  # macOS on Apple silicon
        ("aarch64", ("bento/debian-12", "202510.26.0")),  # Linux on Arm
    ],
)
def test_the_box_follows_the_control_machines_architecture(machine, box):
    spec, _ = load_spec(DEFAULT)
    data = vagrantfile_data(spec, machine)["virtualbox"]
    assert (data["box"], data["box_version"]) == box


def test_an_architecture_virtualbox_does_not_run_on(monkeypatch):
    spec, _ = load_spec(DEFAULT)
    assert vagrantfile_data(spec, "s390x")["virtualbox"]["box"] is None
    monkeypatch.setattr(virtualbox.platform, "machine", lambda: "s390x")
    assert virtualbox.installed_problem() == (
        "VirtualBox runs on x86_64 and arm64 machines, not on s390x; "
        "use provider: docker or provider: ssh."
    )


def test_a_users_box_replaces_one_architectures_only():
    spec, _ = parse_spec(
        {"virtualbox": {"boxes": {"arm64": {"box": "my/box", "version": "1.2.3"}}},
         "hosts": seed_hosts()}
    )  # fmt: skip
    assert virtualbox.box_for(spec, "arm64").box == "my/box"
    assert virtualbox.box_for(spec, "x86_64").box == "debian/bookworm64"


@pytest.mark.parametrize(
    ("virtualbox_section", "sentence"),
    [
        ({"box": "debian/bookworm64"},
         "virtualbox.box is not a known key; remove it or fix its spelling (did you mean 'boxes"),
        ({"boxes": {"arm64": {"box": "my/box"}}},
         "virtualbox.boxes.arm64.version is required; add it."),
        ({"boxes": {"riscv64": {"box": "my/box", "version": "1"}}},
         "virtualbox.boxes.riscv64 is not a known key"),
    ],
)  # fmt: skip
def test_box_mistakes_are_one_sentence(virtualbox_section, sentence):
    with pytest.raises(SpecError) as caught:
        parse_spec({"virtualbox": virtualbox_section, "hosts": seed_hosts()}, "lab.yaml")
    assert any(sentence in problem for problem in caught.value.problems), caught.value.problems


def test_vm_names_differ_between_checkouts(monkeypatch):
    spec, _ = load_spec(DEFAULT)
    names = []
    for checkout in ("/home/a/consul-lb-lab", "/home/b/consul-lb-lab"):
        monkeypatch.setattr(virtualbox, "PROJECT_ROOT", Path(checkout))
        names.append(virtualbox.vm_name(spec, "server1"))
    assert names[0] != names[1]
    assert all(re.fullmatch(r"dynlb-server1-[0-9a-f]{8}", name) for name in names)
