"""Existing machines for the ssh road, made without Vagrant.

Each machine is a container from `templates/host` (the docker provider's host image:
systemd as PID 1, sshd, no Docker until the lab installs it), started with the same
flags Vagrant's docker provider uses (labctl.vagrant.DOCKER_HOST_FLAGS and a volume on
/var/lib/docker), on a Docker network of its own. Then this module plays cloud-init:
it installs its own key for root, and creates `admin` with another key and
passwordless sudo (the usual cloud image user). From then on the lab reaches the
machines over SSH only, exactly as it reaches machines in a datacenter.

Everything carries the suite's label, SUITE_LABEL=<pool name>.<checkout id> (never the
lab's own label, which `labctl down` sweeps on the control machine), so `remove()` finds
it all, also after an interrupted run, and nothing else (testbed/ownership.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from labctl.images.tags import recipe_tag
from labctl.spec import PROJECT_ROOT
from labctl.vagrant import DOCKER_HOST_FLAGS
from testbed.ownership import SUITE_LABEL, owner

HOST_RECIPE = PROJECT_ROOT / "templates" / "host"
BASE_IMAGE = "debian:bookworm"
SSH_READY_TIMEOUT = 90.0
SUDO_USER = "admin"


def image_namespace() -> str:
    """Where test-built images are tagged (LAB_IMAGE_NAMESPACE, as labctl reads it)."""
    return os.environ.get("LAB_IMAGE_NAMESPACE", "lab")


def docker(*args: str, check: bool = True, timeout: float = 600) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result.stdout


def keypair(directory: Path, name: str) -> Path:
    """A fresh ed25519 key pair (`name`, `name`.pub); returns the private key's path."""
    key = directory / name
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
            check=True,
        )
    return key


@dataclass(frozen=True)
class Machine:
    name: str  # hostname, and the lab's host name for it
    address: str
    container: str


class MachinePool:
    """`count` machines named m1..mN at <prefix>.2.. on network <pool>-net (<prefix>.0/24)."""

    def __init__(self, pool: str, prefix: str, count: int, keys_dir: Path):
        self.pool = pool
        self.prefix = prefix
        self.network = f"{pool}-net"
        self.keys_dir = keys_dir
        keys_dir.mkdir(parents=True, exist_ok=True)
        self.machines = [
            Machine(f"m{i}", f"{prefix}.{i + 1}", f"{pool}-m{i}") for i in range(1, count + 1)
        ]
        self.root_key = keypair(keys_dir, "root_ed25519")
        self.admin_key = keypair(keys_dir, "admin_ed25519")

    @property
    def gateway(self) -> str:
        """The control machine's own address on the machines' network."""
        return f"{self.prefix}.1"

    def image(self) -> str:
        ref = f"{image_namespace()}/ssh-host:{recipe_tag(HOST_RECIPE, BASE_IMAGE)}"
        if not docker("images", "-q", ref).strip():
            pubkey = self.root_key.with_suffix(".pub").read_text().strip()
            docker(
                "build", "-q", "-t", ref, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                "--build-arg", f"VAGRANT_PUBKEY={pubkey}", str(HOST_RECIPE),
            )  # fmt: skip
        return ref

    def create(self) -> None:
        """Start every machine and give it its users and keys; wait for sshd."""
        self.remove()
        image = self.image()
        label = f"{SUITE_LABEL}={owner(self.pool)}"
        docker(
            "network", "create", f"--subnet={self.prefix}.0/24", f"--gateway={self.gateway}",
            f"--label={label}", self.network,
        )  # fmt: skip
        for machine in self.machines:
            self.start(machine, image)
        for machine in self.machines:
            self.wait_for_ssh(machine)

    def start(self, machine: Machine, image: str) -> None:
        label = f"{SUITE_LABEL}={owner(self.pool)}"
        docker(
            "run", "-d", f"--name={machine.container}", f"--hostname={machine.name}",
            f"--network={self.network}", f"--ip={machine.address}", f"--label={label}",
            *DOCKER_HOST_FLAGS,
            "--mount", f"type=volume,src={machine.container}-var-lib-docker,"
            f"dst=/var/lib/docker,volume-label={label}",
            image,
        )  # fmt: skip
        self.cloud_init(machine)

    def cloud_init(self, machine: Machine) -> None:
        """What a cloud image's first boot does: root's key; `admin` with sudo and a key."""
        root_pub = self.root_key.with_suffix(".pub").read_text().strip()
        admin_pub = self.admin_key.with_suffix(".pub").read_text().strip()
        script = (
            "set -e; "
            f"install -d -m 700 /root/.ssh && echo '{root_pub}' > /root/.ssh/authorized_keys; "
            f"id {SUDO_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {SUDO_USER}; "
            f"echo '{SUDO_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{SUDO_USER}; "
            f"install -d -m 700 -o {SUDO_USER} -g {SUDO_USER} /home/{SUDO_USER}/.ssh; "
            f"echo '{admin_pub}' > /home/{SUDO_USER}/.ssh/authorized_keys; "
            f"chown {SUDO_USER}: /home/{SUDO_USER}/.ssh/authorized_keys"
        )
        docker("exec", machine.container, "sh", "-c", script)

    def wait_for_ssh(self, machine: Machine) -> None:
        deadline = time.monotonic() + SSH_READY_TIMEOUT
        while True:
            try:
                with socket.create_connection((machine.address, 22), timeout=2) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{machine.name}: sshd did not answer within the deadline")
            time.sleep(0.5)

    def new_host_keys(self, machine: Machine) -> None:
        """What rebuilding a machine at the same address does to its SSH identity."""
        docker(
            "exec", machine.container, "sh", "-c",
            "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A && systemctl restart ssh",
        )  # fmt: skip
        self.wait_for_ssh(machine)

    def exec(self, machine: Machine, command: str, check: bool = True) -> str:
        return docker("exec", machine.container, "sh", "-c", command, check=check)

    def remove(self) -> None:
        """Every container, volume and network of the pool (also of an interrupted run)."""
        label = f"label={SUITE_LABEL}={owner(self.pool)}"
        containers = docker("ps", "-aq", "--filter", label).split()
        if containers:
            docker("rm", "-f", "-v", *containers)
        volumes = docker("volume", "ls", "-q", "--filter", label).split()
        if volumes:
            docker("volume", "rm", "-f", *volumes)
        networks = docker("network", "ls", "-q", "--filter", label).split()
        if networks:
            docker("network", "rm", *networks)
