"""Host boxes (docs/boxes.md), on a two-host lab of its own: the first `up` keeps a box;
an `up` from it and an `up --no-box` bring the same lab as that first `up` (the same
containers on each host, registrations and tokens; a zero-change `apply` after each);
another image version makes another box and never uses the old one; `down` keeps
boxes, `down --purge` leaves none."""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker
import pytest

from labctl import box, security, vagrant
from labctl.connections import connection_data, ssh_data_from_vagrant
from labctl.lifecycle import log_file
from labctl.paths import host_container_name, host_volume_name, read_state
from labctl.spec import LabSpec, load_spec
from testbed.standin_build import standin_images
from tests.e2e.conftest import finish_lab, labctl, start_lab, write_spec
from tests.e2e.probes import consul, on_host
from tests.support.suite_labs import BASE_NAME, LABS, SuiteLab

# On the offline lab's subnet: test_96 and test_97 are done with it (the same worker
# runs the own-lab modules one after the other, in file order).
BOX_LAB = SuiteLab(f"{BASE_NAME}-box", LABS.offline.prefix)
# The other image version: the LB's consul-template (its image gets another ID).
OTHER_CONSUL_TEMPLATE = "0.19.0"  # the stand-in implements 0.19.0 and 0.19.5


def spec_data(images: dict, consul_template: str | None = None) -> dict:
    data = {
        "name": BOX_LAB.name,
        "provider": "docker",
        "images": images,
        "network": {"subnet": str(BOX_LAB.subnet), "allow_any_subnet": True},
        "hosts": [
            {"name": "node1", "address": BOX_LAB.address(2), "consul": "server",
             "bootstrap": True, "demo": 1},
            {"name": "node2", "address": BOX_LAB.address(3), "consul": "client", "lb": True,
             "demo": 1},
        ],
    }  # fmt: skip
    if consul_template:
        data["versions"] = {"consul_template": consul_template}
    return data


@pytest.fixture(scope="module")
def box_specs(tmp_path_factory, e2e_images) -> tuple[Path, Path]:
    """(the lab's spec, the same with another consul-template release)."""
    folder = tmp_path_factory.mktemp("box")
    other = standin_images(OTHER_CONSUL_TEMPLATE)
    return (
        write_spec(folder / "lab.yaml", spec_data(e2e_images)),
        write_spec(folder / "other.yaml", spec_data(other, OTHER_CONSUL_TEMPLATE)),
    )


def boxes(spec: LabSpec) -> list[box.KeptBox]:
    return box.kept(docker.from_env(), spec.name)


def host_images(spec: LabSpec) -> set[str]:
    """The image each host container was made from."""
    client = docker.from_env()
    return {
        client.containers.get(host_container_name(spec, h.name)).attrs["Config"]["Image"]
        for h in spec.hosts
    }


def the_lab(spec: LabSpec) -> dict:
    """What makes the lab this lab: each host's containers and the images they run, the
    services registered in Consul with their instances, and the lab's tokens."""
    connections = connection_data(spec)
    containers = {
        h.name: sorted(
            on_host(connections, h.name, "docker ps --format '{{.Names}} {{.Image}}'").split("\n")
        )
        for h in spec.hosts
    }
    services = {
        name: sorted((i["Node"], i["ServiceID"], i["ServiceAddress"], i["ServicePort"])
                     for i in consul(spec, f"/v1/catalog/service/{name}"))
        for name in consul(spec, "/v1/catalog/services")
    }  # fmt: skip
    tokens = sorted(security.saved_tokens(spec))
    return {
        "containers": containers, "services": services, "tokens": tokens,
        "files": image_files(connections, spec.hosts[-1].name),
    }  # fmt: skip


# Every path of each image's file system as a container sees it, the overlay2 layers
# merged by the host's engine: a whiteout lost on the way from the box brings back a file
# a later layer deleted. (An opaque directory's marker too, but none of the lab's images
# has one that hides a lower layer's files: tests/unit/test_box_hosts_data.py checks
# the marker itself.)
IMAGE_FILES = (
    "for image in $(docker images -q | sort -u); do"
    ' c=$(docker create --entrypoint /none "$image") &&'
    ' echo "$image $(docker export "$c" | tar -tf - | sort | md5sum)" &&'
    ' docker rm "$c" >/dev/null || exit 1; done'
)


def image_files(connections, host: str) -> list[str]:
    """A digest of each image's file system on `host` (IMAGE_FILES)."""
    return sorted(on_host(connections, host, IMAGE_FILES).split("\n"))


def hosts_data(kept: box.KeptBox) -> Path:
    """Where the engine data of the hosts made from `kept` lives on this machine."""
    volume = docker.from_env().volumes.get(kept.box.volume)
    return Path(volume.attrs["Mountpoint"]) / box.HOSTS


def up_then_apply(spec_file: Path, *args: str) -> tuple[str, dict]:
    """`up` (with `args`), then the lab as it stands, after a zero-change `apply`;
    (what `up` said, the lab)."""
    spec, _ = load_spec(spec_file)
    start_lab(spec_file, leftovers=False)
    up = labctl(spec_file, "up", *args)
    assert up.returncode == 0, up.stdout + up.stderr
    applied = labctl(spec_file, "apply", timeout=600)
    assert applied.returncode == 0, applied.stderr
    assert "no changes" in applied.stderr, applied.stderr
    return up.stderr, the_lab(spec)


def down(spec_file: Path, *args: str) -> None:
    result = labctl(spec_file, "down", *args, timeout=600)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def first_up(box_specs):
    """The lab's first `up`, no box of the lab on the engine before it; taken down, its
    boxes with it, at the end of the module whatever happened."""
    spec_file, other_file = box_specs
    spec, _ = load_spec(spec_file)
    start_lab(spec_file)
    down(spec_file, "--purge")  # an interrupted earlier run's boxes
    try:
        said, lab = up_then_apply(spec_file)
        yield spec, said, lab
    finally:
        finish_lab(spec_file)
        down(other_file, "--purge")
        assert boxes(spec) == []


def test_the_first_up_keeps_a_box_and_down_keeps_it(first_up, box_specs):
    spec, said, _ = first_up
    assert "kept" in said and "the next `up` starts from it" in said, said
    [kept] = boxes(spec)
    assert kept.in_use is False  # its hosts come from the template
    assert "docker.io=" in kept.engine
    assert kept.box.login_key.stat().st_mode & 0o777 == 0o600
    down(box_specs[0])
    assert [b.box for b in boxes(spec)] == [kept.box]


def test_an_up_from_the_box_brings_the_same_lab(first_up, box_specs):
    spec, _, lab = first_up
    [kept] = boxes(spec)
    said, from_box = up_then_apply(box_specs[0])
    assert f"hosts made from {kept.box.image}" in said, said
    assert host_images(spec) == {kept.box.image}
    # The engine and every image came with the box: the up installed and loaded nothing.
    for operation in ("Install the Docker engine", "Load "):
        assert operation not in said.split("changed:", 1)[-1], said
    assert from_box == lab
    # Each host's engine data is in the box's volume, its image layers' files shared.
    client = docker.from_env()
    for host in spec.hosts:
        volume = client.volumes.get(host_volume_name(spec, host.name))
        assert volume.attrs["Options"]["device"] == str(hosts_data(kept) / host.name)
    engine = hosts_data(kept).parent / box.ENGINE
    layer_file = next(p for p in (engine / "overlay2").glob("*/diff/**/*") if p.is_file())
    shared = hosts_data(kept) / spec.hosts[0].name / layer_file.relative_to(engine)
    assert os.stat(shared).st_ino == os.stat(layer_file).st_ino
    # labctl connected with what its `vagrant up` recorded (the Vagrantfile's trigger),
    # which is what `vagrant ssh-config` says.
    recorded = vagrant.recorded_ssh_settings(spec)
    assert recorded is not None
    asked = vagrant.ssh_settings(spec, "docker")
    assert {h: {k: c[k] for k in vagrant.SSH_CONFIG_KEYS} for h, c in asked.items()} == recorded
    machines = read_state(spec)["machines"]
    assert {h: m["ssh"] for h, m in machines.items()} == {
        h: ssh_data_from_vagrant(c) for h, c in recorded.items()
    }
    # Vagrant logged in with the box's own key, and inserted none of its own.
    assert {c["IdentityFile"] for c in recorded.values()} == {str(kept.box.login_key)}
    assert "Inserting generated public key" not in log_file(spec, "vagrant-up").read_text()
    down(box_specs[0])
    assert not hosts_data(kept).exists()  # the box itself stays


def test_up_no_box_installs_everything_and_brings_the_same_lab(first_up, box_specs):
    spec, _, lab = first_up
    [kept] = boxes(spec)
    said, from_scratch = up_then_apply(box_specs[0], "--no-box")
    assert "not used (--no-box)" in said, said
    assert kept.box.image not in host_images(spec)
    assert "Install the Docker engine" in said, said
    assert from_scratch == lab
    down(box_specs[0])
    assert [b.box for b in boxes(spec)] == [kept.box]  # --no-box kept none


def test_another_image_version_makes_another_box(first_up, box_specs):
    spec, _, _ = first_up
    [old] = boxes(spec)
    other_file = box_specs[1]
    start_lab(other_file, leftovers=False)
    up = labctl(other_file, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert old.box.image not in host_images(spec)
    assert "kept" in up.stderr, up.stderr
    newest, older = boxes(spec)
    assert older.box == old.box and newest.box.key != old.box.key
    listed = labctl(other_file, "box", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {b["key"] for b in json.loads(listed.stdout)} == {old.box.short, newest.box.short}


def test_down_purge_leaves_no_box(first_up, box_specs):
    spec, _, _ = first_up
    down(box_specs[1], "--purge")
    assert boxes(spec) == []
    client = docker.from_env()
    assert client.volumes.list(filters={"label": f"{box.BOX_OF}={spec.name}"}) == []
    assert list(box.BOX_KEYS.glob(f"{spec.name}-*")) == []
