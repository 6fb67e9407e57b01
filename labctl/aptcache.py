"""An apt cache on the control machine, so the hosts download each package once.

Every host installs the Docker engine with apt: about 65 MB of packages and 10 MB of
indexes, each host from the same mirror, at the same moment. With `apt.cache: auto`
(the default) labctl runs Debian's apt-cacher-ng for the hosts Vagrant makes, as a
plain caching proxy: its own configuration (no remapping, so each request goes to the
mirror the host's sources name, a local one included) and its cache in
~/.cache/labctl/apt-cacher-ng, kept from lab to lab. It listens only where the hosts
reach this machine: the Docker engine's default bridge (every docker-provider host is
on it) and, for VirtualBox, the lab's host-only adapter (the subnet's first address).
An apt-cacher-ng that already answers there (one the user runs) is used as it is.

The hosts get the proxy as `http_proxy` for the lab's own apt runs only (pyinfra's
`_env`, roles/docker.py): nothing is written on a host, so nothing is left to remove,
and its apt works as before once the cache is gone. The package's own system service,
which listens on every address, is disabled when labctl installs the package (as
./lab does with nginx). On the ssh road `auto` means none (existing machines may not
reach this one); `apt.cache: http://...` names a proxy they do reach, on any road.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from labctl import system
from labctl.paths import CACHE, labs_with_state
from labctl.spec import LabSpec

PORT = 3142
DAEMON = "/usr/sbin/apt-cacher-ng"
TOOL = system.Tool("apt-cacher-ng", "apt-cacher-ng", "apt-cacher-ng", "the hosts' apt cache")
DIRECTORY = CACHE / "apt-cacher-ng"
START_TIMEOUT = 15.0
REPORT_PAGE = "acng-report.html"

Report = Callable[[str], None]


def answers(address: str) -> bool:
    """An apt-cacher-ng serves its report page at address:PORT."""
    import httpx  # here: `status` and `down` start without it

    try:
        response = httpx.get(f"http://{address}:{PORT}/{REPORT_PAGE}", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and "Apt-Cacher" in response.text


def bridge_gateway() -> str | None:
    """This machine's address on the Docker engine's default bridge."""
    client = system.engine()
    if client is None:
        return None
    configs = client.api.inspect_network("bridge").get("IPAM", {}).get("Config") or []
    return next((c["Gateway"] for c in configs if c.get("Gateway")), None)


def listen_address(spec: LabSpec, provider: str) -> str | None:
    if provider == "docker":
        return bridge_gateway()
    if provider == "virtualbox":
        return str(spec.gateway)
    return None


def installed() -> bool:
    return Path(DAEMON).is_file() or system.have(TOOL)


def install() -> None:
    """The Debian package, with its system service (every address) stopped and disabled."""
    system.apt_install(TOOL.apt_package)
    if Path("/run/systemd/system").is_dir():
        command = ["systemctl", "disable", "--now", "apt-cacher-ng"]
        subprocess.run(system.as_root(command), capture_output=True)
    elif Path("/etc/init.d/apt-cacher-ng").exists():
        subprocess.run(system.as_root(["/etc/init.d/apt-cacher-ng", "stop"]), capture_output=True)


def _bound() -> list[str]:
    try:
        return (DIRECTORY / "bind").read_text().split()
    except OSError:
        return []


def _stop_ours(wait: bool = True) -> bool:
    """Stop labctl's own apt-cacher-ng; whether one was running. At SIGTERM it closes its
    port and removes its pid file at once, then takes about 1.5 s more to exit; without
    `wait` (`down`) that passes on its own, since a new one may start meanwhile."""
    try:
        pid = int((DIRECTORY / "pid").read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + (5 if wait else 0)
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    return True


def stop_after_the_last_lab() -> str | None:
    """labctl's apt-cacher-ng stops with the last lab of this checkout (`down`); its
    cache stays for the next `up`. Returns what was stopped, for `down`'s list."""
    if labs_with_state() or not _stop_ours(wait=False):
        return None
    return f"the hosts' apt cache (apt-cacher-ng; its files stay in {DIRECTORY})"


def _start(addresses: list[str]) -> None:
    """labctl's own apt-cacher-ng, listening on `addresses` only."""
    for name in ("cache", "log"):
        (DIRECTORY / name).mkdir(parents=True, exist_ok=True)
    (DIRECTORY / "acng.conf").write_text(
        f"CacheDir: {DIRECTORY / 'cache'}\n"
        f"LogDir: {DIRECTORY / 'log'}\n"
        "SupportDir: /usr/lib/apt-cacher-ng\n"
        f"Port: {PORT}\n"
        f"BindAddress: {' '.join(addresses)}\n"
        f"ReportPage: {REPORT_PAGE}\n"
        # Volatile files (indexes) are checked with the mirror at most every 4 minutes.
        "ExThreshold: 4\n"
    )
    (DIRECTORY / "bind").write_text("\n".join(addresses) + "\n")
    daemon = DAEMON if Path(DAEMON).is_file() else shutil.which("apt-cacher-ng") or DAEMON
    subprocess.run(
        [daemon, "-c", str(DIRECTORY), "ForeGround=0", f"pidfile={DIRECTORY / 'pid'}",
         f"SocketPath={DIRECTORY / 'socket'}"],
        stdin=subprocess.DEVNULL, capture_output=True, check=False,
    )  # fmt: skip


def ensure(spec: LabSpec, provider: str, report: Report) -> str | None:
    """The apt proxy URL the hosts use (None: they fetch from their mirror directly),
    starting labctl's apt-cacher-ng where `auto` wants one."""
    if spec.apt.cache != "auto":
        return None if spec.apt.cache == "none" else spec.apt.cache.rstrip("/")
    address = listen_address(spec, provider)
    if address is None:
        return None
    url = f"http://{address}:{PORT}"
    if answers(address):
        return url
    try:
        if not installed():
            report("installing apt-cacher-ng (the hosts' apt cache)")
            install()
    except system.PrerequisiteError as exc:
        report(f"no apt cache: {exc}")
        return None
    # Still listening where it should for other labs (addresses still present).
    addresses = [a for a in _bound() if a != address and answers(a)] + [address]
    _stop_ours()
    _start(addresses)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if answers(address):
            report(f"apt cache: apt-cacher-ng at {url}")
            return url
        time.sleep(0.2)
    report(f"no apt cache: apt-cacher-ng did not answer at {url}; see {DIRECTORY / 'log'}")
    return None
