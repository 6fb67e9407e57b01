"""The local Docker engine's images: which are present, their IDs and architecture,
and pulls (registry mirrors first)."""

from __future__ import annotations

import docker
from docker.errors import DockerException, ImageNotFound

from labctl.platforms import docker_arch


def present(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def image_id(client: docker.DockerClient, ref: str) -> str:
    return client.images.get(ref).id


def engine_arch(client: docker.DockerClient) -> str:
    return docker_arch(client.info()["Architecture"])


def try_pull(
    client: docker.DockerClient, ref: str, mirrors: list[str] = (), arch: str | None = None
) -> bool:
    """Pull `ref` (for `arch`) from each mirror, then from its own registry; tag a
    mirror's copy as `ref`."""
    platform = f"linux/{arch}" if arch else None
    for source in [f"{m.rstrip('/').split('://')[-1]}/{ref}" for m in mirrors] + [ref]:
        try:
            image = client.images.pull(source, platform=platform)
        except DockerException:
            continue
        if source != ref:
            repository, _, tag = ref.rpartition(":")
            image.tag(repository, tag)
        return True
    return False
