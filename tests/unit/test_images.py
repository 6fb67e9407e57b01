"""Which images the lab needs where, and bundles (labctl.images). Nothing here
reaches a Docker engine or the internet."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time

import pytest

from labctl.images import archives, bundles, on_control, spec_images, standins
from labctl.images.bundles import read_bundle
from labctl.images.errors import ImageError
from labctl.images.spec_images import lab_images
from labctl.images.tags import IMAGE_NAMESPACE_ENV
from labctl.spec import load_spec, parse_spec
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
        shutil.copytree(spec_images.TEMPLATES / name, copy / name)
    monkeypatch.setattr(spec_images, "TEMPLATES", copy)
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
        info = tarfile.TarInfo(bundles.BUNDLE_MANIFEST)
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


# --- stand-ins, namespace, architecture -----------------------------------------------


def test_recipe_images_take_the_namespace_from_the_environment(monkeypatch):
    monkeypatch.setenv(IMAGE_NAMESPACE_ENV, "dev/lab")
    refs = {image.key: image.ref for image in lab_images(spec_from("lab.yaml"))}
    assert refs["demo_service"].startswith("dev/lab/demo-service:")
    assert refs["lb"].startswith("dev/lab/lb:")
    assert standins.standin_consul_ref("1.11.3").startswith("dev/lab-standin/consul:1.11.3-")


def test_the_consul_standin_is_built_from_its_sources_like_a_recipe():
    spec = seed_spec(images={"consul": standins.standin_consul_ref("1.11.3")})
    consul = next(i for i in lab_images(spec) if i.key == "consul")
    assert consul.recipe == standins.STANDINS / "consul"
    assert next(i for i in lab_images(seed_spec()) if i.key == "consul").recipe is None


def test_an_image_no_source_gives_names_four_ways_including_the_offline_road():
    consul = lab_images(seed_spec())[0]
    message = str(on_control.cannot_be_had(consul, "no registry served it"))
    assert message.startswith("image hashicorp/consul:1.11.3 cannot be had: no registry served it;")
    for way in ("docker load -i FILE", "labctl up --bundle FILE", "images.registry_mirrors"):
        assert way in message
    assert "stand-ins (not HashiCorp software): `labctl up --offline`." in message


class FakeEngine:
    """An engine holding images of given architectures, on an amd64 machine."""

    def __init__(self, arches: dict[str, str]):
        self.arches = arches
        self.images = self

    def info(self):
        return {"Architecture": "x86_64"}

    def get(self, ref):
        from docker.errors import ImageNotFound

        if ref not in self.arches:
            raise ImageNotFound(ref)
        return type("Image", (), {"attrs": {"Architecture": self.arches[ref]}, "id": "sha"})()


def test_an_image_present_for_another_architecture_stops_with_one_sentence():
    consul = lab_images(seed_spec())[0]
    engine = FakeEngine({consul.ref: "arm64"})
    with pytest.raises(ImageError) as error:
        on_control.resolve(engine, seed_spec(), consul, None, "amd64", "server1, server2 run amd64")
    assert str(error.value) == (
        "image hashicorp/consul:1.11.3 (present) is built for arm64, but server1, server2 run "
        "amd64; nothing was changed on the hosts: provide it for amd64 (remove this one with "
        "`docker rmi hashicorp/consul:1.11.3` so labctl pulls or builds one), or set "
        "images.delivery: hosts so each host gets its own."
    )


def test_an_image_present_for_the_hosts_architecture_is_taken():
    consul = lab_images(seed_spec())[0]
    assert on_control.resolve(FakeEngine({consul.ref: "amd64"}), seed_spec(), consul) == "present"


def test_archives_past_the_limit_go_least_recently_used_first_never_one_in_use(
    tmp_path, monkeypatch
):
    """Shared by every lab: this lab's archives stay, and so does one another lab used
    within ARCHIVE_IN_USE_SECONDS (it may be on its way to that lab's hosts)."""
    monkeypatch.setattr(archives, "ARCHIVES", tmp_path)
    monkeypatch.setattr(archives, "ARCHIVES_MAX_BYTES", 250)
    now = time.time()
    ages = {"mine": 10 * 86400, "oldest": 3 * 86400, "older": 2 * 86400, "old": 86400,
            "in-use": 60}  # fmt: skip
    for name, age in ages.items():
        (tmp_path / f"{name}.tar").write_bytes(b"x" * 100)
        os.utime(tmp_path / f"{name}.tar", (now - age, now - age))
    archives.prune_archives({tmp_path / "mine.tar"})
    # Others held 400 bytes: the two least recently used go, leaving 200 of the 250.
    assert sorted(p.stem for p in tmp_path.glob("*.tar")) == ["in-use", "mine", "old"]
