"""The engine data of hosts made from a box (labctl/box.py HOSTS_DATA), made by the same
helper container `up` runs, on a real engine, from a made-up engine directory: the
contents of image layers are hard links to the box's, everything else is a copy of
its own (the engine's databases, a container's layer), and overlay2's markers survive
(whiteouts, and opaque directories, whose trusted.* attribute the helper may only set
with CAP_SYS_ADMIN). A second run over a host's leftover data makes it afresh."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import docker
import pytest

from labctl import box
from labctl.images.debian_base import ensure_base_image
from labctl.spec import DockerProvider

OPAQUE = "trusted.overlay.opaque"
IMAGE_LAYER = "a" * 64
BASE_LAYER = "b" * 64
CONTAINER_LAYER = "c" * 64
HOSTS = ("node1", "node2")


@pytest.fixture
def engine_volume():
    """A volume of the test's own, laid out as a box's, and its path on this machine."""
    client = docker.from_env()
    volume = client.volumes.create(f"labtest-box-data-{uuid.uuid4().hex[:8]}")
    data = Path(volume.attrs["Mountpoint"])
    engine = data / box.ENGINE
    layer = engine / "overlay2" / IMAGE_LAYER / "diff"
    (layer / "etc" / "opaque").mkdir(parents=True)
    os.setxattr(layer / "etc" / "opaque", OPAQUE, b"y")
    (layer / "etc" / "file").write_text("layer\n")
    os.mknod(layer / "etc" / "deleted", 0o600 | 0o020000, os.makedev(0, 0))  # a whiteout
    (engine / "overlay2" / IMAGE_LAYER / "link").write_text("ABC\n")
    (engine / "overlay2" / CONTAINER_LAYER / "diff").mkdir(parents=True)
    (engine / "overlay2" / CONTAINER_LAYER / "diff" / "written").write_text("rw\n")
    (engine / "overlay2" / BASE_LAYER / "diff" / "bin").mkdir(parents=True)
    (engine / "overlay2" / BASE_LAYER / "diff" / "bin" / "sh").write_text("base\n")
    layerdb = engine / "image" / "overlay2" / "layerdb" / "sha256"
    for chain_id, cache_id in (("e" * 64, BASE_LAYER), ("f" * 64, IMAGE_LAYER)):
        (layerdb / chain_id).mkdir(parents=True)
        (layerdb / chain_id / "cache-id").write_text(cache_id)  # as the engine: no newline
    (engine / "network" / "files").mkdir(parents=True)
    (engine / "network" / "files" / "local-kv.db").write_text("db\n")
    try:
        yield client, volume, data
    finally:
        volume.remove(force=True)


def make_hosts_data(client, volume) -> None:
    image = DockerProvider().base_image
    ensure_base_image(client, image)
    command = ["sh", "-c", box.HOSTS_DATA, "sh", *HOSTS]
    mounts = {volume.name: {"bind": "/box", "mode": "rw"}}
    box._run_helper(client, image, command, mounts, "labtest", "making the hosts' data")


def test_image_layers_are_linked_and_the_rest_copied(engine_volume):
    client, volume, data = engine_volume
    make_hosts_data(client, volume)
    engine = data / box.ENGINE
    for host in HOSTS:
        made = data / box.HOSTS / host
        for linked in (
            Path("overlay2", IMAGE_LAYER, "diff", "etc", "file"),
            Path("overlay2", BASE_LAYER, "diff", "bin", "sh"),
        ):
            assert os.stat(made / linked).st_ino == os.stat(engine / linked).st_ino
        for own in (
            Path("overlay2", CONTAINER_LAYER, "diff", "written"),
            Path("overlay2", IMAGE_LAYER, "link"),
            Path("network", "files", "local-kv.db"),
        ):
            assert (made / own).read_text() == (engine / own).read_text()
            assert os.stat(made / own).st_ino != os.stat(engine / own).st_ino, own
        layer = made / "overlay2" / IMAGE_LAYER / "diff" / "etc"
        assert os.getxattr(layer / "opaque", OPAQUE) == b"y"
        assert os.stat(layer / "deleted", follow_symlinks=False).st_rdev == os.makedev(0, 0)


def test_a_hosts_leftover_data_is_made_afresh(engine_volume):
    client, volume, data = engine_volume
    make_hosts_data(client, volume)
    leftover = data / box.HOSTS / "node1" / "network" / "files" / "local-kv.db"
    leftover.write_text("changed by a host of an interrupted run\n")
    (data / box.HOSTS / "node1" / "stray").write_text("x")
    make_hosts_data(client, volume)
    assert leftover.read_text() == "db\n"
    assert not (data / box.HOSTS / "node1" / "stray").exists()


def test_down_clears_every_hosts_data_and_keeps_the_boxs(engine_volume):
    client, volume, data = engine_volume
    make_hosts_data(client, volume)
    command = ["sh", "-c", box.CLEAR_HOSTS, "sh", f"/box/{box.HOSTS}"]
    mounts = {volume.name: {"bind": "/box", "mode": "rw"}}
    box._run_helper(client, DockerProvider().base_image, command, mounts, "labtest", "clearing")
    assert not (data / box.HOSTS).exists()
    engine_file = data / box.ENGINE / "overlay2" / IMAGE_LAYER / "diff" / "etc" / "file"
    assert engine_file.read_text() == "layer\n" and os.stat(engine_file).st_nlink == 1


def test_a_host_whose_data_cannot_be_removed_fails_the_clearing(engine_volume):
    client, volume, _ = engine_volume
    make_hosts_data(client, volume)
    command = ["sh", "-c", box.CLEAR_HOSTS, "sh", f"/box/{box.HOSTS}"]
    mounts = {volume.name: {"bind": "/box", "mode": "ro"}}  # nothing may be unlinked
    with pytest.raises(box.BoxError, match="clearing failed"):
        box._run_helper(client, DockerProvider().base_image, command, mounts, "labtest",
                        "clearing")  # fmt: skip
