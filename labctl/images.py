"""Every image the lab runs, and its resolution on the control machine's engine.

An image comes from, in order: the local engine, a bundle file (`labctl bundle save`),
a registry pull (mirrors first), or a build recipe in `templates/`, always for the
hosts' architecture. With this resolution (images.delivery `control`) hosts never
pull: they receive the images they lack over the pyinfra connection. Where the hosts
resolve their images themselves instead, see labctl.delivery.

The base image the host containers and recipes build on can also be made with
`debootstrap` + `docker import` from an apt mirror. That is what makes the lab
work in networks where Docker Hub is blocked but the Debian archive is not.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound

from labctl import system
from labctl.paths import CACHE
from labctl.platforms import docker_arch
from labctl.spec import PROJECT_ROOT, LabSpec

DEBIAN_TAG_TO_SUITE = {"12": "bookworm", "11": "bullseye", "13": "trixie"}
DEBIAN_SUITES = {*DEBIAN_TAG_TO_SUITE, *DEBIAN_TAG_TO_SUITE.values()}
DEBIAN_MIRROR_ENV = "LAB_DEBIAN_MIRROR"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
TEMPLATES = PROJECT_ROOT / "templates"
BUNDLE_MANIFEST = "manifest.json"
BUNDLE_IMAGES = "images.tar"
# Repository namespace of the images built from the lab's recipes (`lab/lb:<hash>`);
# checkouts sharing an engine can keep apart (e.g. LAB_IMAGE_NAMESPACE=dev/lab).
IMAGE_NAMESPACE_ENV = "LAB_IMAGE_NAMESPACE"
STANDINS = PROJECT_ROOT / "tests" / "standins"


class ImageError(Exception):
    """An image cannot be had; the message names it and the ways to provide it."""


@dataclass(frozen=True)
class LabImage:
    """One image the lab runs: its reference, recipe (if any) and the hosts that need it."""

    key: str
    ref: str
    hosts: tuple[str, ...]
    recipe: Path | None = None
    build_args: tuple[tuple[str, str], ...] = ()
    # Files added to the recipe's build context: name -> function of the architecture
    # built for, returning a local path.
    context_files: tuple[tuple[str, Callable[[str], Path]], ...] = ()


def image_namespace() -> str:
    return os.environ.get(IMAGE_NAMESPACE_ENV) or "lab"


def standin_consul_ref(version: str) -> str:
    """The Consul stand-in's image: its tag carries a hash of its sources, so checkouts
    with different stand-ins on one engine never take each other's image."""
    recipe = STANDINS / "consul"
    return f"{image_namespace()}-standin/consul:{version}-{recipe_tag(recipe)}"


def is_standin(ref: str) -> bool:
    return ref.rpartition(":")[0].endswith("-standin/consul")


def _consul_template(spec: LabSpec) -> Callable[[str], Path]:
    def binary(arch: str) -> Path:
        # Imported here: labctl.consul_template imports this module's ImageError.
        from labctl.consul_template import consul_template_binary

        return consul_template_binary(spec, arch)

    return binary


def recipe_tag(recipe: Path, *identity: str) -> str:
    """A tag that changes whenever the recipe's files or anything else it is built from do."""
    digest = hashlib.sha256(json.dumps(identity).encode())
    # Bytecode caches are not sources: a recipe that ran locally keeps its tag.
    sources = (p for p in recipe.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in sorted(sources):
        digest.update(path.relative_to(recipe).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def file_identity(path: Path | None) -> str:
    if path is None:
        return "release"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return f"missing:{path}"


def lab_images(spec: LabSpec) -> list[LabImage]:
    """The images the spec needs, and where."""
    base = spec.docker.base_image
    demo_recipe = TEMPLATES / "demo_service"
    lb_recipe = TEMPLATES / "lb"
    ct_version = spec.versions.consul_template
    ct_source = spec.images.consul_template_binary
    lb_args = (("NGINX_VERSION", spec.versions.nginx),)
    lb_tag = recipe_tag(lb_recipe, base, *lb_args[0], ct_version, file_identity(ct_source))
    namespace = image_namespace()
    images = [
        LabImage(
            "consul",
            spec.consul_image,
            tuple(h.name for h in spec.hosts if h.consul != "none"),
            # The offline road's stand-in is built from its sources, like a recipe.
            recipe=STANDINS / "consul" if is_standin(spec.consul_image) else None,
        ),
        LabImage(
            "demo_service",
            f"{namespace}/demo-service:{recipe_tag(demo_recipe, base)}",
            tuple(spec.instance_hosts()),
            recipe=demo_recipe,
        ),
        LabImage(
            "lb",
            f"{namespace}/lb:{lb_tag}",
            tuple(h.name for h in spec.hosts if h.lb),
            recipe=lb_recipe,
            build_args=lb_args,
            context_files=(("consul-template", _consul_template(spec)),),
        ),
    ]
    return [image for image in images if image.hosts]


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


def cannot_be_had(image: LabImage, where: str) -> ImageError:
    """The sentence for an image no source gave: the four ways to provide it."""
    return ImageError(
        f"image {image.ref} cannot be had: {where}; provide it by `docker load -i FILE`, by "
        "`labctl up --bundle FILE` with a bundle from `labctl bundle save`, or by a reachable "
        f"registry (images.registry_mirrors or images.{image.key} in the lab spec), or try the "
        "lab without any registry on its stand-ins (not HashiCorp software): `labctl up --offline`."
    )


def wrong_arch(ref: str, how: str, actual: str, arch: str, hosts: str) -> ImageError:
    return ImageError(
        f"image {ref} ({how}) is built for {actual}, but {hosts}; nothing was changed on the "
        f"hosts: provide it for {arch} (remove this one with `docker rmi {ref}` so labctl "
        "pulls or builds one), or set images.delivery: hosts so each host gets its own."
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


# Per-host archives (`docker save` of what a host runs), kept across `down` and `up`
# and shared by every lab on this machine: each is named by the references and image
# IDs it holds, so it never goes stale. Archives no lab asked for lately go, the least
# recently used first, once the others pass ARCHIVES_MAX_BYTES.
ARCHIVES = CACHE / "archives"
ARCHIVES_MAX_BYTES = 3 * 2**30
# An archive used this recently may be on its way to another lab's hosts: never pruned.
ARCHIVE_IN_USE_SECONDS = 30 * 60


def host_archive(images: dict[str, str]) -> Path:
    """`docker save` of the given images (ref -> ID) into one archive, shared layers once;
    cached by references and IDs (its time of use renewed)."""
    refs = sorted(images)
    digest = hashlib.sha256(json.dumps([refs, sorted(images.values())]).encode()).hexdigest()[:16]
    archive = ARCHIVES / f"{digest}.tar"
    if archive.exists():
        archive.touch()
    else:
        ARCHIVES.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(f".{os.getpid()}.partial")  # two labs may save it at once
        subprocess.run(["docker", "save", "-o", str(partial), *refs], check=True)
        partial.rename(archive)
    return archive


def prune_archives(keep: set[Path]) -> None:
    """Remove the least recently used archives beyond ARCHIVES_MAX_BYTES, except those
    in `keep` (this lab's) and those another lab may be delivering now."""
    stats = {}
    for archive in ARCHIVES.glob("*.tar"):
        if archive not in keep:
            try:
                stats[archive] = archive.stat()
            except FileNotFoundError:  # another lab's prune took it since the glob
                continue
    total = sum(st.st_size for st in stats.values())
    recent = time.time() - ARCHIVE_IN_USE_SECONDS
    for archive, st in sorted(stats.items(), key=lambda item: item[1].st_mtime):
        if total <= ARCHIVES_MAX_BYTES:
            break
        if st.st_mtime < recent:
            archive.unlink(missing_ok=True)
            total -= st.st_size


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
    """Write every image the spec needs, and a manifest of refs and IDs, into one file."""
    client = system.ensure_engine()
    manifest = {}
    for image in lab_images(spec):
        report(f"image {image.ref}: {resolve(client, spec, image)}")
        manifest[image.ref] = image_id(client, image.ref)
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
    return manifest
