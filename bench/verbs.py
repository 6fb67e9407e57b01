"""Running labctl's verbs from a checkout, timed: wall time, the CPU this machine spent
(labctl and everything it started: pyinfra, Vagrant, ssh), the load average before."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = "labspeed"
SUBNET_PREFIX = "192.168.81"
# What the bench builds by hand is tagged apart from the lead's `lab/*` images.
IMAGE_NAMESPACE = os.environ.get("LAB_IMAGE_NAMESPACE") or "dev-speed"
# For this process too: the stand-ins it builds (tests.e2e.conftest) are tagged under it.
os.environ["LAB_IMAGE_NAMESPACE"] = IMAGE_NAMESPACE


class VerbFailed(Exception):
    """A verb exited non-zero; the message holds its stderr."""


@dataclass
class Timed:
    seconds: float
    cpu: float  # user + system seconds of the verb's process tree
    load: float  # 1-minute load average just before the verb
    output: str  # stderr (labctl's progress and summary)


def labctl(spec: Path, *args: str, checkout: Path = ROOT, check: bool = True) -> Timed:
    """`python -m labctl --spec SPEC ARGS` run in `checkout` (its own labctl, roles, .lab)."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "labctl", "--spec", str(spec), *args],
        cwd=checkout, capture_output=True, text=True,
        env=os.environ | {"COLUMNS": "200"},
    )  # fmt: skip
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if check and result.returncode != 0:
        raise VerbFailed(f"labctl {' '.join(args)} failed in {checkout}:\n{result.stderr}")
    return Timed(elapsed, cpu, load, result.stderr)


def changes(output: str) -> int:
    match = re.search(r"(\d+) changed", output)
    return int(match.group(1)) if match else 0


def spec_data(hosts: int, images: dict, prefix: str = SUBNET_PREFIX, name: str = LAB) -> dict:
    """The seed's three hosts (two servers, the LB on a client), then client hosts: each
    added host is one more web server with its demo instance (the seed's Web Server5)."""
    entries = [
        {"name": "node1", "address": f"{prefix}.2", "consul": "server", "bootstrap": True,
         "demo": 1},
        {"name": "node2", "address": f"{prefix}.3", "consul": "server", "demo": 1},
        {"name": "node3", "address": f"{prefix}.4", "consul": "client", "lb": True, "demo": 1},
    ]  # fmt: skip
    for n in range(4, hosts + 1):
        entries.append(
            {"name": f"node{n}", "address": f"{prefix}.{n + 1}", "consul": "client", "demo": 1}
        )
    return {
        "name": name,
        "provider": "docker",
        "network": {"subnet": f"{prefix}.0/24"},
        "images": images,
        "hosts": entries[:hosts],
    }
