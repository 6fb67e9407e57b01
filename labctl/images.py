"""Images on the control machine's engine, even where no registry answers.

The base image the host containers build on comes from, in order: the local
engine, a registry pull, or `debootstrap` + `docker import` from an apt mirror.
The last is what makes the lab work in networks where Docker Hub is blocked but
the Debian archive (or a mirror of it) is not.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound

from labctl import system

# Suites debootstrap can build, by the tag of the `debian` image they stand for.
DEBIAN_SUITES = {"bookworm", "bullseye", "trixie", "12", "11", "13"}
DEBIAN_TAG_TO_SUITE = {"12": "bookworm", "11": "bullseye", "13": "trixie"}
DEBIAN_MIRROR_ENV = "LAB_DEBIAN_MIRROR"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"


class ImageError(Exception):
    """An image cannot be had; the message names it and the ways to provide it."""


def present(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def try_pull(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.pull(ref)
        return True
    except DockerException:
        return False


def debootstrap_image(client: docker.DockerClient, ref: str) -> None:
    """Build `debian:<suite>` from the apt archive: debootstrap, then docker import."""
    repository, _, tag = ref.partition(":")
    suite = DEBIAN_TAG_TO_SUITE.get(tag, tag)
    if repository not in ("debian", "docker.io/library/debian") or tag not in DEBIAN_SUITES:
        raise ImageError(
            f"base image {ref} is not in the local engine and no registry serves it; "
            f"load it (docker load -i FILE), make a registry mirror reachable, or use a "
            f"debian:<suite> base image, which labctl can build with debootstrap."
        )
    system.ensure_tools(system.DEBOOTSTRAP)
    mirror = os.environ.get(DEBIAN_MIRROR_ENV) or apt_mirror() or DEFAULT_DEBIAN_MIRROR
    with tempfile.TemporaryDirectory(prefix="labctl-rootfs-") as root:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", suite, root, mirror],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
            raise ImageError(
                f"debootstrap of {suite} from {mirror} failed ({tail[0]}); set "
                f"{DEBIAN_MIRROR_ENV} to a reachable Debian mirror or load {ref} by hand."
            )
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        try:
            client.images.client.api.import_image_from_stream(
                tar.stdout, repository="debian", tag=tag
            )
        finally:
            tar.wait()


def ensure_base_image(client: docker.DockerClient, ref: str) -> str:
    """Make `ref` present in the local engine; return how it was obtained."""
    if present(client, ref):
        return "present"
    if try_pull(client, ref):
        return "pulled"
    debootstrap_image(client, ref)
    if not present(client, ref):
        raise ImageError(f"importing {ref} reported success but the engine lacks it; retry.")
    return "debootstrap"


def apt_mirror() -> str | None:
    """The Debian mirror this machine's apt uses, so debootstrap takes the same route."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            urls = [w for w in line.split() if w.startswith(("http://", "https://", "file:"))]
            if line.startswith(("URIs:", "deb ")) and urls and "security" not in line:
                return urls[0]
    return None
