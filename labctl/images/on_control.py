"""images.delivery `control`: every image resolved on the control machine's engine, for
the hosts' architecture, from, in order: the local engine, a bundle file, a registry
pull (mirrors first), or a build recipe in templates/. Hosts then never pull: each
receives one archive of the images it runs over the pyinfra connection (roles/host_images.py).
Where the hosts resolve their images themselves instead, see delivery.py."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import docker
from docker.errors import DockerException

from labctl import system
from labctl.images.archives import host_archive, prune_archives
from labctl.images.bundles import load_bundle, read_bundle, write_bundle
from labctl.images.debian_base import ensure_base_image
from labctl.images.engine import engine_arch, image_id, present, try_pull
from labctl.images.errors import ImageError, wrong_arch
from labctl.images.spec_images import LabImage, lab_images
from labctl.spec import LabSpec


def build(client: docker.DockerClient, image: LabImage, base_image: str) -> None:
    """Build `image` from its recipe on this engine (for the engine's own architecture)."""
    ensure_base_image(client, base_image)
    arch = engine_arch(client)
    try:
        with tempfile.TemporaryDirectory(prefix="labctl-build-") as context:
            shutil.copytree(image.recipe, context, dirs_exist_ok=True)
            for name, source in image.context_files:
                shutil.copy2(source(arch), Path(context) / name)
            client.images.build(
                path=context,
                tag=image.ref,
                buildargs={"BASE_IMAGE": base_image, **dict(image.build_args)},
                rm=True,
            )
    except DockerException as exc:
        raise ImageError(
            f"building {image.ref} from {image.recipe} failed ({str(exc).strip()[:200]}); "
            "fix the recipe or the network its package installs need, then retry."
        ) from None


def cannot_be_had(image: LabImage, where: str) -> ImageError:
    """The sentence for an image no source gave: the four ways to provide it."""
    return ImageError(
        f"image {image.ref} cannot be had: {where}; provide it by `docker load -i FILE`, by "
        "`labctl up --bundle FILE` with a bundle from `labctl bundle save`, or by a reachable "
        f"registry (images.registry_mirrors or images.{image.key} in the lab spec), or try the "
        "lab without any registry on its stand-ins (not HashiCorp software): `labctl up --offline`."
    )


def resolve(
    client: docker.DockerClient,
    spec: LabSpec,
    image: LabImage,
    bundle: Path | None = None,
    arch: str | None = None,
    hosts: str = "",
) -> str:
    """Make one image present in the local engine, for `arch` (default: the engine's);
    return how it was obtained. `hosts` names the hosts of that architecture."""
    arch = arch or engine_arch(client)
    how = None
    if present(client, image.ref):
        how = "present"
    elif bundle is not None and image.ref in read_bundle(bundle):
        load_bundle(client, bundle)
        how = "bundle" if present(client, image.ref) else None
    if how is None and try_pull(client, image.ref, spec.images.registry_mirrors, arch):
        how = "pulled"
    if how is None and image.recipe is not None:
        build(client, image, spec.docker.base_image)
        how = "built"
    if how is None:
        raise cannot_be_had(image, "it is not in the local engine and no registry served it")
    actual = client.images.get(image.ref).attrs.get("Architecture", arch)
    if actual != arch:
        raise wrong_arch(image.ref, how, actual, arch, hosts or f"the hosts run {arch}")
    return how


def prepare_on_control(
    spec: LabSpec,
    client: docker.DockerClient,
    arch: str,
    hosts: str,
    bundle: Path | None = None,
    report=lambda line: None,
) -> dict:
    """Resolve every image on this engine (every host runs `arch`, as `hosts` says) and
    write the per-host archives; return the state to record."""
    images = lab_images(spec)
    resolved = {}
    for image in images:
        how = resolve(client, spec, image, bundle, arch, hosts)
        report(f"image {image.ref}: {how}")
        resolved[image.key] = {"ref": image.ref, "id": image_id(client, image.ref)}
    archives = {}
    for host in spec.hosts:
        needed = {
            resolved[i.key]["ref"]: resolved[i.key]["id"] for i in images if host.name in i.hosts
        }
        if needed:
            archives[host.name] = host_archive(needed)
    prune_archives(set(archives.values()))
    return {"images": resolved, "image_archives": {h: str(a) for h, a in archives.items()}}


def save_bundle(spec: LabSpec, path: Path, report=lambda line: None) -> dict[str, str]:
    """Resolve every image the spec needs on this engine and write them, with a manifest of
    references and IDs, into one bundle file; return the manifest."""
    client = system.ensure_engine()
    manifest = {}
    for image in lab_images(spec):
        report(f"image {image.ref}: {resolve(client, spec, image)}")
        manifest[image.ref] = image_id(client, image.ref)
    write_bundle(path, manifest)
    return manifest
