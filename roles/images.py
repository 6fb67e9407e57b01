"""Role `images`: give each host the images it runs, from the control machine.

labctl resolves every image on the control machine (local engine, bundle,
registry or recipe) and saves, per host, one archive of the images that host
needs. This role loads that archive over the pyinfra connection when the host
lacks any of them, so hosts never need a registry.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import DeployError, deploy

from roles.operations import images_present

DEFAULTS = {
    # {key: {"ref": ..., "id": ...}} for every image of the lab; written by labctl.
    "lab_images": {},
    # Archive on the control machine holding this host's images; written by labctl.
    "lab_image_archive": None,
}


def image_ref(key: str) -> tuple[str, str]:
    """(reference, ID) of one of the lab's images, for the roles that run it."""
    try:
        image = host.data.lab_images[key]
    except KeyError:
        raise DeployError(
            f"{host.name}: no {key} image was resolved; run `labctl apply` (it resolves "
            "images before converging) instead of pyinfra directly on a fresh lab."
        ) from None
    return image["ref"], image["id"]


@deploy("Deliver images", data_defaults=DEFAULTS)
def deliver_images() -> None:
    needed = host.data.lab_host_images
    if not needed:
        return
    images = {host.data.lab_images[key]["ref"]: host.data.lab_images[key]["id"] for key in needed}
    images_present(
        name=f"Load {', '.join(sorted(images))}",
        images=images,
        archive=host.data.lab_image_archive,
    )
