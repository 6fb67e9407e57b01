"""End-to-end fixtures: a real lab on the docker provider, with a name and subnet of the
suite's own (tests/support/suite_labs.py), removed even on failure. Before any lab of the
suite is made, `start_lab` checks that nothing on its way is someone else's (naming it in
one sentence if so), removes the suite's own leftovers of an interrupted earlier run, and
marks the lab's local state as the suite's.

Images come from one setting, LAB_E2E_IMAGES (testbed/standin_build.py): the
stand-ins in tests/standins (default) or the spec's own. The tests are the same either way.

LAB_E2E_NAME and LAB_E2E_SUBNET (the first three octets of the first of its eight /24
subnets) move every lab of the suite (default: e2e, e2e-ssh, ... on 192.168.240.0/24 to
192.168.247.0/24; see docs/testing.md). LAB_E2E_KEEP=1 leaves the shared lab up at the
end and reuses it at the next start (`up` again instead of `down` first).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import docker
import pytest
import yaml

from labctl.connections import connection_data
from labctl.images.tags import IMAGE_NAMESPACE_ENV, image_namespace
from labctl.paths import docker_network_name, host_container_name, lab_dir
from labctl.spec import LabSpec, load_spec
from roles.contract import LAB_LABEL
from testbed.standin_build import standin_images
from tests.conftest import PROJECT_ROOT
from tests.support.suite_labs import BASE_NAME, LABS, SuiteLab, mark, refuse_clashes

E2E_SUBNET = LABS.shared.prefix
KEEP = os.environ.get("LAB_E2E_KEEP") == "1"


def pytest_configure(config):
    """The images the suite's labs build and load go to a namespace of the suite's own
    (its base name, `e2e/...`; LAB_IMAGE_NAMESPACE says otherwise), apart from those of a
    person's labs (`lab/...`), so that removing its images touches none of theirs."""
    os.environ.setdefault(IMAGE_NAMESPACE_ENV, BASE_NAME)


def suites_image(ref: str, tags_before: set[str]) -> bool:
    """An image the suite may remove: in its namespace, or brought by it (not on the
    engine before its shared lab came up: e.g. the real Consul image it pulled)."""
    namespace = image_namespace()
    return ref.startswith((f"{namespace}/", f"{namespace}-standin/")) or ref not in tags_before


def e2e_spec_data(images: dict[str, str], lab: SuiteLab = LABS.shared) -> dict:
    return {
        "name": lab.name,
        "provider": "docker",
        "images": images,
        "network": {"subnet": str(lab.subnet)},
        "hosts": [
            {"name": "node1", "address": lab.address(2), "consul": "server",
             "bootstrap": True, "demo": 1},
            {"name": "node2", "address": lab.address(3), "consul": "server", "demo": 1},
            {"name": "node3", "address": lab.address(4), "consul": "client", "lb": True,
             "demo": 1},
        ],
    }  # fmt: skip


def noimage_spec_data(lab: SuiteLab = LABS.noimage) -> dict:
    """The suite's lab with a Consul image no registry serves."""
    return e2e_spec_data({"consul": "registry.invalid/hashicorp/consul:9.9.9"}, lab)


# test_90 takes the suite's images off this machine's engine for a while, to show that
# `up --bundle` needs nothing else. A labctl run of the other pytest-xdist worker that
# resolved images meanwhile would build them anew: the same tags with other IDs, which
# the bundle then puts back, so that worker's next `apply` would find every image
# changed. Every labctl run holds this lock shared; test_90 holds it alone meanwhile.
IMAGES_LOCK = PROJECT_ROOT / ".lab" / "suite-images.lock"
_images_away = False


@contextmanager
def _images_lock(mode: int) -> Iterator[None]:
    """IMAGES_LOCK held in `mode` (fcntl.LOCK_SH or LOCK_EX)."""
    IMAGES_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with IMAGES_LOCK.open("a") as lock:
        fcntl.flock(lock, mode)
        yield


@contextmanager
def images_taken_away() -> Iterator[None]:
    """While held, no labctl run of another worker of the suite starts (this worker's do)."""
    global _images_away
    with _images_lock(fcntl.LOCK_EX):
        _images_away = True
        try:
            yield
        finally:
            _images_away = False


def labctl(
    spec: Path, *args: str, timeout: float = 1500, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the real CLI, as a user would (`env`: variables to set for it). On failure, the
    lab's log tails are appended to stderr: `down` removes them, and CI keeps nothing else."""
    # This worker's own runs go on while it holds the images away.
    with nullcontext() if _images_away else _images_lock(fcntl.LOCK_SH):
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


def start_lab(spec_file: Path, kin: tuple[str, ...] = (), leftovers: bool = True) -> LabSpec:
    """Before a lab of the suite is made: stop, naming it in one sentence, if anything on
    its way is not the suite's (`kin`: suite labs whose things it meets); remove the lab's
    leftovers of an interrupted earlier run (`leftovers`), which are the suite's own, as
    just checked; mark its local state as the suite's. Nothing else is touched."""
    spec, _ = load_spec(spec_file)
    refuse_clashes(spec, docker.from_env(), kin)
    if leftovers:
        down = labctl(spec_file, "down", timeout=600)
        assert down.returncode == 0, f"the leftovers of {spec.name}: {down.stderr}"
    mark(spec)
    return spec


@contextmanager
def lab_up(
    spec_file: Path, kin: tuple[str, ...] = (), keep: bool = False
) -> Iterator[tuple[LabSpec, subprocess.CompletedProcess]]:
    """A lab of the suite, checked and marked (start_lab), then `up`: (its spec, the `up`).
    Taken down at the end whatever happened, unless `keep` (LAB_E2E_KEEP: then its
    leftovers are not removed first either, and `up` reuses it)."""
    start_lab(spec_file, kin, leftovers=not keep)
    result = labctl(spec_file, "up")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        spec, _ = load_spec(spec_file)
        yield spec, result
    finally:
        if not keep:
            finish_lab(spec_file)


def finish_lab(spec_file: Path) -> None:
    """`down --purge`, which removes the lab with its mark and its host boxes (the
    suite's own: docs/boxes.md); a failure is reported."""
    down = labctl(spec_file, "down", "--purge", timeout=600)
    assert down.returncode == 0, down.stderr


def assert_nothing_left(spec: LabSpec) -> None:
    """After `down`: no container, volume or network of the lab, no host container, no
    local state."""
    client = docker.from_env()
    label = {"label": f"{LAB_LABEL}={spec.name}"}
    assert client.containers.list(all=True, filters=label) == []
    # Docker's name filter matches a substring: `efinal-` would meet other suite labs
    # (`efinal-pair-…`) running beside this one. The lab's own host names, exactly.
    hosts = {host_container_name(spec, h.name) for h in spec.hosts}
    assert [c.name for c in client.containers.list(all=True) if c.name in hosts] == []
    assert client.volumes.list(filters=label) == []
    assert [n.name for n in client.networks.list(names=[docker_network_name(spec)])] == []
    assert not lab_dir(spec).exists()


@pytest.fixture(scope="session")
def tags_before() -> set[str]:
    """Every image tag on the engine before the suite's shared lab comes up."""
    return {tag for image in docker.from_env().images.list() for tag in image.tags}


@pytest.fixture(scope="session")
def lab(tags_before, e2e_spec):
    """The lab, up. Torn down at the end of the session whatever happened."""
    with lab_up(e2e_spec, keep=KEEP) as (spec, result):
        yield spec, connection_data(spec), result


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
