"""The stand-ins (tests/standins) built on the control machine for a lab of the suite or
the bench: what `labctl up --offline` names, built ahead so that `up` times leave the
stand-ins' build out.

LAB_E2E_IMAGES chooses: `standin` (default) builds them and names them in the spec's
`images` (images.consul, images.consul_template_binary, the keys a user would set);
`real` names nothing, so the spec's own images (hashicorp/consul, the official
consul-template release) are used, on machines that reach them.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

import docker

from labctl.images import standins
from labctl.images.debian_base import ensure_base_image
from labctl.images.standins import STANDINS, standin_consul_ref
from labctl.spec import PROJECT_ROOT, DockerProvider, Versions

IMAGES = os.environ.get("LAB_E2E_IMAGES", "standin")
BUILD_LOCK = PROJECT_ROOT / ".lab" / "standin-build.lock"


def standin_images(consul_template: str = Versions().consul_template) -> dict[str, str]:
    """Build the stand-ins on the control machine (consul-template's as release
    `consul_template`, the lab's default unless told); return the spec's `images` naming
    them."""
    if IMAGES == "real":
        return {}
    if IMAGES != "standin":
        raise ValueError(f"LAB_E2E_IMAGES={IMAGES!r}: use standin or real")
    ref = standin_consul_ref(Versions().consul)
    with one_builder():
        client = base_image()
        client.images.build(path=str(STANDINS / "consul"), tag=ref, rm=True)
        binary = standins.consul_template_standin(consul_template)
    return {"consul": ref, "consul_template_binary": str(binary)}


@contextmanager
def one_builder() -> Iterator[None]:
    """One builder at a time (the suite's two workers, a bench beside it): the second
    finds the base image (a debootstrap on a fresh machine) and the builds cached."""
    BUILD_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_image() -> docker.DockerClient:
    """The hosts' base image (debian:bookworm) on this engine, as `up` makes it; the
    engine's client. Call it inside `one_builder()`."""
    client = docker.from_env()
    ensure_base_image(client, DockerProvider().base_image)
    return client
