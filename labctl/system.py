"""What the control machine has, and setting up what it lacks.

`labctl doctor` reports; `labctl doctor --fix` and `labctl up` install what is
missing with apt when run as root, and start a Docker engine that does not answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

from labctl import virtualbox

DOCKERD_LOG = Path("/var/log/dockerd.log")
ENGINE_START_TIMEOUT = 60.0


class PrerequisiteError(Exception):
    """The control machine lacks something; the message says what and how to fix it."""


@dataclass(frozen=True)
class Tool:
    name: str
    command: str
    apt_package: str
    needed_for: str


VAGRANT = Tool("Vagrant", "vagrant", "vagrant", "the virtualbox and docker providers")
DOCKER_CLI = Tool("Docker", "docker", "docker.io", "the docker provider and images")
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


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(*packages: str) -> None:
    """Install Debian/Ubuntu packages; raise PrerequisiteError naming the fix on failure."""
    if not can_install():
        raise PrerequisiteError(
            f"{', '.join(packages)} missing and this is not root on a Debian/Ubuntu machine; "
            f"install them yourself (sudo apt-get install {' '.join(packages)}) or rerun with sudo."
        )
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise PrerequisiteError(
                f"`{' '.join(command)}` failed ({last}); fix apt on this machine and retry."
            )


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
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "no Docker engine answers; start it (sudo systemctl start docker) and retry."
        )
    if _systemd_running():
        subprocess.run(["systemctl", "start", "docker"], check=False, capture_output=True)
    else:
        # Containers and CI sandboxes have no init system: run the engine ourselves.
        with DOCKERD_LOG.open("ab") as log:
            subprocess.Popen(
                ["dockerd"], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                start_new_session=True,
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
    if engine() is not None or (shutil.which("dockerd") and os.geteuid() == 0):
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
