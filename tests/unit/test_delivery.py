"""Where images are resolved (labctl.delivery): the choice, and what each host is to obtain.
No Docker engine: the control machine's engine is a fake answering `info()`."""

from __future__ import annotations

import io
import json
import tarfile
from types import SimpleNamespace

import pytest

from labctl.images import consul_template, delivery
from labctl.images.bundles import BUNDLE_IMAGES, BUNDLE_MANIFEST, bundle_arches
from labctl.images.delivery import choose, plan_on_hosts
from labctl.images.errors import ImageError
from labctl.images.spec_images import lab_images
from labctl.spec import parse_spec
from tests.conftest import seed_hosts

AMD64 = dict.fromkeys(("server1", "server2", "server3"), "amd64")


def seed_spec(**images_settings):
    return parse_spec({"hosts": seed_hosts(), "images": images_settings})[0]


def engine(machine: str = "x86_64"):
    return SimpleNamespace(info=lambda: {"Architecture": machine})


# --- choose ---------------------------------------------------------------------------


SAME = "this machine's engine makes amd64 images, as the hosts run"
OTHER = "this machine's engine makes arm64 images, the hosts run amd64"
MIRRORS = {"registry_mirrors": ["http://m:5000"]}


@pytest.mark.parametrize(
    ("settings", "client", "expected"),
    [
        ({}, engine(), ("control", SAME)),
        ({}, None, ("hosts", "no Docker engine answers on this machine")),
        ({}, engine("aarch64"), ("hosts", OTHER)),
        (MIRRORS, engine(), ("hosts", "the hosts pull from images.registry_mirrors")),
        ({"delivery": "hosts"}, engine(), ("hosts", "images.delivery: hosts")),
        ({"delivery": "control"}, engine(), ("control", "images.delivery: control")),
    ],
    ids=["auto-same-arch", "auto-no-engine", "auto-other-arch", "auto-mirrors", "hosts", "control"],
)
def test_choice(settings, client, expected):
    assert choose(seed_spec(**settings), client, AMD64) == expected


def test_control_without_an_engine_is_one_sentence_naming_the_fix():
    with pytest.raises(ImageError) as error:
        choose(seed_spec(delivery="control"), None, AMD64)
    assert str(error.value) == (
        "images.delivery is control, but no Docker engine answers on this machine; start one, "
        "or set images.delivery: hosts (or auto) so the hosts get their images themselves."
    )


def test_control_for_hosts_of_another_architecture_names_them():
    arches = {"server1": "amd64", "server2": "arm64", "server3": "arm64"}
    with pytest.raises(ImageError) as error:
        choose(seed_spec(delivery="control"), engine(), arches)
    assert str(error.value) == (
        "images.delivery is control, but this machine's engine makes amd64 images and "
        "server1 runs amd64; server2, server3 run arm64; set images.delivery: hosts (or auto) "
        "so each host pulls or builds images of its own architecture."
    )


# --- plan_on_hosts --------------------------------------------------------------------


@pytest.fixture
def local(tmp_path, monkeypatch):
    """Recipe archives and caches under tmp_path; a local consul-template binary."""
    monkeypatch.setattr(delivery, "lab_dir", lambda spec: tmp_path / "lab")
    monkeypatch.setattr(consul_template, "CACHE", tmp_path / "cache")
    binary = tmp_path / "consul-template"
    binary.write_bytes(b"#!/bin/sh\n")
    return binary


def bundle_file(path, arches: dict[str, str]):
    """A bundle as `labctl bundle save` writes it, with image configs of these arches."""
    saved = io.BytesIO()
    entries = []
    with tarfile.open(fileobj=saved, mode="w") as tar:
        for n, (ref, arch) in enumerate(arches.items()):
            add(tar, f"{n}.json", json.dumps({"architecture": arch}).encode())
            entries.append({"Config": f"{n}.json", "RepoTags": [ref], "Layers": []})
        add(tar, "manifest.json", json.dumps(entries).encode())
    with tarfile.open(path, "w") as bundle:
        manifest = {"images": {ref: f"sha256:{n}" for n, ref in enumerate(arches)}}
        add(bundle, BUNDLE_MANIFEST, json.dumps(manifest).encode())
        add(bundle, BUNDLE_IMAGES, saved.getvalue())
    return path


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def refs(spec) -> dict[str, str]:
    return {image.key: image.ref for image in lab_images(spec)}


def test_without_a_bundle_hosts_pull_consul_and_build_the_recipes(local):
    spec = seed_spec(consul_template_binary=str(local))
    state = plan_on_hosts(spec, AMD64, None, lambda line: None)
    ref = refs(spec)
    assert state["images"]["lb"] == {"ref": ref["lb"], "id": None}
    plan = state["image_plans"]["server3"]
    assert plan["bundle"] is None and plan["base_image"] == "debian:bookworm"
    assert set(plan["images"]) == {ref["consul"], ref["demo_service"], ref["lb"]}
    assert plan["images"][ref["consul"]] == {"bundled": False, "recipe": None, "build_args": {}}
    lb = plan["images"][ref["lb"]]
    assert lb["build_args"] == {"NGINX_VERSION": "1.22.1"}
    with tarfile.open(lb["recipe"]) as recipe:
        names = recipe.getnames()
    assert {"Dockerfile", "service.ctmpl", "consul-template"} <= set(names)
    assert ref["lb"] not in state["image_plans"]["server1"]["images"]


def test_images_in_the_bundle_are_loaded_not_built(local, tmp_path):
    spec = seed_spec(consul_template_binary=str(local))
    ref = refs(spec)
    bundle = bundle_file(tmp_path / "b.tar", {ref["consul"]: "amd64", ref["lb"]: "amd64"})
    plan = plan_on_hosts(spec, AMD64, bundle, lambda line: None)["image_plans"]["server3"]
    assert plan["bundle"] == str(bundle)
    assert plan["images"][ref["lb"]]["bundled"] and plan["images"][ref["lb"]]["recipe"] is None
    assert not plan["images"][ref["demo_service"]]["bundled"]
    assert plan["images"][ref["demo_service"]]["recipe"] is not None


def test_a_bundle_image_of_another_architecture_stops_before_any_host_changes(local, tmp_path):
    spec = seed_spec(consul_template_binary=str(local))
    consul = refs(spec)["consul"]
    bundle = bundle_file(tmp_path / "b.tar", {consul: "arm64"})
    with pytest.raises(ImageError) as error:
        plan_on_hosts(spec, AMD64, bundle, lambda line: None)
    assert str(error.value).startswith(
        f"image {consul} (in the bundle) is built for arm64, but server1, server2, server3 run "
        "amd64; nothing was changed on the hosts"
    )


def test_bundle_arches_are_read_from_the_image_configs(tmp_path):
    bundle = bundle_file(tmp_path / "b.tar", {"a:1": "arm64", "b:2": "amd64"})
    assert bundle_arches(bundle) == {"a:1": "arm64", "b:2": "amd64"}


def test_a_bundle_without_images_is_one_sentence(tmp_path):
    path = tmp_path / "b.tar"
    with tarfile.open(path, "w") as bundle:
        add(bundle, BUNDLE_MANIFEST, b'{"images": {}}')
    with pytest.raises(ImageError, match=r"holds no readable images.tar .*labctl bundle save"):
        bundle_arches(path)
