"""Where the lab's images are resolved: on the control machine, or on the hosts.

- `control`: this machine's Docker engine resolves every image (on_control.py) and
  each host receives one archive of the images it lacks over SSH. It needs an engine
  here, of the hosts' architecture, and its upload grows with hosts x image size.
- `hosts`: each host resolves its own: it loads them from a bundle labctl uploads,
  pulls them (its engine's registry mirrors first), or builds the lab's recipes,
  which labctl uploads as small archives with the consul-template binary (fetched
  and checked here with plain HTTP). No engine is needed here, and every host gets
  images of its own architecture.
- `auto` (the default): `hosts` when no engine answers here, when the engine's
  architecture is not the hosts', or when images.registry_mirrors names a registry
  the hosts pull from (the cheaper shape for many hosts: bench/lifecycle.py
  --delivery); else `control`.

Everything that can be checked is checked here, before any host changes: the
bundle's images and the consul-template binary must fit the hosts' architectures.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import docker

from labctl import system
from labctl.images.bundles import bundle_arches, read_bundle
from labctl.images.engine import engine_arch
from labctl.images.errors import ImageError, wrong_arch
from labctl.images.on_control import prepare_on_control
from labctl.images.spec_images import LabImage, lab_images
from labctl.paths import lab_dir
from labctl.platforms import describe
from labctl.spec import LabSpec

Report = Callable[[str], None]


def choose(
    spec: LabSpec, client: docker.DockerClient | None, hosts_arch: dict[str, str]
) -> tuple[str, str]:
    """(delivery, why) for this spec, this machine's engine and the hosts' architectures."""
    wanted = spec.images.delivery
    arches = sorted(set(hosts_arch.values()))
    here = engine_arch(client) if client is not None else None
    if wanted == "hosts":
        return "hosts", "images.delivery: hosts"
    if wanted == "control":
        if client is None:
            raise ImageError(
                "images.delivery is control, but no Docker engine answers on this machine; "
                "start one, or set images.delivery: hosts (or auto) so the hosts get their "
                "images themselves."
            )
        if arches != [here]:
            hosts = "; ".join(describe(hosts_arch, arch) for arch in arches)
            raise ImageError(
                f"images.delivery is control, but this machine's engine makes {here} images "
                f"and {hosts}; set images.delivery: hosts (or auto) so each host pulls or "
                "builds images of its own architecture."
            )
        return "control", "images.delivery: control"
    if client is None:
        return "hosts", "no Docker engine answers on this machine"
    if arches != [here]:
        return (
            "hosts",
            f"this machine's engine makes {here} images, the hosts run {'/'.join(arches)}",
        )
    if spec.images.registry_mirrors:
        return "hosts", "the hosts pull from images.registry_mirrors"
    return "control", f"this machine's engine makes {here} images, as the hosts run"


def recipe_archive(spec: LabSpec, image: LabImage, arch: str) -> Path:
    """The image's recipe and extra build files, as one tar the hosts build from."""
    tag = image.ref.rpartition(":")[2]
    archive = lab_dir(spec) / "recipes" / f"{image.key}-{tag}-{arch}.tar"
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            sources = (p for p in image.recipe.rglob("*") if "__pycache__" not in p.parts)
            for path in sorted(p for p in sources if p.is_file()):
                tar.add(path, arcname=path.relative_to(image.recipe).as_posix())
            for name, source in image.context_files:
                tar.add(source(arch), arcname=name)
        partial.rename(archive)
    return archive


def plan_on_hosts(
    spec: LabSpec, hosts_arch: dict[str, str], bundle: Path | None, report: Report
) -> dict:
    """What each host must obtain, and from where; the state to record."""
    in_bundle = read_bundle(bundle) if bundle is not None else {}
    bundle_arch = bundle_arches(bundle) if bundle is not None else {}
    plans: dict[str, dict] = {}
    resolved = {}
    for image in lab_images(spec):
        resolved[image.key] = {"ref": image.ref, "id": None}
        for arch in sorted({hosts_arch[h] for h in image.hosts}):
            hosts = describe({h: hosts_arch[h] for h in image.hosts}, arch)
            if image.ref in in_bundle and bundle_arch.get(image.ref) != arch:
                raise wrong_arch(
                    image.ref, "in the bundle", bundle_arch.get(image.ref), arch, hosts
                )
        how = "in the bundle" if image.ref in in_bundle else "pulled by the hosts"
        if image.recipe is not None and image.ref not in in_bundle:
            how += ", else built there"
        report(f"image {image.ref}: {how}")
        for host in image.hosts:
            recipe = None
            if image.recipe is not None and image.ref not in in_bundle:
                recipe = str(recipe_archive(spec, image, hosts_arch[host]))
            plan = plans.setdefault(
                host, {"images": {}, "base_image": spec.docker.base_image, "bundle": None}
            )
            plan["images"][image.ref] = {
                "bundled": image.ref in in_bundle,
                "recipe": recipe,
                "build_args": dict(image.build_args),
            }
            if image.ref in in_bundle:
                plan["bundle"] = str(bundle.resolve())
    return {"images": resolved, "image_plans": plans}


def prepare(
    spec: LabSpec,
    hosts_arch: dict[str, str],
    bundle: Path | None = None,
    report: Report = lambda line: None,
) -> dict:
    """Resolve or plan every image the hosts run; return the state to record."""
    client = system.engine()
    delivery, why = choose(spec, client, hosts_arch)
    chosen = {"delivery": delivery, "delivery_reason": why}
    report(describe_delivery(chosen))
    if delivery == "control":
        (arch,) = set(hosts_arch.values())
        state = prepare_on_control(spec, client, arch, describe(hosts_arch, arch), bundle, report)
        return chosen | {"image_plans": {}} | state
    return chosen | {"image_archives": {}} | plan_on_hosts(spec, hosts_arch, bundle, report)


def describe_delivery(state: dict) -> str:
    """'images resolved by the hosts: <why>', from a lab's recorded state."""
    where = "by the hosts" if state.get("delivery") == "hosts" else "here"
    return f"images resolved {where}: {state.get('delivery_reason', 'images.delivery')}"
