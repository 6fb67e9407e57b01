"""The virtualbox road's host box, as the seed made it: labctl/virtualbox_box.py make()
runs `vagrant package` of a converged VM and `vagrant box add` under the lab's name
through python-vagrant, as `up` does; Vagrant's own package command and VirtualBox
provider run against the fake VBoxManage (tests/support/virtualbox_harness.py), and its
own `box add` and `box list` against a Vagrant home of the test's. Then a `vagrant up` of
the lab whose state records the box imports that box's export.

What is not checked here: the packaged VM's own contents (there is no VM; nor the key
Vagrant gave it, which the faked communicator never inserts, so the box carries none).
How `up`, `down` and `labctl box` use these: tests/unit/test_virtualbox_box_wiring.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import vagrant as python_vagrant
import yaml

from labctl import paths, vagrant, virtualbox_box
from labctl.spec import load_spec
from tests.conftest import PROJECT_ROOT, seed_hosts
from tests.support.virtualbox_harness import SUPPORT, fake_virtualbox, start_up, vagrant_env
from tests.unit.test_virtualbox_up import project_copy

PACKAGE_HARNESS = SUPPORT / "virtualbox_package.rb"
KEY = "0123456789abcdef" * 4


class HarnessVagrant(python_vagrant.Vagrant):
    """python-vagrant as labctl runs it, but its `vagrant package` (the arguments
    python-vagrant builds) goes to tests/support/virtualbox_package.rb: Vagrant's own
    package command with the guest side faked."""

    def _call_vagrant_command(self, args):
        if args[0] != "package":
            return super()._call_vagrant_command(args)
        result = Path(self.env["VAGRANT_DOTFILE_PATH"]).parent / "package.json"
        argv = [a for a in args[1:] if a is not None]
        done = subprocess.run(
            ["ruby", str(PACKAGE_HARNESS), str(self.root), str(result), "--", *argv],
            env=self.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        with self.out_cm() as out:
            out.write(done.stdout + done.stderr)
        if done.returncode != 0 or json.loads(result.read_text()).get("exit") != 0:
            raise subprocess.CalledProcessError(done.returncode or 1, argv)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("virtualbox-box")
    spec_file = tmp / "lab.yaml"
    spec_file.write_text(yaml.safe_dump({"hosts": seed_hosts()[:1]}, sort_keys=False))
    spec, _ = load_spec(spec_file)
    first = start_up(spec_file, tmp / "first", "7.0")
    up = first.result()
    assert up.errors() == {}, up.output
    env = os.environ | vagrant_env(spec_file, tmp / "first")  # as labctl runs Vagrant
    env |= fake_virtualbox(tmp / "first", "7.0", state=first.state)
    new = virtualbox_box.VagrantBox(spec.name, KEY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(paths, "PROJECT_ROOT", tmp / "checkout")  # the lab's state: the test's
        patch.setattr(vagrant, "client", lambda *_, **__: HarnessVagrant(
            root=str(PROJECT_ROOT), env=env, quiet_stdout=True, quiet_stderr=True))  # fmt: skip
        said = []
        virtualbox_box.make(spec, new, said.append)
        listed = virtualbox_box.kept(spec)
        leftovers = list((paths.lab_dir(spec) / "box").glob("*"))
    calls = [json.loads(line) for line in (tmp / "first" / "calls.jsonl").read_text().splitlines()]
    return {"spec": spec, "spec_file": spec_file, "tmp": tmp, "new": new, "said": said,
            "home": Path(env["VAGRANT_HOME"]), "listed": listed, "calls": calls,
            "leftovers": leftovers}  # fmt: skip


def test_vagrant_package_halts_and_exports_the_vm(packaged):
    calls = packaged["calls"]
    poweroff = [c for c in calls if c[:1] == ["controlvm"]]
    export = [c for c in calls if c[:1] == ["export"]]
    assert [c[2:] for c in poweroff] == [["poweroff"]]
    assert len(export) == 1 and export[0][2] == "--output" and export[0][3].endswith("box.ovf")
    assert calls.index(poweroff[0]) < calls.index(export[0])
    assert packaged["said"][-1] == f"box: vagrant box add {packaged['new'].name}"
    assert packaged["leftovers"] == []  # the box file and its catalog go once Vagrant has it


def test_vagrant_box_add_takes_it_under_the_labs_name_and_up_imports_it(packaged, tmp_path):
    spec, new, home = packaged["spec"], packaged["new"], packaged["home"]
    assert new.name.startswith(f"labctl/{spec.name}-") and new.name.endswith(KEY[:16])
    # Vagrant's own `box list`, read by python-vagrant: the lab's one box, versioned by
    # the time it was made.
    (kept,) = packaged["listed"]
    assert kept.box.name == new.name and not kept.in_use and kept.created.endswith("UTC")
    stored = home / "boxes" / new.name.replace("/", "-VAGRANTSLASH-") / kept.version / "virtualbox"
    assert (stored / "box.ovf").is_file() and (stored / "metadata.json").is_file()

    # The lab's state records the box: `vagrant up` makes the VM from it.
    second = tmp_path / "second"
    in_store = stored.parent.parent.relative_to(home)  # boxes/<name>
    shutil.copytree(home / in_store, second / "vagrant-home" / in_store)
    project = project_copy(tmp_path / "project", (PROJECT_ROOT / "Vagrantfile").read_text())
    lab_state = project / ".lab" / spec.name / "state.json"
    lab_state.parent.mkdir(parents=True)
    lab_state.write_text(json.dumps({"provider": "virtualbox", "box": new.name}))
    again = start_up(packaged["spec_file"], second, "7.0", project=project).result()
    assert again.errors() == {}, again.output
    # Vagrant asks first (`import -n`), then imports.
    stored = second / "vagrant-home" / stored.relative_to(home)
    read = {c[2] if c[1] in ("-n", "--dry-run") else c[1] for c in again.commands("import")}
    assert read == {str(stored / "box.ovf")}
