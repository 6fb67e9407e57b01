"""Bundles (`labctl bundle save FILE`): every image a lab needs in one file, a `docker
save` of them beside a manifest of references and IDs, for hosts without a registry."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import docker

from labctl.images.errors import ImageError

BUNDLE_MANIFEST = "manifest.json"
BUNDLE_IMAGES = "images.tar"


def read_bundle(path: Path) -> dict[str, str]:
    """A bundle's manifest: image reference -> image ID."""
    try:
        with tarfile.open(path) as bundle:
            member = bundle.extractfile(BUNDLE_MANIFEST)
            return json.load(member)["images"] if member else {}
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise ImageError(
            f"{path} is not a lab bundle ({exc}); make one with `labctl bundle save FILE`."
        ) from None


def bundle_arches(path: Path) -> dict[str, str]:
    """Architecture of every image in a bundle, read from its image configurations
    (`docker save` format) without a Docker engine: reference -> architecture."""
    arches = {}
    try:
        with tarfile.open(path) as bundle:
            images = bundle.extractfile(BUNDLE_IMAGES)
            with tarfile.open(fileobj=images) as saved:
                for entry in json.load(saved.extractfile("manifest.json")):
                    config = json.load(saved.extractfile(entry["Config"]))
                    for ref in entry.get("RepoTags") or []:
                        arches[ref] = config.get("architecture", "unknown")
    except (OSError, tarfile.TarError, KeyError, ValueError, AttributeError) as exc:
        raise ImageError(
            f"{path} holds no readable {BUNDLE_IMAGES} ({exc}); make it again with "
            "`labctl bundle save FILE`."
        ) from None
    return arches


def load_bundle(client: docker.DockerClient, path: Path) -> None:
    with tarfile.open(path) as bundle:
        images = bundle.extractfile(BUNDLE_IMAGES)
        if images is None:
            raise ImageError(f"{path} has no {BUNDLE_IMAGES}; make it again with labctl.")
        client.images.load(images)


def write_bundle(path: Path, manifest: dict[str, str]) -> None:
    """A bundle of the images in `manifest` (reference -> ID), all in this engine: a
    `docker save` of them and the manifest, in one tar written whole or not at all."""
    with tempfile.TemporaryDirectory() as tmp:
        images_tar = Path(tmp) / BUNDLE_IMAGES
        subprocess.run(["docker", "save", "-o", str(images_tar), *sorted(manifest)], check=True)
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w") as bundle:
            data = json.dumps({"images": manifest}, indent=2).encode()
            info = tarfile.TarInfo(BUNDLE_MANIFEST)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
            bundle.add(images_tar, arcname=BUNDLE_IMAGES)
        partial.rename(path)
