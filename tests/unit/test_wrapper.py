"""`./lab`, the wrapper the README's two commands run: as root on a machine without sudo,
and as a user with sudo. The machine is faked: a PATH holding only the tools the case
gives it (`id` answering the case's uid; `sudo`, `apt-get` and labctl recording their
calls), and a copy of the wrapper whose .venv is already there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

# Tools the wrapper itself needs, taken from this machine.
SYSTEM_TOOLS = ("sh", "dirname", "env", "touch", "cat")
RECORDER = '#!/bin/sh\necho "{name} $*" >> "$CALLS"\n'


@pytest.fixture
def machine(tmp_path):
    """run(*args, uid=0, tools=()) -> (result, calls): the wrapper on a fake machine."""
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "lab", checkout / "lab")
    (checkout / "pyproject.toml").write_text("")
    labctl = checkout / ".venv" / "bin" / "labctl"
    labctl.write_text(RECORDER.format(name="labctl"))
    labctl.chmod(0o755)
    (checkout / ".venv" / ".installed").touch()
    calls = tmp_path / "calls"

    def run(*args: str, uid: int = 0, tools: tuple[str, ...] = ()):
        bin_dir = tmp_path / f"bin-{uid}-{'-'.join(tools)}"
        bin_dir.mkdir(exist_ok=True)
        for tool in SYSTEM_TOOLS:
            target = bin_dir / tool
            if not target.exists():
                target.symlink_to(shutil.which(tool))
        (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        for tool in tools:  # sudo, apt-get, python3: record only
            (bin_dir / tool).write_text(RECORDER.format(name=tool))
        for path in bin_dir.iterdir():
            if not path.is_symlink():
                path.chmod(0o755)
        calls.unlink(missing_ok=True)
        env = {"PATH": str(bin_dir), "CALLS": str(calls), "HOME": str(tmp_path)}
        result = subprocess.run(
            [str(bin_dir / "sh"), str(checkout / "lab"), *args],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return result, calls.read_text().splitlines() if calls.exists() else []

    run.checkout = checkout
    return run


def test_root_without_sudo_runs_labctl_directly(machine):
    result, calls = machine("status", uid=0, tools=("python3",))
    assert result.returncode == 0, result.stderr
    assert calls == ["labctl status"]


def test_root_without_sudo_installs_with_apt_directly(machine):
    result, calls = machine("status", uid=0, tools=("apt-get",))  # no python3
    assert calls[:2] == [
        "apt-get update -qq",
        "apt-get install -y -qq python3 python3-venv",
    ], result.stderr


def test_a_user_with_sudo_installs_through_sudo(machine):
    result, calls = machine("status", uid=1000, tools=("sudo", "apt-get"))
    assert calls[:2] == [
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv",
    ], result.stderr


def test_a_user_with_sudo_runs_labctl_as_themself(machine):
    result, calls = machine("up", uid=1000, tools=("sudo", "python3"))
    assert result.returncode == 0, result.stderr
    assert calls == ["labctl up"]


def test_a_user_with_sudo_runs_the_test_suite_as_root(machine):
    result, calls = machine("test", "-x", uid=1000, tools=("sudo", "python3"))
    assert calls == [f"sudo {machine.checkout}/lab test -x"], result.stderr


def test_a_user_without_sudo_is_told_to_run_as_root(machine):
    result, calls = machine("status", uid=1000, tools=("apt-get",))
    assert result.returncode == 2
    assert "needs root and this machine has no sudo; run ./lab as root." in result.stderr
    assert calls == []


def test_the_wrapper_is_executable_and_posix_sh():
    assert os.access(PROJECT_ROOT / "lab", os.X_OK)
    assert subprocess.run(["sh", "-n", str(Path(PROJECT_ROOT / "lab"))]).returncode == 0
