"""Role `images`: give each host the images it runs.

With images.delivery `control`, labctl resolves every image on the control machine
(local engine, bundle, registry or recipe) and saves, per host, one archive of the
images that host needs; this role loads it over the pyinfra connection when the host
lacks any of them, so hosts never need a registry. With `hosts`, the host obtains
each image itself (templates/images/lab-image): from a bundle this role uploads,
from a registry (its engine's mirrors first), or built from the recipe archive this
role uploads. Either way each image the lab puts on a host is recorded there, so
teardown removes exactly those.
"""

from __future__ import annotations

import shutil

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files

from labctl.images import TEMPLATES
from labctl.remote import openssh_command
from roles.operations import LAB_IMAGE_TOOL, images_obtained, images_present

DEFAULTS = {
    # {key: {"ref": ..., "id": ...}} for every image of the lab; written by labctl.
    # The ID is None where the hosts obtain the image: the reference names it then.
    "lab_images": {},
    # `control` or `hosts` (images.delivery, resolved by labctl).
    "lab_image_delivery": "control",
    # control: the archive on the control machine holding this host's images.
    "lab_image_archive": None,
    # hosts: what this host obtains and from where (labctl.delivery.plan_on_hosts).
    "lab_image_plan": None,
}


def image_ref(key: str) -> tuple[str, str]:
    """(reference, identity) of one of the lab's images, for the roles that run it: the
    image ID where labctl knows it, else the reference (a pinned tag or a recipe hash)."""
    try:
        image = host.data.lab_images[key]
    except KeyError:
        raise DeployError(
            f"{host.name}: no {key} image was resolved; run `labctl apply` (it resolves "
            "images before converging) instead of pyinfra directly on a fresh lab."
        ) from None
    return image["ref"], image["id"] or image["ref"]


@deploy("Deliver images", data_defaults=DEFAULTS)
def deliver_images() -> None:
    needed = host.data.lab_host_images
    if not needed:
        return
    images = {host.data.lab_images[key]["ref"]: host.data.lab_images[key]["id"] for key in needed}
    if host.data.lab_image_delivery == "hosts":
        files.put(
            name="Install lab-image, the host-side image resolver",
            src=str(TEMPLATES / "images" / "lab-image"),
            dest=LAB_IMAGE_TOOL,
            mode="755",
        )
        images_obtained(name=f"Obtain {', '.join(sorted(images))}", **host.data.lab_image_plan)
        return
    images_present(
        name=f"Load {', '.join(sorted(images))}",
        images=images,
        archive=host.data.lab_image_archive,
        # OpenSSH streams it several times faster than pyinfra's SFTP, one process per host.
        openssh_load=openssh_command(host.data.dict(), "docker load", timeout=60)
        if shutil.which("ssh")
        else None,
    )
