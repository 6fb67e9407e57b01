"""Which images the lab needs where, bundles, and the consul-template binary
(labctl.images). Nothing here reaches a Docker engine or the internet."""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
import zipfile

import httpx
import pytest

from labctl import images
from labctl.images import ImageError, consul_template_binary, lab_images, read_bundle
from labctl.spec import Versions, load_spec, parse_spec
from tests.conftest import PROJECT_ROOT, seed_hosts

BINARY = b"#!/bin/sh\necho consul-template v0.19.0\n"


def spec_from(path: str):
    return load_spec(PROJECT_ROOT / path)[0]


def seed_spec(**top):
    return parse_spec({"hosts": seed_hosts(), **top})[0]


def where(spec) -> dict[str, tuple[str, ...]]:
    return {image.key: image.hosts for image in lab_images(spec)}


def tags(spec) -> dict[str, str]:
    return {image.key: image.ref.rpartition(":")[2] for image in lab_images(spec)}


# --- lab_images -------------------------------------------------------------------


def test_default_spec_images_and_hosts():
    assert where(spec_from("lab.yaml")) == {
        "consul": ("server1", "server2", "server3"),
        "demo_service": ("server1", "server2", "server3"),
        "lb": ("server3",),
    }


def test_five_hosts_images_and_hosts():
    assert where(spec_from("examples/five-hosts.yaml")) == {
        "consul": ("consul1", "consul2", "consul3", "web1", "web2"),
        "demo_service": ("web1", "web2"),
        "lb": ("web1",),
    }


def test_default_spec_references():
    refs = {image.key: image.ref for image in lab_images(spec_from("lab.yaml"))}
    assert refs["consul"] == "hashicorp/consul:1.11.3"
    assert refs["demo_service"].startswith("lab/demo-service:")
    assert refs["lb"].startswith("lab/lb:")


def test_an_image_no_host_needs_is_left_out():
    hosts = [h | {"lb": False} for h in seed_hosts()]
    assert "lb" not in where(parse_spec({"hosts": hosts})[0])


def test_images_consul_overrides_the_consul_reference():
    spec = seed_spec(images={"consul": "registry.local:5000/consul:1.11.3"})
    assert lab_images(spec)[0].ref == "registry.local:5000/consul:1.11.3"


@pytest.fixture
def recipes(tmp_path, monkeypatch):
    """A tmp copy of the recipes, used by lab_images."""
    copy = tmp_path / "templates"
    for name in ("demo_service", "lb"):
        shutil.copytree(images.TEMPLATES / name, copy / name)
    monkeypatch.setattr(images, "TEMPLATES", copy)
    return copy


def test_tags_are_the_same_from_a_copy_of_the_recipes(recipes):
    spec = spec_from("lab.yaml")
    assert tags(spec) == tags(spec)


def test_demo_tag_changes_when_its_recipe_changes(recipes):
    spec = spec_from("lab.yaml")
    before = tags(spec)
    with (recipes / "demo_service" / "app.py").open("a") as f:
        f.write("# changed\n")
    after = tags(spec)
    assert after["demo_service"] != before["demo_service"]
    assert after["lb"] == before["lb"]


def test_lb_tag_changes_when_its_recipe_changes(recipes):
    spec = spec_from("lab.yaml")
    before = tags(spec)
    with (recipes / "lb" / "service.ctmpl").open("a") as f:
        f.write("\n")
    after = tags(spec)
    assert after["lb"] != before["lb"]
    assert after["demo_service"] == before["demo_service"]


def test_a_file_added_to_a_recipe_changes_its_tag(recipes):
    spec = spec_from("lab.yaml")
    before = tags(spec)
    (recipes / "lb" / "extra.conf").write_text("")
    assert tags(spec)["lb"] != before["lb"]


def test_lb_tag_changes_with_the_nginx_version(recipes):
    before = tags(seed_spec())
    after = tags(seed_spec(versions={"nginx": "1.22.2"}))
    assert after["lb"] != before["lb"]
    assert after["demo_service"] == before["demo_service"]
    assert after["consul"] == before["consul"]


def test_lb_build_arg_is_the_nginx_version():
    lb = next(i for i in lab_images(seed_spec(versions={"nginx": "1.22.2"})) if i.key == "lb")
    assert lb.build_args == (("NGINX_VERSION", "1.22.2"),)


def test_lb_tag_changes_with_the_consul_template_version(recipes):
    before = tags(seed_spec())
    assert tags(seed_spec(versions={"consul_template": "0.19.4"}))["lb"] != before["lb"]


def test_lb_tag_changes_with_the_local_consul_template_binary(recipes, tmp_path):
    binary = tmp_path / "consul-template"
    binary.write_bytes(BINARY)
    spec = seed_spec(images={"consul_template_binary": str(binary)})
    before = tags(spec)
    binary.write_bytes(BINARY + b"# rebuilt\n")
    assert tags(spec)["lb"] != before["lb"]


# --- read_bundle ------------------------------------------------------------------


def test_read_bundle_returns_the_manifest(tmp_path):
    path = tmp_path / "lab.bundle"
    data = b'{"images": {"lab/lb:abc": "sha256:l1"}}'
    with tarfile.open(path, "w") as bundle:
        info = tarfile.TarInfo(images.BUNDLE_MANIFEST)
        info.size = len(data)
        bundle.addfile(info, io.BytesIO(data))
    assert read_bundle(path) == {"lab/lb:abc": "sha256:l1"}


def test_read_bundle_of_a_file_that_is_no_bundle_names_bundle_save(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a tar file\n")
    with pytest.raises(ImageError) as error:
        read_bundle(path)
    assert f"{path} is not a lab bundle" in str(error.value)
    assert "make one with `labctl bundle save FILE`" in str(error.value)


def test_read_bundle_of_a_tar_without_manifest_names_bundle_save(tmp_path):
    path = tmp_path / "other.tar"
    with tarfile.open(path, "w") as bundle:
        bundle.addfile(tarfile.TarInfo("images.tar"), io.BytesIO(b""))
    with pytest.raises(ImageError, match="labctl bundle save"):
        read_bundle(path)


def test_read_bundle_of_a_missing_file_names_bundle_save(tmp_path):
    with pytest.raises(ImageError, match="labctl bundle save"):
        read_bundle(tmp_path / "absent.bundle")


# --- consul_template_binary -------------------------------------------------------


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No release cache, temp dirs under tmp_path, and no network: any HTTP fails."""
    monkeypatch.setattr(images, "CACHE", tmp_path / "cache")
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
        consul_template_binary(with_binary(missing))
    assert f"images.consul_template_binary {missing} does not exist" in str(error.value)
    assert isolated == []


def test_binary_is_extracted_from_a_zip(isolated, tmp_path):
    archive = tmp_path / "consul-template_0.19.0_linux_amd64.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("consul-template", BINARY)
    binary = consul_template_binary(with_binary(archive))
    assert binary.name == "consul-template"
    assert binary.read_bytes() == BINARY
    assert binary.stat().st_mode & 0o777 == 0o755


def test_binary_is_extracted_from_a_tgz(isolated, tmp_path):
    archive = tmp_path / "consul-template_0.19.0_linux_amd64.tgz"
    with tarfile.open(archive, "w:gz") as t:
        info = tarfile.TarInfo("consul-template")
        info.size = len(BINARY)
        t.addfile(info, io.BytesIO(BINARY))
    binary = consul_template_binary(with_binary(archive))
    assert binary.read_bytes() == BINARY
    assert binary.stat().st_mode & 0o777 == 0o755


def test_a_bare_binary_is_copied(isolated, tmp_path):
    bare = tmp_path / "my-consul-template"
    bare.write_bytes(BINARY)
    bare.chmod(0o600)
    binary = consul_template_binary(with_binary(bare))
    assert binary != bare
    assert binary.read_bytes() == BINARY
    assert binary.stat().st_mode & 0o777 == 0o755


def test_a_local_binary_needs_no_network(isolated, tmp_path):
    bare = tmp_path / "consul-template"
    bare.write_bytes(BINARY)
    consul_template_binary(with_binary(bare))
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
        consul_template_binary(with_binary(archive))


def test_unreachable_release_names_the_setting_and_bundle(isolated):
    with pytest.raises(ImageError) as error:
        consul_template_binary(seed_spec())
    message = str(error.value)
    assert f"consul-template {Versions().consul_template} cannot be had" in message
    assert "(ConnectError)" in message
    assert "images.consul_template_binary" in message
    assert "--bundle" in message
    assert isolated and all(url.startswith(images.RELEASES) for url in isolated)


def test_a_cached_release_is_used_without_network(isolated, tmp_path):
    cached = tmp_path / "cache" / "consul-template" / Versions().consul_template / "consul-template"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(BINARY)
    assert consul_template_binary(seed_spec()) == cached
    assert isolated == []
