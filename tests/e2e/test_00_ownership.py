"""A person's lab is their data: the suite makes and removes only what it owns.

Cheap enough for every run (some Docker calls and a few `labctl down`s; no lab comes up):

- the default lab, `dynlb` on 192.168.56.0/24 (what the README's `./lab up` makes, or
  `./lab up --offline`), is untouched by what the suite does at the start and the end of
  each of its labs: the clash check, the removal of its own leftovers of an interrupted
  earlier run (which are there, and go), the mark, and `down`. When this machine holds
  no default lab, the test makes one as labctl leaves it (local state with secrets, a
  labelled container running on a network on its subnet, a labelled volume) and removes
  it afterwards; a real one is only looked at;
- what stands on a suite lab's way and is not the suite's (a lab of someone else under
  its name and on its subnet; an interface and a route on its subnet) stops that lab in
  one sentence naming each, and is untouched.

The suite's labs here are the second half of its block (PROBE_LABS, `e2e-own...`), run
through the same code as the labs of the other modules, which run beside this one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest
from docker.types import IPAMConfig, IPAMPool

from labctl.hostnet import docker_network_clash, route_clash
from labctl.paths import (
    docker_network_name,
    host_container_name,
    host_volume_name,
    lab_dir,
)
from labctl.spec import DEFAULT_SPEC, DockerProvider, LabSpec, load_spec
from roles.contract import LAB_LABEL
from testbed.machines import MachinePool
from testbed.ownership import SUITE_LABEL, owner
from testbed.standin_build import base_image, one_builder
from tests.e2e.conftest import (
    e2e_spec_data,
    finish_lab,
    noimage_spec_data,
    start_lab,
    write_spec,
)
from tests.support.suite_labs import (
    PROBE_LABS,
    claim_ssh_road,
    docker_subnets,
    mark,
    seed_spec_data,
)

IMAGE = DockerProvider().base_image


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    with one_builder():
        return base_image()  # what the planted containers run


def local_state(directory: Path) -> dict[str, tuple]:
    """Every file and folder of a lab's local state: mode, modification time, content."""
    if not directory.exists():
        return {}
    entries = {".": (directory.stat().st_mode, directory.stat().st_mtime_ns, None)}
    for path in sorted(directory.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        entries[str(path.relative_to(directory))] = (stat.st_mode, stat.st_mtime_ns, digest)
    return entries


def footprint(spec: LabSpec, client: docker.DockerClient) -> dict:
    """Everything of a lab on this machine: its local state, the containers and volumes
    labelled with its name, the Docker networks on its subnet."""
    label = {"label": f"{LAB_LABEL}={spec.name}"}
    containers = client.containers.list(all=True, filters=label)
    return {
        "local state": local_state(lab_dir(spec)),
        "containers": {c.id: (c.name, c.status, c.attrs["State"]["StartedAt"]) for c in containers},
        "volumes": {v.name: v.attrs["CreatedAt"] for v in client.volumes.list(filters=label)},
        "networks": {
            n.id: n.name
            for n in client.networks.list()
            if any(s.overlaps(spec.network.subnet) for s in docker_subnets(n))
        },
    }


EMPTY = {"local state": {}, "containers": {}, "volumes": {}, "networks": {}}


@contextmanager
def someones_lab(
    spec: LabSpec, client: docker.DockerClient, on_its_network: bool = True
) -> Iterator[None]:
    """A lab that is not the suite's, as labctl leaves it on the docker provider: its
    local state with secrets, its first host's container running on the lab's network
    (unless `on_its_network` is false) with its labelled volume. Removed afterwards."""
    host = spec.hosts[0].name
    state = lab_dir(spec)
    state.mkdir(parents=True)  # refuses a lab that is there already: it is not ours
    labels = {LAB_LABEL: spec.name}
    network = volume = container = None
    try:
        (state / "secrets").mkdir()
        (state / "state.json").write_text(json.dumps({"provider": "docker"}) + "\n")
        for secret in ("gossip.key", "tokens.json"):
            (state / "secrets" / secret).write_text(os.urandom(16).hex())
            (state / "secrets" / secret).chmod(0o600)
        if on_its_network:
            pool = IPAMPool(subnet=str(spec.network.subnet), gateway=str(spec.gateway))
            network = client.networks.create(
                docker_network_name(spec), ipam=IPAMConfig(pool_configs=[pool])
            )
        volume = client.volumes.create(host_volume_name(spec, host), labels=labels)
        container = client.containers.run(
            IMAGE, ["sleep", "infinity"], name=host_container_name(spec, host), labels=labels,
            network=network.name if network else "none",
            volumes={volume.name: {"bind": "/var/lib/docker"}}, detach=True, init=True,
        )  # fmt: skip
        yield
    finally:
        if container is not None:
            container.remove(force=True)
        if volume is not None:
            volume.remove()
        if network is not None:
            network.remove()
        shutil.rmtree(state)


@contextmanager
def the_default_lab(client: docker.DockerClient) -> Iterator[LabSpec]:
    """The default lab: this machine's own when it holds one (only looked at), else one
    made for the test — on a network of its subnet only when nothing on this machine
    uses that subnet (VirtualBox's first host-only network is 192.168.56.0/24 too)."""
    default, _ = load_spec(DEFAULT_SPEC)
    if footprint(default, client) != EMPTY:
        yield default
        return
    subnet_in_use = route_clash(default, "docker") or docker_network_clash(client, default)
    with someones_lab(default, client, on_its_network=not subnet_in_use):
        yield default


def suites_leftovers(spec: LabSpec, client: docker.DockerClient) -> None:
    """What an interrupted earlier run leaves of a lab of the suite: its marked local state,
    a container and a volume of its own."""
    mark(spec)
    labels = {LAB_LABEL: spec.name, SUITE_LABEL: owner(spec.name)}
    volume = client.volumes.create(f"{spec.name}-leftover", labels=labels)
    client.containers.create(
        IMAGE, ["true"], name=f"{spec.name}-leftover", labels=labels,
        volumes={volume.name: {"bind": "/data"}},
    )  # fmt: skip


def test_every_suite_labs_start_and_end_leave_the_default_lab_untouched(client, tmp_path):
    docker_labs = {
        PROBE_LABS.shared: e2e_spec_data({}, PROBE_LABS.shared),
        PROBE_LABS.offline: seed_spec_data(PROBE_LABS.offline),
        PROBE_LABS.noimage: noimage_spec_data(PROBE_LABS.noimage),
    }
    with the_default_lab(client) as default:
        before = footprint(default, client)
        assert before["local state"] or before["containers"] or before["networks"]
        for lab, data in docker_labs.items():
            spec_file = write_spec(tmp_path / f"{lab.name}.yaml", data)
            spec, _ = load_spec(spec_file)
            suites_leftovers(spec, client)
            start_lab(spec_file)
            # Its leftovers gone, its local state marked for the run to come.
            assert footprint(spec, client) == EMPTY | {"local state": local_state(lab_dir(spec))}
            assert set(local_state(lab_dir(spec))) == {".", "made-by-the-test-suite"}
            finish_lab(spec_file)
            assert footprint(spec, client) == EMPTY
        # The ssh road's start: the check, then its machines' leftovers (by its own label).
        claim_ssh_road(PROBE_LABS.ssh, client)
        pool = MachinePool(PROBE_LABS.ssh.name, PROBE_LABS.ssh.prefix, 3, tmp_path / "keys")
        leftover = client.containers.create(IMAGE, ["true"], labels={SUITE_LABEL: owner(pool.pool)})
        pool.remove()
        with pytest.raises(docker.errors.NotFound):
            leftover.reload()
        assert footprint(default, client) == before


def test_someone_elses_lab_on_a_suite_labs_way_stops_it_in_one_sentence(client, tmp_path):
    spec_file = write_spec(tmp_path / "lab.yaml", e2e_spec_data({}, PROBE_LABS.shared))
    spec, _ = load_spec(spec_file)
    with someones_lab(spec, client):
        before = footprint(spec, client)
        with pytest.raises(pytest.fail.Exception) as stopped:
            start_lab(spec_file)
        assert footprint(spec, client) == before
    name, subnet = spec.name, spec.network.subnet
    assert stopped.value.msg == (
        f"the test suite's lab {name} on {subnet} would meet what the suite did not make: "
        f"{lab_dir(spec)} (a lab's local state without the suite's mark); "
        f"Docker containers {name}-node1 labelled io.labctl.lab={name}; "
        f"Docker volumes {name}-node1-var-lib-docker labelled io.labctl.lab={name}; "
        f"Docker network vagrant_network_{subnet} ({subnet}, with containers {name}-node1); "
        "nothing was touched: remove those yourself (a lab: `labctl --spec ITS_SPEC down`), "
        "or give the suite other names and subnets with LAB_E2E_NAME and LAB_E2E_SUBNET "
        "(docs/testing.md)."
    )


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def test_an_interface_or_route_on_a_suite_labs_subnet_stops_it_in_one_sentence(client, tmp_path):
    lab = PROBE_LABS.offline
    spec_file = write_spec(tmp_path / "lab.yaml", seed_spec_data(lab))
    spec, _ = load_spec(spec_file)
    bridge = f"e2e{os.getpid() % 10**7}"  # at most 15 characters
    ip("link", "add", bridge, "type", "bridge")
    try:
        ip("addr", "add", f"{lab.prefix}.1/25", "dev", bridge)
        ip("route", "add", "blackhole", f"{lab.prefix}.128/25")
        try:
            with pytest.raises(pytest.fail.Exception) as stopped:
                start_lab(spec_file)
            assert not lab_dir(spec).exists()
        finally:
            ip("route", "del", "blackhole", f"{lab.prefix}.128/25")
    finally:
        ip("link", "del", bridge)
    assert stopped.value.msg.startswith(
        f"the test suite's lab {spec.name} on {spec.network.subnet} would meet what the suite "
        f"did not make: interface {bridge} ({lab.prefix}.1/25); a route to "
        f"{lab.prefix}.128/25 (blackhole); nothing was touched: "
    )
