"""The consul-template binary for the LB image (labctl.consul_template): a local file or
the release archive for the LB host's architecture. No network: any HTTP fails."""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
import tempfile
import zipfile

import httpx
import pytest

from labctl.images import consul_template
from labctl.images.consul_template import consul_template_for_lb
from labctl.images.errors import ImageError
from labctl.spec import Versions, parse_spec
from tests.conftest import seed_hosts

BINARY = b"#!/bin/sh\necho consul-template v0.19.0\n"
VERSION = Versions().consul_template


def seed_spec(**top):
    return parse_spec({"hosts": seed_hosts(), **top})[0]


# --- consul_template_binary -------------------------------------------------------


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No release cache, temp dirs under tmp_path, and no network: any HTTP fails."""
    monkeypatch.setattr(consul_template, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    requests = []

    class Offline:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def get(self, url, **kwargs):
            requests.append(url)
            raise httpx.ConnectError("no network in unit tests", request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "Client", Offline)
    return requests


def with_binary(path) -> object:
    return seed_spec(images={"consul_template_binary": str(path)})


def test_missing_local_binary_names_the_setting(isolated, tmp_path):
    missing = tmp_path / "nowhere" / "consul-template"
    with pytest.raises(ImageError) as error:
        consul_template_for_lb(with_binary(missing))
    assert f"images.consul_template_binary {missing} does not exist" in str(error.value)
    assert isolated == []


def test_binary_is_extracted_from_a_zip(isolated, tmp_path):
    archive = tmp_path / "consul-template_0.19.0_linux_amd64.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("consul-template", BINARY)
    binary = consul_template_for_lb(with_binary(archive))
    assert binary.name == "consul-template"
    assert binary.read_bytes() == BINARY
    assert binary.stat().st_mode & 0o777 == 0o755


def test_binary_is_extracted_from_a_tgz(isolated, tmp_path):
    archive = tmp_path / "consul-template_0.19.0_linux_amd64.tgz"
    with tarfile.open(archive, "w:gz") as t:
        info = tarfile.TarInfo("consul-template")
        info.size = len(BINARY)
        t.addfile(info, io.BytesIO(BINARY))
    binary = consul_template_for_lb(with_binary(archive))
    assert binary.read_bytes() == BINARY
    assert binary.stat().st_mode & 0o777 == 0o755


def test_a_bare_binary_is_copied(isolated, tmp_path):
    bare = tmp_path / "my-consul-template"
    bare.write_bytes(BINARY)
    bare.chmod(0o600)
    binary = consul_template_for_lb(with_binary(bare))
    assert binary != bare
    assert binary.read_bytes() == BINARY
    assert binary.stat().st_mode & 0o777 == 0o755


def test_a_local_binary_needs_no_network(isolated, tmp_path):
    bare = tmp_path / "consul-template"
    bare.write_bytes(BINARY)
    consul_template_for_lb(with_binary(bare))
    assert isolated == []


def make_archive_without_binary(kind: str, path):
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("README.md", "no binary here")
    else:
        with tarfile.open(path, "w:gz") as t:
            info = tarfile.TarInfo("README.md")
            t.addfile(info, io.BytesIO(b""))


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_an_archive_without_the_binary_is_an_image_error(kind, isolated, tmp_path):
    archive = tmp_path / f"wrong.{kind}"
    make_archive_without_binary(kind, archive)
    with pytest.raises(ImageError, match="holds no consul-template binary"):
        consul_template_for_lb(with_binary(archive))


def test_unreachable_release_names_the_setting_and_bundle(isolated):
    with pytest.raises(ImageError) as error:
        consul_template_for_lb(seed_spec())
    message = str(error.value)
    assert f"consul-template {VERSION} cannot be had" in message
    assert "(ConnectError)" in message
    assert "images.consul_template_binary" in message
    assert "--bundle" in message
    assert isolated and all(url.startswith(consul_template.RELEASES) for url in isolated)


def test_a_cached_release_is_used_without_network(isolated, tmp_path):
    cached = tmp_path / "cache" / "consul-template" / VERSION / "linux_amd64" / "consul-template"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(BINARY)
    assert consul_template_for_lb(seed_spec()) == cached
    assert isolated == []


def elf(machine: int) -> bytes:
    """The first bytes of a little-endian 64-bit ELF executable for `machine`."""
    return b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 2, machine) + bytes(44)


def test_a_binary_for_the_lb_hosts_architecture_is_taken(isolated, tmp_path):
    bare = tmp_path / "consul-template"
    bare.write_bytes(elf(0xB7))
    assert consul_template_for_lb(with_binary(bare), "arm64").read_bytes() == elf(0xB7)


def test_a_binary_for_another_architecture_is_refused_naming_both(isolated, tmp_path):
    bare = tmp_path / "consul-template"
    bare.write_bytes(elf(0x3E))
    with pytest.raises(ImageError) as error:
        consul_template_for_lb(with_binary(bare), "arm64")
    message = str(error.value)
    assert f"images.consul_template_binary {bare} is built for amd64" in message
    assert "the LB host runs arm64" in message and "linux_arm64 release archive" in message


def test_the_release_archive_is_the_one_for_the_lb_hosts_architecture(tmp_path, monkeypatch):
    """The published archive for linux_arm64, checked against SHA256SUMS, then cached."""
    monkeypatch.setattr(consul_template, "CACHE", tmp_path / "cache")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("consul-template", elf(0xB7))
    name = f"consul-template_{VERSION}_linux_arm64.zip"
    sums = f"{hashlib.sha256(archive.getvalue()).hexdigest()}  {name}\n"
    served = {
        f"{consul_template.RELEASES}/{VERSION}/consul-template_{VERSION}_SHA256SUMS": sums.encode(),
        f"{consul_template.RELEASES}/{VERSION}/{name}": archive.getvalue(),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        body = served.get(str(request.url))
        return httpx.Response(200, content=body) if body else httpx.Response(404)

    real_client = httpx.Client
    monkeypatch.setattr(
        httpx, "Client", lambda **kw: real_client(transport=httpx.MockTransport(handler), **kw)
    )
    binary = consul_template_for_lb(seed_spec(), "arm64")
    assert binary == tmp_path / f"cache/consul-template/{VERSION}/linux_arm64/consul-template"
    assert binary.read_bytes() == elf(0xB7)
