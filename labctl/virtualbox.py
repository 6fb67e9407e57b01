"""The virtualbox road: which VirtualBox the installed Vagrant can drive, which box the
control machine can run, and VM names that cannot clash across checkouts.

Vagrant refuses a VirtualBox it has no driver for (`VirtualBoxInvalidVersion`) only at
`vagrant up`; labctl checks the pair first and names the Vagrant release to install.
"""

from __future__ import annotations

import hashlib
import platform
import re
import shutil
import subprocess

from labctl.spec import PROJECT_ROOT, Box, LabSpec

# The first Vagrant release with a VirtualBox driver for each VirtualBox minor version:
# the driver_map in plugins/providers/virtualbox/driver/meta.rb at every release tag of
# hashicorp/vagrant, and its CHANGELOG.md ("Add support for VirtualBox 7.0" in 2.3.2,
# GH-12947; "7.1" in 2.4.2, GH-13513; "7.2" in 2.4.9, GH-13709). Vagrant never drops a
# driver, so a release supports every minor whose first release it is at or after.
FIRST_VAGRANT_FOR_VIRTUALBOX: dict[tuple[int, int], tuple[int, int, int]] = {
    (5, 0): (1, 7, 3),
    (5, 1): (1, 8, 5),
    (5, 2): (2, 0, 1),
    (6, 0): (2, 2, 1),
    (6, 1): (2, 2, 7),
    (7, 0): (2, 3, 2),
    (7, 1): (2, 4, 2),
    (7, 2): (2, 4, 9),
}
# The newest Vagrant release the table above was read from: a newer Vagrant may know a
# VirtualBox the table does not, so labctl then leaves the verdict to Vagrant.
NEWEST_KNOWN_VAGRANT = (2, 4, 9)
VAGRANT_DOWNLOADS = "https://developer.hashicorp.com/vagrant/install"

# What the control machine's CPU is called (platform.machine()) -> the box architecture
# VirtualBox runs there: it virtualises, it does not emulate, so guests match the host.
ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "arm64": "arm64", "aarch64": "arm64"}
# VirtualBox runs on Arm hosts (Apple silicon) from 7.1 on; 7.0's Arm build was a
# developer preview (chef/bento#1582: "virtualbox 7.1 finally added apple silicon support").
FIRST_VIRTUALBOX_FOR_ARCHITECTURE = {"amd64": (0, 0), "arm64": (7, 1)}

VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The first MAJOR.MINOR.PATCH in a tool's output (`7.1.4r165100`, `Vagrant 2.3.4`)."""
    match = VERSION_RE.search(text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _version_output(command: list[str]) -> str | None:
    """What `command` prints, or None when the tool is not installed or fails to run."""
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def installed_virtualbox() -> tuple[int, int, int] | None:
    """`VBoxManage --version`, as Vagrant reads it (meta.rb `read_version`)."""
    output = _version_output(["VBoxManage", "--version"])
    # A VirtualBox without its kernel module prints warnings before the version.
    lines = [line for line in (output or "").splitlines() if VERSION_RE.match(line.strip())]
    return parse_version(lines[-1]) if lines else None


def installed_vagrant() -> tuple[int, int, int] | None:
    return parse_version(_version_output(["vagrant", "--version"]) or "")


def compatibility_problem(
    virtualbox: tuple[int, int, int], vagrant: tuple[int, int, int], architecture: str
) -> str | None:
    """One sentence naming what to install when this Vagrant cannot drive this VirtualBox
    (or this VirtualBox cannot run this machine's guests); None when the pair fits."""
    minor = virtualbox[:2]
    needed_for_arch = FIRST_VIRTUALBOX_FOR_ARCHITECTURE[architecture]
    if minor < needed_for_arch:
        return (
            f"VirtualBox {_dotted(virtualbox)} cannot run {architecture} guests; "
            f"install VirtualBox {_dotted(needed_for_arch)} or later (virtualbox.org) and "
            f"Vagrant {_dotted(FIRST_VAGRANT_FOR_VIRTUALBOX[needed_for_arch])} or later "
            f"from HashiCorp's packages ({VAGRANT_DOWNLOADS})."
        )
    first = FIRST_VAGRANT_FOR_VIRTUALBOX.get(minor)
    if first is None:
        newest = max(FIRST_VAGRANT_FOR_VIRTUALBOX)
        if minor < newest or vagrant > NEWEST_KNOWN_VAGRANT:
            return None  # older than any driver labctl lists, or a Vagrant newer than it
        return (
            f"VirtualBox {_dotted(virtualbox)} is newer than any VirtualBox Vagrant "
            f"{_dotted(NEWEST_KNOWN_VAGRANT)} supports (up to {_dotted(newest)}); install "
            f"the newest Vagrant from HashiCorp's packages ({VAGRANT_DOWNLOADS}) if it lists "
            f"VirtualBox {_dotted(minor)}, or VirtualBox {_dotted(newest)}."
        )
    if vagrant >= first:
        return None
    known = [m for m, release in FIRST_VAGRANT_FOR_VIRTUALBOX.items() if release <= vagrant]
    return (
        f"VirtualBox {_dotted(virtualbox)} needs Vagrant {_dotted(first)} or later, but "
        f"Vagrant {_dotted(vagrant)} knows VirtualBox only up to {_dotted(max(known))}; "
        f"install Vagrant {_dotted(first)} or later from HashiCorp's packages "
        f"({VAGRANT_DOWNLOADS}), or VirtualBox {_dotted(max(known))}."
    )


def host_architecture(machine: str | None = None) -> str | None:
    """The box architecture for this control machine (amd64, arm64), None if neither."""
    return ARCHITECTURES.get((machine or platform.machine()).lower())


def installed_problem() -> str | None:
    """The installed VirtualBox against the installed Vagrant and this machine."""
    architecture = host_architecture()
    if architecture is None:
        return (
            f"VirtualBox runs on x86_64 and arm64 machines, not on {platform.machine()}; "
            "use provider: docker or provider: ssh."
        )
    virtualbox = installed_virtualbox()
    if virtualbox is None:
        return (
            "`VBoxManage --version` printed no version; reinstall VirtualBox, or load its "
            "kernel module (sudo /sbin/vboxconfig) if it says the module is missing."
        )
    vagrant = installed_vagrant()
    if vagrant is None:
        return None  # missing Vagrant is reported (and installed) as a tool of its own
    return compatibility_problem(virtualbox, vagrant, architecture)


def box_for(spec: LabSpec, machine: str | None = None) -> Box | None:
    """The spec's pinned box for this control machine's architecture."""
    architecture = host_architecture(machine)
    return getattr(spec.virtualbox.boxes, architecture) if architecture else None


def checkout_id() -> str:
    """Eight hex digits unique to this checkout's path."""
    return hashlib.sha256(str(PROJECT_ROOT).encode()).hexdigest()[:8]


def vm_name(spec: LabSpec, host: str) -> str:
    """The VirtualBox VM name. VirtualBox names are global per user, so two checkouts of
    a lab with the same name would clash on `<lab>-<host>`: the checkout's ID is added."""
    return f"{spec.name}-{host}-{checkout_id()}"
