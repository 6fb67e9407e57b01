"""Role `host_images`: give each host the images it runs.

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

from dataclasses import asdict

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files

from roles.contract import LAB_IMAGE_TOOL, TEMPLATES, HostImages
from roles.operations import images_obtained, images_present


def image_ref(key: str) -> tuple[str, str]:
    """(reference, identity) of one of the lab's images, for the roles that run it: the
    image ID where labctl knows it, else the reference (a pinned tag or a recipe hash)."""
    try:
        image = host.data.lab_host.images.images[key]
    except KeyError:
        raise DeployError(
            f"{host.name}: no {key} image was resolved; run `labctl apply` (it resolves "
            "images before converging) instead of pyinfra directly on a fresh lab."
        ) from None
    return image.ref, image.id or image.ref


@deploy("Deliver images")
def deliver_images() -> None:
    delivered: HostImages = host.data.lab_host.images
    if not delivered.needed:
        return
    images = {delivered.images[key].ref: delivered.images[key].id for key in delivered.needed}
    if delivered.delivery == "hosts":
        files.put(
            name="Install lab-image, the host-side image resolver",
            src=str(TEMPLATES / "images" / "lab-image"),
            dest=LAB_IMAGE_TOOL,
            mode="755",
        )
        images_obtained(name=f"Obtain {', '.join(sorted(images))}", **asdict(delivered.plan))
        return
    images_present(
        name=f"Load {', '.join(sorted(images))}",
        images=images,
        archive=delivered.archive,
        openssh_load=list(delivered.archive_load_command or []) or None,
    )
