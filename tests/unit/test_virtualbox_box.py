"""The virtualbox road's host box, as the seed made it: `vagrant package` of a converged
VM and `vagrant box add` under the lab's name, with the arguments labctl builds
(labctl/box.py package_commands), run by Vagrant's own package command and VirtualBox
provider against the fake VBoxManage (tests/support/virtualbox_harness.py); then a
`vagrant up` of the lab whose state records the box imports that box's export.

What is not checked here, and not wired into `labctl up` yet: the packaged VM's own
contents (there is no VM; nor the key Vagrant gave it, which the faked communicator never
inserts, so the box carries none), and `up` making and using the box on this road."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from labctl import box
from labctl.spec import load_spec
from tests.conftest import PROJECT_ROOT, seed_hosts
from tests.support.virtualbox_harness import SUPPORT, fake_virtualbox, start_up, vagrant_env
from tests.unit.test_virtualbox_up import project_copy

PACKAGE_HARNESS = SUPPORT / "virtualbox_package.rb"
KEY = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("virtualbox-box")
    spec_file = tmp / "lab.yaml"
    spec_file.write_text(yaml.safe_dump({"hosts": seed_hosts()[:1]}, sort_keys=False))
    spec, _ = load_spec(spec_file)
    first = start_up(spec_file, tmp / "first", "7.0")
    up = first.result()
    assert up.errors() == {}, up.output
    box_file = tmp / "lab-box.box"
    package, add = box.package_commands(spec, spec.hosts[0].name, KEY, box_file)
    env = os.environ | vagrant_env(spec_file, tmp / "first")
    env |= fake_virtualbox(tmp / "first", "7.0", state=first.state)
    result = tmp / "package.json"
    done = subprocess.run(
        ["ruby", str(PACKAGE_HARNESS), str(PROJECT_ROOT), str(result), "--", *package[2:]],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [json.loads(line) for line in (tmp / "first" / "calls.jsonl").read_text().splitlines()]
    return {"spec": spec, "spec_file": spec_file, "tmp": tmp, "box_file": box_file,
            "add": add, "package": json.loads(result.read_text()), "calls": calls,
            "package_output": done.stdout}  # fmt: skip


def test_vagrant_package_halts_and_exports_the_vm(packaged):
    assert packaged["package"].get("exit") == 0, packaged["package"]
    calls = packaged["calls"]
    poweroff = [c for c in calls if c[:1] == ["controlvm"]]
    export = [c for c in calls if c[:1] == ["export"]]
    assert [c[2:] for c in poweroff] == [["poweroff"]]
    assert len(export) == 1 and export[0][2] == "--output" and export[0][3].endswith("box.ovf")
    assert calls.index(poweroff[0]) < calls.index(export[0])
    assert packaged["box_file"].is_file()


def test_vagrant_box_add_takes_it_under_the_labs_name_and_up_imports_it(packaged, tmp_path):
    spec, add = packaged["spec"], packaged["add"]
    name = box.vagrant_box_name(spec, KEY)
    assert add == ["vagrant", "box", "add", "--name", name, str(packaged["box_file"])]
    second = tmp_path / "second"
    env = os.environ | vagrant_env(packaged["spec_file"], second)  # as labctl runs Vagrant
    home = Path(env["VAGRANT_HOME"])
    home.mkdir(parents=True)
    added = subprocess.run(
        add, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert added.returncode == 0, added.stdout + added.stderr
    stored = home / "boxes" / name.replace("/", "-VAGRANTSLASH-") / "0" / "virtualbox"
    assert (stored / "box.ovf").is_file() and (stored / "metadata.json").is_file()

    # The lab's state records the box: `vagrant up` makes the VM from it.
    project = project_copy(tmp_path / "project", (PROJECT_ROOT / "Vagrantfile").read_text())
    lab_state = project / ".lab" / spec.name / "state.json"
    lab_state.parent.mkdir(parents=True)
    lab_state.write_text(json.dumps({"provider": "virtualbox", "box": name}))
    again = start_up(packaged["spec_file"], second, "7.0", project=project).result()
    assert again.errors() == {}, again.output
    # Vagrant asks first (`import -n`), then imports.
    read = {c[2] if c[1] in ("-n", "--dry-run") else c[1] for c in again.commands("import")}
    assert read == {str(stored / "box.ovf")}
