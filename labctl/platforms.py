"""CPU architectures, as each tool names them.

The hosts' `uname -m` decides what is pulled or built for them; Docker names the
same architectures differently (platform `linux/amd64`, image `Architecture`), and an
ELF binary names its own in its header.
"""

from __future__ import annotations

import platform
from pathlib import Path

# `uname -m` (and Docker's `Architecture` in `docker info`) -> Docker platform architecture.
UNAME_TO_DOCKER = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armhf": "arm",
    "i686": "386",
    "i386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}
# ELF e_machine -> Docker platform architecture.
ELF_MACHINES = {0x03: "386", 0x28: "arm", 0x3E: "amd64", 0xB7: "arm64", 0x15: "ppc64le"}


def docker_arch(machine: str) -> str:
    """Docker's name for a `uname -m` value (unknown names are kept as they are)."""
    return UNAME_TO_DOCKER.get(machine.strip(), machine.strip())


def control_arch() -> str:
    """This machine's architecture (VirtualBox guests share it: it does not emulate)."""
    return docker_arch(platform.machine())


def elf_arch(path: Path) -> str | None:
    """The architecture an ELF executable is built for; None for anything else (a script)."""
    with path.open("rb") as binary:
        header = binary.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    byte_order = "little" if header[5] == 1 else "big"
    machine = int.from_bytes(header[18:20], byte_order)
    return ELF_MACHINES.get(machine, f"ELF machine {machine:#x}")


def describe(hosts_arch: dict[str, str], wanted: str) -> str:
    """'m1, m2 run amd64' for the hosts of one architecture (for error sentences)."""
    names = [name for name, arch in hosts_arch.items() if arch == wanted]
    return f"{', '.join(names)} {'runs' if len(names) == 1 else 'run'} {wanted}"
