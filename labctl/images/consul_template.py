"""The consul-template binary baked into the LB image, for the LB host's architecture.

From `images.consul_template_binary` (a binary, .zip or .tgz on the control machine),
else the official release archive fetched with plain HTTP (no Docker engine needed),
its SHA-256 checked against the published SHA256SUMS, and cached in ~/.cache/labctl.
An ELF binary built for another architecture than the LB host's is refused here,
before any host changes.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
import zipfile
from pathlib import Path

from labctl.images.errors import ImageError
from labctl.images.tags import file_identity
from labctl.paths import CACHE
from labctl.platforms import elf_arch
from labctl.spec import LabSpec

RELEASES = "https://releases.hashicorp.com/consul-template"


def binary_from_archive(archive: Path, dest: Path) -> None:
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


def _checked(binary: Path, arch: str, source: str) -> Path:
    built_for = elf_arch(binary)
    if built_for is not None and built_for != arch:
        raise ImageError(
            f"{source} is built for {built_for}, but the LB host runs {arch}; use the "
            f"linux_{arch} release archive (or a binary built for {arch}) instead."
        )
    return binary


def consul_template_for_lb(spec: LabSpec, arch: str = "amd64") -> Path:
    """The consul-template binary for an LB host of architecture `arch` (Docker's name):
    a local file, else the release archive for that architecture, checked."""
    version = spec.versions.consul_template
    local = spec.images.consul_template_binary
    if local is not None:
        if not local.is_file():
            raise ImageError(
                f"images.consul_template_binary {local} does not exist; point it at a "
                "consul-template binary, .zip or .tgz, or remove it to use the release archive."
            )
        dest = CACHE / "consul-template" / f"local-{file_identity(local)[:16]}" / "consul-template"
        if not dest.is_file():
            binary_from_archive(local, dest)
        return _checked(dest, arch, f"images.consul_template_binary {local}")
    cached = CACHE / "consul-template" / version / f"linux_{arch}" / "consul-template"
    if cached.is_file():
        return cached
    name = f"consul-template_{version}_linux_{arch}.zip"
    import httpx  # here: most verbs never download it

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
        binary_from_archive(Path(tmp.name), cached)
    return cached
