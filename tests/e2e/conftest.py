"""End-to-end fixtures: a real lab on the docker provider, with a name and subnet
of its own so leftovers of an earlier run cannot collide, removed even on failure.

Images come from one setting, LAB_E2E_IMAGES:
  standin (default)  Consul and consul-template are the stand-ins in tests/standins,
                     built here and named in the spec through images.consul and
                     images.consul_template_binary, the keys a user would set;
  real               the spec's own: hashicorp/consul:<version> and the official
                     consul-template release, for machines that reach them.
The tests are the same either way.

LAB_E2E_NAME and LAB_E2E_SUBNET (its first three octets) move the lab, for a developer
who runs the suite on a lab of their own beside the shared one (default labtest on
192.168.63.0/24). LAB_E2E_KEEP=1 leaves the lab up at the end and reuses it at the next
start (`up` again instead of `down` first).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
import yaml

from labctl import standins
from labctl.images import STANDINS, ensure_base_image, standin_consul_ref
from labctl.inventory import connection_data
from labctl.spec import DockerProvider, Versions, load_spec
from tests.conftest import PROJECT_ROOT

IMAGES = os.environ.get("LAB_E2E_IMAGES", "standin")
E2E_LAB = os.environ.get("LAB_E2E_NAME", "labtest")
# Inside VirtualBox's 192.168.56.0/21, unlike the default lab's .56.
E2E_SUBNET = os.environ.get("LAB_E2E_SUBNET", "192.168.63")
KEEP = os.environ.get("LAB_E2E_KEEP") == "1"
BUILD_LOCK = PROJECT_ROOT / ".lab" / "standin-build.lock"


def standin_images(consul_template: str = Versions().consul_template) -> dict[str, str]:
    """Build the stand-ins on the control machine (consul-template's as release
    `consul_template`, the lab's default unless told); return the spec's `images` naming
    them."""
    if IMAGES == "real":
        return {}
    if IMAGES != "standin":
        raise ValueError(f"LAB_E2E_IMAGES={IMAGES!r}: use standin or real")
    # What `labctl up --offline` names (labctl.standins), built here so that `up`
    # times leave the stand-ins' build out.
    ref = standin_consul_ref(Versions().consul)
    client = docker.from_env()
    # One builder at a time (the suite's two workers, a bench beside it): the second
    # finds the base image (a debootstrap on a fresh machine) and the builds cached.
    BUILD_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_base_image(client, DockerProvider().base_image)
        client.images.build(path=str(STANDINS / "consul"), tag=ref, rm=True)
        binary = standins.consul_template_binary(consul_template)
    return {"consul": ref, "consul_template_binary": str(binary)}


def e2e_spec_data(images: dict[str, str]) -> dict:
    return {
        "name": E2E_LAB,
        "provider": "docker",
        "images": images,
        "network": {"subnet": f"{E2E_SUBNET}.0/24"},
        "hosts": [
            {"name": "node1", "address": f"{E2E_SUBNET}.2", "consul": "server",
             "bootstrap": True, "demo": 1},
            {"name": "node2", "address": f"{E2E_SUBNET}.3", "consul": "server", "demo": 1},
            {"name": "node3", "address": f"{E2E_SUBNET}.4", "consul": "client", "lb": True,
             "demo": 1},
        ],
    }  # fmt: skip


def labctl(
    spec: Path, *args: str, timeout: float = 1500, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the real CLI, as a user would (`env`: variables to set for it). On failure, the
    lab's log tails are appended to stderr: `down` removes them, and CI keeps nothing else."""
    result = subprocess.run(
        [sys.executable, "-m", "labctl", "--spec", str(spec), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"COLUMNS": "200"} | (env or {}),
    )
    if result.returncode != 0:
        logs = PROJECT_ROOT / ".lab" / yaml.safe_load(spec.read_text())["name"] / "logs"
        for log in sorted(logs.glob("*")) if logs.is_dir() else []:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            result.stderr += f"\n--- {log.name} (last 40 lines) ---\n{tail}"
    return result


@pytest.fixture(scope="session")
def e2e_images() -> dict[str, str]:
    return standin_images()


def write_spec(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture(scope="session")
def e2e_spec(tmp_path_factory, e2e_images) -> Path:
    return write_spec(tmp_path_factory.mktemp("e2e") / "lab.yaml", e2e_spec_data(e2e_images))


@pytest.fixture(scope="session")
def lab(e2e_spec):
    """The lab, up. Torn down at the end of the session whatever happened."""
    if not KEEP:
        labctl(e2e_spec, "down")  # leftovers of an interrupted earlier run
    result = labctl(e2e_spec, "up")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        spec, _ = load_spec(e2e_spec)
        yield spec, connection_data(spec), result
    finally:
        if not KEEP:
            labctl(e2e_spec, "down")


def refresh_connections(spec, connections: dict) -> None:
    """Ask for the hosts' connection data again, in place, after a host container came
    back: Docker gives it the first free address on its bridge, not always its old one."""
    connections.update(connection_data(spec))


def wait_for(predicate, deadline_s: float, what: str, interval: float = 0.5):
    """Poll `predicate` until it returns a truthy value; fail naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {deadline_s:.0f} s")
        time.sleep(interval)
