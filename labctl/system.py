"""What the control machine has, and setting up what it lacks.

`labctl doctor` reports; `labctl doctor --fix` and `labctl up` install what is
missing with apt, and start a Docker engine that does not answer: directly as root,
through `sudo -n` for a user who may sudo (a machine used as root often has no sudo).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import docker
from docker.errors import DockerException

from labctl import virtualbox

DOCKERD_LOG = Path("/var/log/dockerd.log")
ENGINE_START_TIMEOUT = 60.0
DOCKER_SOCKET = Path("/var/run/docker.sock")
# What a labctl run again through sudo keeps of its environment.
SUDO_KEPT_ENV = ("LAB_SPEC", "LAB_IMAGE_NAMESPACE", "LAB_DEBIAN_MIRROR", "COLUMNS")


class PrerequisiteError(Exception):
    """The control machine lacks something; the message says what and how to fix it."""


@dataclass(frozen=True)
class Tool:
    name: str
    command: str
    apt_package: str
    needed_for: str


VAGRANT = Tool("Vagrant", "vagrant", "vagrant", "the virtualbox and docker providers")
DOCKER_CLI = Tool("Docker", "docker", "docker.io", "the docker provider; images.delivery: control")
DEBOOTSTRAP = Tool("debootstrap", "debootstrap", "debootstrap", "a base image without a registry")
VIRTUALBOX = Tool("VirtualBox", "VBoxManage", "virtualbox", "the virtualbox provider")


def have(tool: Tool) -> bool:
    return shutil.which(tool.command) is not None


def engine() -> docker.DockerClient | None:
    """A client for the local Docker engine, or None when no engine answers."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except DockerException:
        return None


def is_root() -> bool:
    return os.geteuid() == 0


def can_sudo() -> bool:
    return not is_root() and shutil.which("sudo") is not None


def as_root(command: list[str]) -> list[str]:
    """`command` as root runs it: itself for root, through `sudo -n` for a user with sudo
    (never prompting under labctl's progress line: `sudo -v` first remembers a password)."""
    return command if is_root() else ["sudo", "-n", "--preserve-env=DEBIAN_FRONTEND", *command]


def can_install() -> bool:
    return shutil.which("apt-get") is not None and (is_root() or can_sudo())


def _root_failure(command: list[str], output: str) -> str | None:
    if not is_root() and "password is required" in output:
        return (
            f"`{' '.join(command)}` needs root and sudo asks for a password; run `sudo -v` "
            "first (sudo then remembers it for a while) and retry, or run as root."
        )
    return None


def apt_install(*packages: str) -> None:
    """Install Debian/Ubuntu packages; raise PrerequisiteError naming the fix on failure."""
    if not can_install():
        raise PrerequisiteError(
            f"{', '.join(packages)} missing, and this machine has no apt-get or no way to become "
            f"root (no sudo); install them yourself (apt-get install {' '.join(packages)} as "
            "root) and retry."
        )
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(as_root(command), env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise PrerequisiteError(
                _root_failure(command, result.stderr)
                or f"`{' '.join(command)}` failed ({last}); fix apt on this machine and retry."
            )


def engine_refuses_user() -> bool:
    """True where a Docker engine runs but this user may not use it (root and the docker
    group only, Docker's default)."""
    return (
        not is_root()
        and not os.environ.get("DOCKER_HOST")
        and DOCKER_SOCKET.exists()
        and not os.access(DOCKER_SOCKET, os.R_OK | os.W_OK)
    )


def rerun_as_root(argv: list[str]) -> NoReturn:
    """Run this labctl command again as root, through sudo (which may ask for a password)."""
    kept = ",".join(SUDO_KEPT_ENV)
    os.execvp("sudo", ["sudo", f"--preserve-env={kept}", sys.executable, "-m", "labctl", *argv])


def ensure_tools(*tools: Tool) -> list[str]:
    """Install the tools that are missing; return what was installed."""
    missing = [t for t in tools if not have(t)]
    if missing:
        apt_install(*(t.apt_package for t in missing))
    return [t.name for t in missing]


def ensure_engine() -> docker.DockerClient:
    """Return a client for a running local Docker engine, installing/starting it if allowed."""
    client = engine()
    if client is not None:
        return client
    if not shutil.which("dockerd"):
        ensure_tools(Tool("Docker engine", "dockerd", "docker.io", "the docker provider"))
    if not (is_root() or can_sudo()):
        raise PrerequisiteError(
            "no Docker engine answers; start it as root (systemctl start docker) and retry."
        )
    if _systemd_running():
        result = subprocess.run(
            as_root(["systemctl", "start", "docker"]), capture_output=True, text=True
        )
        if problem := _root_failure(["systemctl", "start", "docker"], result.stderr):
            raise PrerequisiteError(problem)
    else:
        # Containers and CI sandboxes have no init system: run the engine ourselves,
        # its log where root writes it.
        subprocess.Popen(
            as_root(["sh", "-c", f"exec dockerd >>{DOCKERD_LOG} 2>&1"]),
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while time.monotonic() < deadline:
        client = engine()
        if client is not None:
            return client
        time.sleep(0.5)
    raise PrerequisiteError(
        f"started dockerd but it did not answer within {ENGINE_START_TIMEOUT:.0f} s; "
        f"read {DOCKERD_LOG} (or journalctl -u docker) for the cause."
    )


def _systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def choose_provider(requested: str) -> str:
    """Resolve `auto`: VirtualBox when installed, else docker when an engine answers."""
    if requested != "auto":
        return requested
    if have(VIRTUALBOX):
        return "virtualbox"
    if engine() is not None or (shutil.which("dockerd") and (is_root() or can_sudo())):
        return "docker"
    if can_install():
        return "docker"  # `up` installs the engine
    raise PrerequisiteError(
        "provider auto found neither VirtualBox nor a Docker engine; install VirtualBox "
        "(provider virtualbox) or Docker (sudo apt-get install docker.io, provider docker)."
    )


def ensure_provider(provider: str) -> None:
    """Make sure the provider's tools are present (installing them when allowed)."""
    if provider == "virtualbox":
        if not have(VIRTUALBOX):
            raise PrerequisiteError(
                "provider virtualbox needs VirtualBox, which is not installed; install it from "
                "virtualbox.org, or set provider: docker in the lab spec."
            )
        ensure_tools(VAGRANT)
        # Vagrant only finds out at `vagrant up` that it has no driver for this VirtualBox.
        problem = virtualbox.installed_problem()
        if problem:
            raise PrerequisiteError(problem)
    elif provider == "docker":
        ensure_tools(VAGRANT)
        ensure_engine()
