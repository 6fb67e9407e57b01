"""Every image the lab runs, resolved on the control machine, even where no registry answers.

An image comes from, in order: the local engine, a bundle file (`labctl bundle save`),
a registry pull (mirrors first), or a build recipe in `templates/`. Hosts never
pull: they receive the images they lack over the pyinfra connection.

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
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
from docker.errors import DockerException, ImageNotFound

from labctl import system
from labctl.paths import lab_dir
from labctl.spec import PROJECT_ROOT, LabSpec

DEBIAN_TAG_TO_SUITE = {"12": "bookworm", "11": "bullseye", "13": "trixie"}
DEBIAN_SUITES = {*DEBIAN_TAG_TO_SUITE, *DEBIAN_TAG_TO_SUITE.values()}
DEBIAN_MIRROR_ENV = "LAB_DEBIAN_MIRROR"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
TEMPLATES = PROJECT_ROOT / "templates"
BUNDLE_MANIFEST = "manifest.json"
BUNDLE_IMAGES = "images.tar"


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
    # Files added to the recipe's build context: name -> function returning a local path.
    context_files: tuple[tuple[str, Callable[[], Path]], ...] = ()


def recipe_tag(recipe: Path, *identity: str) -> str:
    """A tag that changes whenever the recipe's files or anything else it is built from do."""
    digest = hashlib.sha256(json.dumps(identity).encode())
    # Bytecode caches are not sources: a recipe that ran locally keeps its tag.
    sources = (p for p in recipe.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in sorted(sources):
        digest.update(path.relative_to(recipe).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _file_identity(path: Path | None) -> str:
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
    lb_tag = recipe_tag(lb_recipe, base, *lb_args[0], ct_version, _file_identity(ct_source))
    images = [
        LabImage(
            "consul",
            spec.consul_image,
            tuple(h.name for h in spec.hosts if h.consul != "none"),
        ),
        LabImage(
            "demo_service",
            f"lab/demo-service:{recipe_tag(demo_recipe, base)}",
            tuple(spec.instance_hosts()),
            recipe=demo_recipe,
        ),
        LabImage(
            "lb",
            f"lab/lb:{lb_tag}",
            tuple(h.name for h in spec.hosts if h.lb),
            recipe=lb_recipe,
            build_args=lb_args,
            context_files=(("consul-template", lambda: consul_template_binary(spec)),),
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


def try_pull(client: docker.DockerClient, ref: str, mirrors: list[str] = ()) -> bool:
    """Pull `ref` from each mirror, then from its own registry; tag a mirror's copy as `ref`."""
    for source in [f"{m.rstrip('/').split('://')[-1]}/{ref}" for m in mirrors] + [ref]:
        try:
            image = client.images.pull(source)
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
    ensure_base_image(client, base_image)
    try:
        with tempfile.TemporaryDirectory(prefix="labctl-build-") as context:
            shutil.copytree(image.recipe, context, dirs_exist_ok=True)
            for name, source in image.context_files:
                shutil.copy2(source(), Path(context) / name)
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


RELEASES = "https://releases.hashicorp.com/consul-template"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labctl"


def _binary_from_archive(archive: Path, dest: Path) -> None:
    """Extract `consul-template` from a release .zip or .tgz, or copy a bare binary."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                data = z.read("consul-template")
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                member = t.extractfile("consul-template")
                data = member.read() if member else b""
        else:
            data = archive.read_bytes()
    except KeyError:
        data = b""
    if not data:
        raise ImageError(
            f"{archive} holds no consul-template binary; use the release archive or the binary."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    dest.chmod(0o755)


def consul_template_binary(spec: LabSpec) -> Path:
    """The consul-template binary for the LB image: a local file, else the release, checked."""
    version = spec.versions.consul_template
    cached = CACHE / "consul-template" / version / "consul-template"
    local = spec.images.consul_template_binary
    if local is not None:
        if not local.is_file():
            raise ImageError(
                f"images.consul_template_binary {local} does not exist; point it at a "
                "consul-template binary, .zip or .tgz, or remove it to use the release archive."
            )
        dest = CACHE / "consul-template" / f"local-{_file_identity(local)[:16]}" / "consul-template"
        if not dest.is_file():
            _binary_from_archive(local, dest)
        return dest
    if cached.is_file():
        return cached
    name = f"consul-template_{version}_linux_amd64.zip"
    try:
        with httpx.Client(timeout=30, follow_redirects=True) as client:
            sums = client.get(f"{RELEASES}/{version}/consul-template_{version}_SHA256SUMS")
            sums.raise_for_status()
            archive = client.get(f"{RELEASES}/{version}/{name}")
            archive.raise_for_status()
    except httpx.HTTPError as exc:
        raise ImageError(
            f"consul-template {version} cannot be had: {RELEASES} did not answer "
            f"({type(exc).__name__}); set images.consul_template_binary to a local binary or "
            "release archive, or `labctl up --bundle FILE` with a bundle holding the LB image."
        ) from None
    published = {line.split()[1]: line.split()[0] for line in sums.text.splitlines() if line}
    actual = hashlib.sha256(archive.content).hexdigest()
    if published.get(name) != actual:
        raise ImageError(
            f"{name} has SHA-256 {actual}, not the published {published.get(name)}; "
            "a proxy or mirror altered it: fetch it another way and set "
            "images.consul_template_binary."
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".zip") as tmp:
        tmp.write(archive.content)
        tmp.flush()
        _binary_from_archive(Path(tmp.name), cached)
    return cached


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


def load_bundle(client: docker.DockerClient, path: Path) -> None:
    with tarfile.open(path) as bundle:
        images = bundle.extractfile(BUNDLE_IMAGES)
        if images is None:
            raise ImageError(f"{path} has no {BUNDLE_IMAGES}; make it again with labctl.")
        client.images.load(images)


def resolve(
    client: docker.DockerClient, spec: LabSpec, image: LabImage, bundle: Path | None = None
) -> str:
    """Make one image present in the local engine; return how it was obtained."""
    if present(client, image.ref):
        return "present"
    if bundle is not None and image.ref in read_bundle(bundle):
        load_bundle(client, bundle)
        if present(client, image.ref):
            return "bundle"
    if try_pull(client, image.ref, spec.images.registry_mirrors):
        return "pulled"
    if image.recipe is not None:
        build(client, image, spec.docker.base_image)
        return "built"
    raise ImageError(
        f"image {image.ref} cannot be had: it is not in the local engine and no registry "
        "served it; provide it by `docker load -i FILE`, by `labctl up --bundle FILE` with a "
        "bundle from `labctl bundle save`, or by a reachable registry (images.registry_mirrors "
        f"or images.{image.key} in the lab spec)."
    )


def host_archive(spec: LabSpec, images: dict[str, str]) -> Path:
    """`docker save` of the given images (ref -> ID) into one archive, shared layers once;
    cached by references and IDs."""
    refs = sorted(images)
    digest = hashlib.sha256(json.dumps([refs, sorted(images.values())]).encode()).hexdigest()[:16]
    archive = lab_dir(spec) / "images" / f"{digest}.tar"
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(".partial")
        subprocess.run(["docker", "save", "-o", str(partial), *refs], check=True)
        partial.rename(archive)
    return archive


def prepare(spec: LabSpec, bundle: Path | None = None, report=lambda line: None) -> dict:
    """Resolve every image and write the per-host archives; return the state to record."""
    client = system.ensure_engine()
    images = lab_images(spec)
    resolved = {}
    for image in images:
        how = resolve(client, spec, image, bundle)
        report(f"image {image.ref}: {how}")
        resolved[image.key] = {"ref": image.ref, "id": image_id(client, image.ref)}
    archives = {}
    for host in spec.hosts:
        needed = {
            resolved[i.key]["ref"]: resolved[i.key]["id"] for i in images if host.name in i.hosts
        }
        if needed:
            archives[host.name] = str(host_archive(spec, needed))
    return {"images": resolved, "image_archives": archives}


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
