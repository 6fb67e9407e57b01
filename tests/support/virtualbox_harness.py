"""Vagrant's own VirtualBox provider against the fake VBoxManage: set-up and results.

`fake_virtualbox(dir, version)` puts a `VBoxManage` answering like that VirtualBox
first on PATH; `start_up(...)` runs tests/support/virtualbox_up.rb (`vagrant up` of
every machine, Vagrant's middleware as it ships) in the background with a box faked in
a temporary VAGRANT_HOME, and `UpRun.result()` returns what Vagrant did and what the
fake VBoxManage received.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from labctl import virtualbox
from labctl.spec import load_spec
from tests.conftest import PROJECT_ROOT

SUPPORT = PROJECT_ROOT / "tests" / "support"
FAKE = SUPPORT / "fake_vboxmanage.py"
UP_HARNESS = SUPPORT / "virtualbox_up.rb"

# The smallest OVF VirtualBox's `import` accepts: one virtual system, one disk.
OVF = """<?xml version="1.0"?>
<Envelope ovf:version="1.0" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
          xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:href="box-disk001.vmdk" ovf:id="file1"/></References>
  <VirtualSystem ovf:id="debian-12-amd64"/>
</Envelope>
"""


def fake_virtualbox(
    workdir: Path, version: str, host: str = "linux", state: Path | None = None
) -> dict[str, str]:
    """Environment with a fake VBoxManage for VirtualBox `version` first on PATH; its
    VMs and networks live in `state` (default: workdir/vbox), its calls are logged to
    workdir/calls.jsonl."""
    bin_dir, state = workdir / "bin", state or workdir / "vbox"
    bin_dir.mkdir(parents=True, exist_ok=True)
    state.mkdir(exist_ok=True)
    wrapper = bin_dir / "VBoxManage"
    # Imported rather than run as a script, so Python reuses its compiled module: Vagrant
    # calls VBoxManage some 40 times per machine.
    load = f"import sys; sys.path[0] = {str(SUPPORT)!r}; import {FAKE.stem} as fake; "
    load += "raise SystemExit(fake.main())"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S -E -c "{load}" "$@"\n')
    wrapper.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_VBOX_DIR": str(state),
        "FAKE_VBOX_LOG": str(workdir / "calls.jsonl"),
        "FAKE_VBOX_VERSION": version,
        "FAKE_VBOX_HOST": host,
    }


def fake_box(vagrant_home: Path, box: str, version: str) -> None:
    """A box in Vagrant's box store, laid out as `vagrant box add` leaves it (2.3)."""
    directory = vagrant_home / "boxes" / box.replace("/", "-VAGRANTSLASH-") / version / "virtualbox"
    directory.mkdir(parents=True)
    (directory / "metadata.json").write_text('{"provider": "virtualbox"}\n')
    (directory / "box.ovf").write_text(OVF)
    (directory / "box-disk001.vmdk").write_bytes(b"")


def vagrant_env(spec: Path, workdir: Path) -> dict[str, str]:
    return {
        "LAB_SPEC": str(spec),
        "LAB_PYTHON": sys.executable,
        "VAGRANT_HOME": str(workdir / "vagrant-home"),
        "VAGRANT_DOTFILE_PATH": str(workdir / "vagrant"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
    }


@dataclass
class UpResult:
    machines: list[dict]
    calls: list[list[str]]  # every VBoxManage argv, in order
    non_string_argv: list[list[str]]  # argv Vagrant tried to pass with non-String parts
    hostonly_default_range: list[str]
    output: str

    def errors(self) -> dict[str, str]:
        return {m["name"]: m["error"] for m in self.machines if "error" in m}

    def commands(self, *prefix: str) -> list[list[str]]:
        return [c for c in self.calls if c[: len(prefix)] == list(prefix)]


@dataclass
class UpRun:
    process: subprocess.Popen
    workdir: Path
    state: Path  # the fake VirtualBox's VMs and networks

    def stop(self) -> None:
        """End the run if it is still going (a failed test must not leave Ruby behind)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def result(self, timeout: float = 300) -> UpResult:
        output, _ = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, output
        data = json.loads((self.workdir / "result.json").read_text())
        log = self.workdir / "calls.jsonl"
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return UpResult(
            data["machines"], calls, data["non_string_argv"], data["hostonly_default_range"],
            output,
        )  # fmt: skip


def start_up(
    spec: Path,
    workdir: Path,
    version: str,
    *,
    darwin: bool = False,
    driver_7_1: bool = False,
    project: Path = PROJECT_ROOT,
    state: Path | None = None,
) -> UpRun:
    """Start `vagrant up` of every machine in `project`'s Vagrantfile against the fake
    (whose VMs and networks live in `state`: pass another run's to share a VirtualBox)."""
    workdir.mkdir(parents=True, exist_ok=True)
    state = state or workdir / "vbox"
    env = os.environ | vagrant_env(spec, workdir)
    env |= fake_virtualbox(workdir, version, "darwin" if darwin else "linux", state)
    # The box the Vagrantfile picks for this machine's architecture.
    box = virtualbox.box_for(load_spec(spec)[0])
    fake_box(Path(env["VAGRANT_HOME"]), box.box, box.version)
    flags = ["--darwin"] * darwin + ["--driver-7.1"] * driver_7_1
    process = subprocess.Popen(
        ["ruby", str(UP_HARNESS), str(project), str(workdir / "result.json"), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return UpRun(process, workdir, state)
