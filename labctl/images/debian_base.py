"""The base image the host containers and the recipes build on (`debian:bookworm`):
present, pulled, or built with `debootstrap` + `docker import` from the Debian mirror
apt uses. That is what makes the lab work in networks where Docker Hub is blocked but
the Debian archive is not."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import docker

from labctl import system
from labctl.images.engine import present, try_pull
from labctl.images.errors import ImageError

DEBIAN_TAG_TO_SUITE = {"12": "bookworm", "11": "bullseye", "13": "trixie"}
DEBIAN_SUITES = {*DEBIAN_TAG_TO_SUITE, *DEBIAN_TAG_TO_SUITE.values()}
DEBIAN_MIRROR_ENV = "LAB_DEBIAN_MIRROR"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"


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


def debootstrap_image(client: docker.DockerClient, ref: str) -> None:
    """Build `debian:<suite>` from the apt archive: debootstrap, then docker import."""
    repository, _, tag = ref.partition(":")
    if repository not in ("debian", "docker.io/library/debian") or tag not in DEBIAN_SUITES:
        raise ImageError(
            f"base image {ref} is not in the local engine and no registry serves it; "
            f"load it (docker load -i FILE), make a registry mirror reachable, or use a "
            f"debian:<suite> base image, which labctl can build with debootstrap."
        )
    system.ensure_tools(system.DEBOOTSTRAP)
    suite = DEBIAN_TAG_TO_SUITE.get(tag, tag)
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
        # As Debian's own image ships: no package lists or caches (80 MB of the 200
        # debootstrap leaves), which every image built on it would carry to every host.
        # Recipes run `apt-get update` first, as they must on the official image.
        for leftover in ("var/lib/apt/lists", "var/cache/apt"):
            for path in (Path(root) / leftover).rglob("*"):
                if not path.is_dir():  # apt's directories stay, as in Debian's image
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        try:
            client.api.import_image_from_stream(tar.stdout, repository="debian", tag=tag)
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
