"""Existing machines (the ssh road): reach every one before anything changes on any.

One SSH round trip per host, all hosts at once, with the same host-key policy and
known_hosts file as pyinfra (labctl.remote): it records first contacts, refuses a
changed key, checks that a non-root user may sudo without a password, and reads
`uname -m`. Each host that fails is one sentence naming it and the cause, instead of
pyinfra's "No hosts remaining!".
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from labctl.inventory import SshData
from labctl.platforms import docker_arch
from labctl.remote import RemoteError, address, run

PROBE_TIMEOUT = 15.0
NO_SUDO = "lab-probe: no passwordless sudo"
PROBE = f'uname -m; [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null || echo "{NO_SUDO}"'


class UnreachableError(Exception):
    """Some hosts cannot be used; `problems` holds one sentence per host."""

    def __init__(self, problems: list[str]):
        self.problems = [f"{problem}." for problem in problems]
        super().__init__(" ".join(self.problems))


def _probe(name: str, ssh: SshData) -> tuple[str | None, str | None]:
    """(architecture, None) for a usable host, else (None, why not: "name (address): cause")."""
    try:
        code, output = run(ssh, PROBE, timeout=PROBE_TIMEOUT)
    except RemoteError as exc:
        return None, f"{name} ({exc.where}): {exc.cause}"
    lines = output.strip().splitlines()
    if NO_SUDO in lines:
        user = ssh.get("ssh_user")
        return None, (
            f"{name} ({address(ssh)}): {user} may not sudo without a password; allow it "
            f"(`{user} ALL=(ALL) NOPASSWD:ALL` in /etc/sudoers.d/) or connect as root"
        )
    if code != 0 or not lines:
        return None, f"{name} ({address(ssh)}): `uname -m` failed ({output.strip()[:120]})"
    return docker_arch(lines[0]), None


def reach(connections: dict[str, SshData]) -> tuple[dict[str, str], list[str]]:
    """Architecture of every host that can be used, and what is wrong with each other one."""
    with ThreadPoolExecutor(max_workers=min(16, len(connections) or 1)) as pool:
        results = dict(
            zip(connections, pool.map(_probe, connections, connections.values()), strict=True)
        )
    arches = {name: arch for name, (arch, _) in results.items() if arch is not None}
    problems = [problem for _, problem in results.values() if problem is not None]
    return arches, problems


def hosts_arch(connections: dict[str, SshData]) -> dict[str, str]:
    """Architecture of every host; UnreachableError when any host cannot be used."""
    arches, problems = reach(connections)
    if problems:
        raise UnreachableError(problems)
    return arches
