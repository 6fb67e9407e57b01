"""The ssh road, live: existing machines that this module makes without Vagrant
(testbed/machines.py: containers from templates/host on a network of their own,
given their users and keys as cloud-init would), reached once as root (m1) and once as
`admin` with passwordless sudo and its own key (m2, m3), in one lab.

In order: `up`, `verify`, a zero-change `apply`, `scale`, `fail`/`recover` of an
instance and of a whole machine; a machine rebuilt with a new host key; an image of
another architecture; `down` with one machine unreachable, then with all, listed on
every machine. Then the same machines with no engine reachable from labctl
(DOCKER_HOST on a dead socket): the hosts pull from a registry this module runs and
build the lab's recipes themselves; `down --purge-engine` takes the engine too.

Host keys go to a temporary known_hosts file (`ssh.known_hosts`), never ~/.ssh. The lab,
its machines and their network have a name and subnet of the suite's own
(tests/support/suite_labs.py), checked for clashes before anything is made.

This lab is the seed's open one (`security: seed`): the suite's main lab covers the secured
default; this one shows that the seed's setting still gives exactly the seed's lab.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import docker as docker_engine
import httpx
import pytest

from labctl.connections import connection_data
from labctl.images.tags import image_namespace
from labctl.paths import lab_dir
from labctl.remote import run
from labctl.spec import Versions
from roles.contract import LAB_LABEL
from testbed.machines import MachinePool, docker
from testbed.registry import Registry
from tests.e2e.conftest import lab_up, labctl, start_lab, wait_for, write_spec
from tests.support.foreign_image import load_foreign_image
from tests.support.suite_labs import LABS, claim_ssh_road, mark, ssh_place

LAB = LABS.ssh.name
OTHER = f"{LAB}-b"  # another lab, refused on the same machines
PREFIX = LABS.ssh.prefix
LB = f"{PREFIX}.4"
SERVICE = "zhibo_service"
REAL_KNOWN_HOSTS = Path.home() / ".ssh" / "known_hosts"
# Check interval + timeout + consul-template's quiescence max + a margin.
FOLLOW_DEADLINE = 10 + 5 + 10 + 20


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    claim_ssh_road(LABS.ssh, docker_engine.from_env())
    machines = MachinePool(LAB, PREFIX, 3, tmp_path_factory.mktemp("ssh-keys"))
    machines.create()
    try:
        yield machines
    finally:
        machines.remove()


@pytest.fixture(scope="module")
def known_hosts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ssh") / "known_hosts"


def spec_data(pool: MachinePool, images: dict, known_hosts: Path, name: str = LAB) -> dict:
    m1, m2, m3 = pool.machines
    return {
        "name": name,
        "provider": "ssh",
        "network": {"subnet": f"{PREFIX}.0/24"},
        "images": images,
        "ssh": {"user": "admin", "key": str(pool.admin_key), "known_hosts": str(known_hosts)},
        "security": "seed",
        "hosts": [
            {"name": m1.name, "address": m1.address, "consul": "server", "bootstrap": True,
             "demo": 1, "ssh_user": "root", "ssh_key": str(pool.root_key)},
            {"name": m2.name, "address": m2.address, "consul": "server", "demo": 1},
            {"name": m3.name, "address": m3.address, "consul": "server", "lb": True, "demo": 1},
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def ssh_spec(tmp_path_factory, pool, known_hosts, e2e_images) -> Path:
    path = tmp_path_factory.mktemp("ssh-spec") / "lab.yaml"
    return write_spec(path, spec_data(pool, e2e_images, known_hosts))


@pytest.fixture(scope="module")
def real_known_hosts_before() -> bytes | None:
    return REAL_KNOWN_HOSTS.read_bytes() if REAL_KNOWN_HOSTS.exists() else None


@pytest.fixture(scope="module")
def ssh_lab(pool, ssh_spec, real_known_hosts_before):
    """The lab up on the machines; `down` at the end whatever happened."""
    with lab_up(ssh_spec, kin=(LAB,)) as (spec, result):
        yield spec, result


def listing(pool: MachinePool, machine) -> dict:
    """What a machine holds that the lab could have put there, listed on the machine."""

    def lines(command: str) -> list[str]:
        return sorted(pool.exec(machine, command, check=False).split())

    return {
        "containers": lines("docker ps -a --format '{{.Names}}'"),
        "volumes": lines("docker volume ls -q"),
        "networks": lines("docker network ls --format '{{.Name}}'"),
        "images": lines("docker images -a --format '{{.Repository}}:{{.Tag}}'"),
        "files": lines(
            "ls -d /etc/lab /var/lib/lab /etc/docker/daemon.json /usr/local/bin/lab-wait"
            " /tmp/lab-images-* 2>/dev/null"
        ),
    }


CLEAN = {
    "containers": [],
    "volumes": [],
    "networks": ["bridge", "host", "none"],
    "images": [],
    "files": [],
}


def errors(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


# --- up, as root and as a sudo user ---------------------------------------------------


def test_up_reaches_root_and_a_sudo_user_and_verifies(ssh_lab, pool):
    spec, result = ssh_lab
    assert "verify" in result.stderr and "checks failed" not in result.stderr
    connections = connection_data(spec, "ssh")
    assert connections["m1"]["ssh_user"] == "root" and "_sudo" not in connections["m1"]
    assert connections["m2"]["ssh_user"] == "admin" and connections["m2"]["_sudo"]
    for name, user in (("m1", "root\n"), ("m2", "admin\n"), ("m3", "admin\n")):
        assert run(connections[name], "id -un")[1] == user
        code, output = run(connections[name], "docker ps --format '{{.Names}}'", sudo=True)
        assert code == 0 and "consul" in output.split(), (name, output)


def test_security_seed_gives_the_seeds_open_lab(ssh_lab, pool):
    _, result = ssh_lab
    assert "security: seed" in result.stderr
    m1 = pool.machines[0]
    agent = f"http://{m1.address}:8500/v1/agent/service"
    # As in the seed, anyone who reaches :8500 may register (here: nowhere a GET would go).
    anyone = {"ID": "anyone", "Name": "anyone_svc", "Address": m1.address, "Port": 9}
    try:
        assert httpx.put(f"{agent}/register", json=anyone, timeout=10).status_code == 200
    finally:
        httpx.put(f"{agent}/deregister/anyone", timeout=10)
    members = httpx.get(f"http://{m1.address}:8500/v1/agent/members", timeout=10).json()
    assert {m["Name"] for m in members} == {"m1", "m2", "m3"}  # read without a token
    for machine in pool.machines:
        files = pool.exec(machine, "ls /etc/lab /etc/lab/consul", check=False)
        assert "secrets" not in files and "gossip.json" not in files, files


def test_first_contacts_are_recorded_in_the_spec_known_hosts_only(
    ssh_lab, known_hosts, real_known_hosts_before
):
    recorded = sorted(line.split()[0] for line in known_hosts.read_text().splitlines())
    assert recorded == [f"{PREFIX}.2", f"{PREFIX}.3", f"{PREFIX}.4"]
    after = REAL_KNOWN_HOSTS.read_bytes() if REAL_KNOWN_HOSTS.exists() else None
    assert after == real_known_hosts_before


def test_a_second_apply_changes_nothing(ssh_lab, ssh_spec):
    result = labctl(ssh_spec, "apply", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "no changes" in result.stderr, result.stderr


def upstream() -> set[str]:
    from labctl.lb_client import read_lb_record

    with httpx.Client(timeout=5) as client:
        return set(read_lb_record(client, LB).upstreams.get(SERVICE, []))


def test_scale_up_and_back_down(ssh_lab, ssh_spec):
    result = labctl(ssh_spec, "scale", f"{SERVICE}=5", timeout=600)
    assert result.returncode == 0, result.stderr
    assert len(upstream()) == 5
    assert labctl(ssh_spec, "verify").returncode == 0
    result = labctl(ssh_spec, "scale", f"{SERVICE}=3", timeout=600)
    assert result.returncode == 0, result.stderr
    assert upstream() == {f"{PREFIX}.{n}:8080" for n in (2, 3, 4)}


def test_fail_and_recover_an_instance(ssh_lab, ssh_spec):
    assert labctl(ssh_spec, "fail", "zhibo-2").returncode == 0
    wait_for(lambda: f"{PREFIX}.3:8080" not in upstream(), FOLLOW_DEADLINE, "LB drops zhibo-2")
    assert labctl(ssh_spec, "recover", "zhibo-2").returncode == 0
    wait_for(lambda: f"{PREFIX}.3:8080" in upstream(), FOLLOW_DEADLINE, "LB takes zhibo-2 back")


def test_fail_a_machine_kills_its_lab_containers_and_leaves_it_running(ssh_lab, ssh_spec, pool):
    spec, _ = ssh_lab
    m2 = pool.machines[1]
    result = labctl(ssh_spec, "fail", "m2")
    assert result.returncode == 0, result.stderr
    assert "2 lab containers killed" in result.stderr and "not powered off" in result.stderr
    label = f"{LAB_LABEL}={LAB}"
    running = pool.exec(m2, f"docker ps -q --filter label={label}")
    assert running.split() == []
    assert run(connection_data(spec, "ssh")["m2"], "hostname")[1].strip() == "m2"
    wait_for(lambda: f"{PREFIX}.3:8080" not in upstream(), FOLLOW_DEADLINE, "LB drops m2")

    result = labctl(ssh_spec, "recover", "m2")
    assert result.returncode == 0, result.stderr
    assert "2 lab containers started" in result.stderr
    verified = labctl(ssh_spec, "verify", "--wait", "120")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_help_says_what_fail_does_on_existing_machines(ssh_spec):
    result = labctl(ssh_spec, "fail", "--help")
    assert "existing machine (provider ssh)" in result.stdout
    assert "killed instead" in result.stdout


# --- host keys -----------------------------------------------------------------------


def test_a_rebuilt_machine_stops_apply_with_one_sentence(ssh_lab, ssh_spec, pool, known_hosts):
    m1 = pool.machines[0]
    pool.new_host_keys(m1)
    result = labctl(ssh_spec, "apply", timeout=300)
    assert result.returncode == 1
    assert errors(result) == [
        f"error: m1 ({m1.address}:22): its SSH host key is not the one {known_hosts} records "
        f"for {m1.address}; if the machine was rebuilt, forget the old key with "
        f"`ssh-keygen -f {known_hosts} -R '{m1.address}'` and retry (if it was not, "
        "something is intercepting the connection)."
    ], result.stderr
    assert "No hosts remaining" not in result.stdout + result.stderr

    subprocess.run(["ssh-keygen", "-f", str(known_hosts), "-R", m1.address], check=True)
    result = labctl(ssh_spec, "apply", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "no changes" in result.stderr


# --- architecture --------------------------------------------------------------------


@pytest.fixture
def foreign_image():
    ref = f"{image_namespace()}/foreign-arch:arm64"
    load_foreign_image(ref, "arm64")
    try:
        yield ref
    finally:
        docker("rmi", "-f", ref, check=False)


def test_an_image_of_another_architecture_stops_up_before_any_host_changes(
    ssh_lab, pool, known_hosts, e2e_images, foreign_image, tmp_path
):
    spec, _ = ssh_lab
    before = {m.name: listing(pool, m) for m in pool.machines}
    state = (lab_dir(spec) / "state.json").read_text()
    data = spec_data(pool, e2e_images | {"consul": foreign_image}, known_hosts)
    result = labctl(write_spec(tmp_path / "arch.yaml", data), "up", timeout=300)
    assert result.returncode == 2
    assert errors(result) == [
        f"error: image {foreign_image} (present) is built for arm64, but m1, m2, m3 run amd64; "
        f"nothing was changed on the hosts: provide it for amd64 (remove this one with "
        f"`docker rmi {foreign_image}` so labctl pulls or builds one), or set images.delivery: "
        "hosts so each host gets its own."
    ], result.stderr
    assert {m.name: listing(pool, m) for m in pool.machines} == before
    assert (lab_dir(spec) / "state.json").read_text() == state


def test_another_lab_on_the_same_machines_is_refused_and_takes_nothing(
    ssh_lab, pool, known_hosts, e2e_images, tmp_path
):
    before = {m.name: listing(pool, m) for m in pool.machines}
    other = write_spec(tmp_path / "other.yaml", spec_data(pool, e2e_images, known_hosts, OTHER))
    other_spec = ssh_place(OTHER, LABS.ssh)
    mark(other_spec)
    try:
        for verb in ("up", "down"):
            result = labctl(other, verb, timeout=300)
            assert result.returncode == 1, (verb, result.stderr)
            assert f"m1 ({PREFIX}.2:22): it holds lab {LAB}, not {OTHER};" in result.stderr
        assert {m.name: listing(pool, m) for m in pool.machines} == before
    finally:
        shutil.rmtree(lab_dir(other_spec))  # its local state, the suite's (marked) own


# --- down ----------------------------------------------------------------------------


def test_down_cleans_the_machines_that_answer_and_names_the_one_that_does_not(
    ssh_lab, ssh_spec, pool
):
    spec, _ = ssh_lab
    m1, m2, m3 = pool.machines
    pool.exec(m3, "systemctl stop ssh")
    try:
        result = labctl(ssh_spec, "down", timeout=600)
        assert result.returncode == 1
        assert errors(result) == [
            f"error: not cleaned: m3 ({m3.address}:22): connection refused; start sshd there, "
            "or fix the host's address or ssh_port; m1, m2 were cleaned: run `labctl down` "
            "again once that is fixed."
        ], result.stderr
        assert listing(pool, m1) == CLEAN and listing(pool, m2) == CLEAN
        assert listing(pool, m3)["containers"] == ["consul", "lb", "zhibo-3"]
        assert (lab_dir(spec) / "state.json").exists()  # for the next `down`
    finally:
        pool.exec(m3, "systemctl start ssh")
        pool.wait_for_ssh(m3)


def test_down_leaves_nothing_the_lab_put_there_but_the_engine(ssh_lab, ssh_spec, pool):
    spec, _ = ssh_lab
    result = labctl(ssh_spec, "down", timeout=600)
    assert result.returncode == 0, result.stderr
    for machine in pool.machines:
        assert listing(pool, machine) == CLEAN, machine.name
        assert pool.exec(machine, "systemctl is-active docker").strip() == "active"
    assert not lab_dir(spec).exists()
    again = labctl(ssh_spec, "down", timeout=300)
    assert again.returncode == 0 and "already down" in again.stderr, again.stderr


# --- no engine on the control machine: the hosts pull and build -----------------------


def consul_image(e2e_images: dict) -> str:
    """The Consul image of the run: the stand-in, or the real one (LAB_E2E_IMAGES=real)."""
    return e2e_images.get("consul") or f"hashicorp/consul:{Versions().consul}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, e2e_images, pool):
    """docker-registry on the control machine, serving the Consul image and the base
    image the recipes build on (what Docker Hub would serve)."""
    server = Registry(tmp_path_factory.mktemp("registry")).start()
    consul = consul_image(e2e_images)
    if not docker("images", "-q", consul).strip():
        docker("pull", "-q", consul)  # the real image, where a registry is reachable
    try:
        server.push(consul)
        server.push("debian:bookworm", "library/debian:bookworm")
        yield server
    finally:
        server.stop()


def test_up_with_no_engine_here_has_the_hosts_pull_and_build(
    pool, known_hosts, e2e_images, registry, tmp_path_factory
):
    dead = {"DOCKER_HOST": f"unix://{tmp_path_factory.mktemp('dead')}/docker.sock"}
    images = e2e_images | {"registry_mirrors": [registry.mirror(pool.gateway)]}
    spec = write_spec(
        tmp_path_factory.mktemp("hosts") / "lab.yaml", spec_data(pool, images, known_hosts)
    )
    start_lab(spec, kin=(LAB,), leftovers=False)  # taken down by the test before
    up = labctl(spec, "up", env=dead)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "images resolved by the hosts: no Docker engine answers on this machine" in up.stderr
        served = registry.log.read_text()
        for machine in pool.machines:
            # The Consul stand-in came from the registry; the recipes were built there.
            consul = e2e_images["consul"].split(":")[0]
            assert f"{machine.address} - - " in served and f"/v2/{consul}/manifests/" in served
            record = pool.exec(machine, "cat /var/lib/lab/images").split()
            assert {e2e_images["consul"], "debian:bookworm"} <= set(record)
            assert any("/demo-service:" in ref for ref in record)
        assert "lb:" in pool.exec(pool.machines[2], "cat /var/lib/lab/images")

        apply = labctl(spec, "apply", env=dead, timeout=600)
        assert apply.returncode == 0 and "no changes" in apply.stderr, apply.stderr
    finally:
        down = labctl(spec, "down", "--purge-engine", env=dead, timeout=900)
    assert down.returncode == 0, down.stderr
    for machine in pool.machines:
        left = pool.exec(
            machine,
            "command -v dockerd; ls -d /etc/docker /etc/lab /var/lib/lab 2>/dev/null;"
            " ls -A /var/lib/docker",
            check=False,
        )
        assert left.split() == [], (machine.name, left)
    again = labctl(spec, "down", env=dead, timeout=300)
    assert again.returncode == 0 and "already down" in again.stderr, again.stderr
