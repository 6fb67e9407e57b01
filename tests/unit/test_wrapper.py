"""`./lab`, the wrapper the README's two commands run: as root on a machine without sudo,
and as a user with sudo. The machine is faked: a PATH holding only the tools the case
gives it (`id` answering the case's uid; `sudo`, `apt-get` and labctl recording their
calls), and a copy of the wrapper whose .venv is already there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

# Tools the wrapper itself needs, taken from this machine.
SYSTEM_TOOLS = ("sh", "dirname", "env", "touch", "cat", "grep", "tail", "sed", "cut", "sleep",
                "rm", "mkdir", "chmod")  # fmt: skip
RECORDER = '#!/bin/sh\necho "{name} $*" >> "$CALLS"\n'
# A python3 whose `-m venv DIR` makes DIR/bin/pip, a pip whose install makes labctl (and
# exits with $PIP_EXIT): the first run's .venv, in a second.
FAKE_PYTHON3 = """#!/bin/sh
echo "python3 $*" >> "$CALLS"
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  cat > "$3/bin/pip" <<'PIP'
#!/bin/sh
echo "pip $*" >> "$CALLS"
echo "Collecting pyinfra==3.10.0"
if [ "${PIP_EXIT:-0}" != 0 ]; then echo "ERROR: No matching distribution found"; exit 1; fi
printf '#!/bin/sh\\necho "labctl $*" >> "$CALLS"\\n' > "$(dirname "$0")/labctl"
chmod +x "$(dirname "$0")/labctl"
PIP
  chmod +x "$3/bin/pip"
fi
"""


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

    def run(*args: str, uid: int = 0, tools: tuple[str, ...] = (), env: dict | None = None):
        bin_dir = tmp_path / f"bin-{uid}-{'-'.join(tools)}"
        bin_dir.mkdir(exist_ok=True)
        for tool in SYSTEM_TOOLS:
            target = bin_dir / tool
            if not target.exists():
                target.symlink_to(shutil.which(tool))
        (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        for tool in tools:  # sudo, apt-get, python3: record only (python3: makes a .venv)
            (bin_dir / tool).write_text(FAKE_PYTHON3 if tool == "python3" else
                                        RECORDER.format(name=tool))  # fmt: skip
        for path in bin_dir.iterdir():
            if not path.is_symlink():
                path.chmod(0o755)
        calls.unlink(missing_ok=True)
        env = {"PATH": str(bin_dir), "CALLS": str(calls), "HOME": str(tmp_path), **(env or {})}
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


def test_the_first_run_says_what_it_does_while_it_makes_the_venv(machine):
    shutil.rmtree(machine.checkout / ".venv")
    result, calls = machine("status", uid=0, tools=("python3",))
    assert result.returncode == 0, result.stderr
    venv = machine.checkout / ".venv"
    assert calls == [
        f"python3 -m venv {venv}",
        f"pip install --disable-pip-version-check --progress-bar off -e {machine.checkout}[test]",
        "labctl status",
    ]
    assert result.stderr.splitlines() == [
        f"lab: first run: making {venv}, a Python environment with labctl and its test tools "
        "(about a minute, once).",
        f"lab: installing the Python packages (pyinfra, typer, rich, pytest, ...) into {venv}.",
        f"lab: {venv} is ready.",
    ]
    assert (venv / "pip.log").read_text().startswith("Collecting pyinfra")


def test_a_failed_install_shows_pips_last_lines_and_stops(machine):
    shutil.rmtree(machine.checkout / ".venv")
    result, calls = machine("status", uid=0, tools=("python3",), env={"PIP_EXIT": "1"})
    assert result.returncode == 1
    assert "ERROR: No matching distribution found" in result.stderr
    assert "lab: installing the Python packages failed (the lines above; all of it in " in (
        result.stderr
    )
    assert "labctl status" not in calls
    assert not (machine.checkout / ".venv" / ".installed").exists()


def test_a_changed_pyproject_updates_the_venv_and_says_so(machine):
    os.utime(machine.checkout / ".venv" / ".installed", (0, 0))
    result, calls = machine("status", uid=0, tools=("python3",))
    assert result.stderr.startswith("lab: pyproject.toml changed: updating "), result.stderr
    assert calls[-1] == "labctl status"


def test_a_ready_venv_is_used_without_a_word(machine):
    result, calls = machine("status", uid=0, tools=("python3",))
    assert result.stderr == "" and calls == ["labctl status"]


def test_labctl_has_a_version_and_h_for_help():
    from typer.testing import CliRunner

    from labctl.cli import app

    version = CliRunner().invoke(app, ["--version"], prog_name="labctl")
    assert version.exit_code == 0 and version.stdout.strip() == "labctl 0.1.0"
    for args in (["-h"], ["scale", "-h"], ["bundle", "save", "-h"]):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200"}, prog_name="labctl")
        assert result.exit_code == 0 and "Usage: labctl" in result.stdout, args
        assert re.search(r"--help +-h ", result.stdout), result.stdout
