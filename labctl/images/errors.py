"""ImageError: an image the lab needs cannot be had, or not for the hosts' architecture."""

from __future__ import annotations


class ImageError(Exception):
    """An image cannot be had; the message names it and the ways to provide it."""


def wrong_arch(ref: str, how: str, actual: str, arch: str, hosts: str) -> ImageError:
    return ImageError(
        f"image {ref} ({how}) is built for {actual}, but {hosts}; nothing was changed on the "
        f"hosts: provide it for {arch} (remove this one with `docker rmi {ref}` so labctl "
        "pulls or builds one), or set images.delivery: hosts so each host gets its own."
    )
