"""Existing machines (the ssh road): reach every one before anything changes on any.

One SSH round trip per host, all hosts at once, with the same host-key policy and
known_hosts file as pyinfra (labctl.remote): it records first contacts, refuses a
changed key, checks that a non-root user may sudo without a password, that the machine
holds no other lab (roles/machine.py marks it), and reads `uname -m`. Each host that
fails is one sentence naming it and the cause, instead of pyinfra's "No hosts
remaining!".
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from labctl.platforms import docker_arch
from labctl.remote import RemoteError, SshData, address, run
from roles.contract import LAB_MARK

PROBE_TIMEOUT = 15.0
PROBE = (
    'echo "arch=$(uname -m)"; '
    '[ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null || echo "sudo=no"; '
    f'echo "lab=$(cat {LAB_MARK} 2>/dev/null)"'
)


class UnreachableError(Exception):
    """Some hosts cannot be used; `problems` holds one sentence per host."""

    def __init__(self, problems: list[str]):
        self.problems = [f"{problem}." for problem in problems]
        super().__init__(" ".join(self.problems))


def _probe(name: str, ssh: SshData, lab: str) -> tuple[str | None, str | None]:
    """(architecture, None) for a usable host, else (None, why not: "name (address): cause")."""
    try:
        code, output = run(ssh, PROBE, timeout=PROBE_TIMEOUT)
    except RemoteError as exc:
        return None, f"{name} ({exc.where}): {exc.cause}"
    answers = dict(line.partition("=")[::2] for line in output.splitlines() if "=" in line)
    where = f"{name} ({address(ssh)})"
    if answers.get("sudo") == "no":
        user = ssh.get("ssh_user")
        return None, (
            f"{where}: {user} may not sudo without a password; allow it "
            f"(`{user} ALL=(ALL) NOPASSWD:ALL` in /etc/sudoers.d/) or connect as root"
        )
    if answers.get("lab") not in ("", None, lab):
        return None, (
            f"{where}: it holds lab {answers['lab']}, not {lab}; take that lab down first "
            "(`labctl --spec ITS_SPEC down`) or use other machines"
        )
    if code != 0 or not answers.get("arch"):
        return None, f"{where}: `uname -m` failed ({output.strip()[:120]})"
    return docker_arch(answers["arch"]), None


def reach(connections: dict[str, SshData], lab: str) -> tuple[dict[str, str], list[str]]:
    """Architecture of every host lab `lab` can use, and what is wrong with each other one."""
    with ThreadPoolExecutor(max_workers=min(16, len(connections) or 1)) as pool:
        probed = pool.map(_probe, connections, connections.values(), [lab] * len(connections))
        results = dict(zip(connections, probed, strict=True))
    arches = {name: arch for name, (arch, _) in results.items() if arch is not None}
    problems = [problem for _, problem in results.values() if problem is not None]
    return arches, problems


def reachable_arches(connections: dict[str, SshData], lab: str) -> dict[str, str]:
    """Architecture of every host; UnreachableError when any host cannot be used."""
    arches, problems = reach(connections, lab)
    if problems:
        raise UnreachableError(problems)
    return arches
