"""templates/images/lab-image, the host-side image resolver, against a fake `docker`.

The fake keeps the engine's images in a file: `image inspect` answers from it, `pull`
adds the images the case makes pullable and fails like Docker for the others, `build`
and `load` add what they would. Each case checks what was run and what was recorded
for teardown."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from roles.contract import TEMPLATES

SCRIPT = TEMPLATES / "images" / "lab-image"

FAKE_DOCKER = r"""#!/bin/sh
echo "$*" >> "$FAKE_DIR/calls"
case "$1 $2" in
  "image inspect") grep -qx "$3" "$FAKE_DIR/images" ;;
  "pull -q")
    if printf '%s\n' $FAKE_PULLABLE | grep -qx "$3"; then echo "$3" >> "$FAKE_DIR/images"; echo "$3"
    else echo "Error response from daemon: pull access denied for $3" >&2; exit 1; fi ;;
  "build -q")
    [ -z "$FAKE_BUILD_FAILS" ] || { echo "step 3 failed" >&2; exit 1; }
    echo "$4" >> "$FAKE_DIR/images" ;;
  "load -q") cat >/dev/null; printf '%s\n' $FAKE_BUNDLE_REFS >> "$FAKE_DIR/images" ;;
  *) echo "unexpected docker $*" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def host(tmp_path):
    """Run lab-image with the fake docker first on PATH; returns (run, calls, record)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    (tmp_path / "images").write_text("")
    record = tmp_path / "record" / "images"

    def run(*args: str, present=(), **fake: str) -> subprocess.CompletedProcess:
        with (tmp_path / "images").open("a") as images:
            images.writelines(f"{ref}\n" for ref in present)
        env = os.environ | {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_DIR": str(tmp_path),
            "LAB_IMAGE_RECORD": str(record),
            **{f"FAKE_{k.upper()}": v for k, v in fake.items()},
        }
        return subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True)

    def calls() -> list[str]:
        path = tmp_path / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def recorded() -> list[str]:
        return record.read_text().splitlines() if record.exists() else []

    return run, calls, recorded


def recipe(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    archive = tmp_path / "lb-abc-amd64.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "Dockerfile", arcname="Dockerfile")
    return archive


def test_a_present_image_is_left_alone(host):
    run, calls, recorded = host
    result = run("get", "lab/lb:1", present=["lab/lb:1"])
    assert result.returncode == 0, result.stderr
    assert calls() == ["image inspect lab/lb:1"] and recorded() == []


def test_a_pullable_image_is_pulled_and_recorded(host):
    run, calls, recorded = host
    result = run("get", "hashicorp/consul:1.11.3", pullable="hashicorp/consul:1.11.3")
    assert result.returncode == 0, result.stderr
    assert calls()[-1] == "pull -q hashicorp/consul:1.11.3"
    assert recorded() == ["hashicorp/consul:1.11.3"]


def test_an_image_no_registry_serves_is_built_on_the_base_and_recorded(host, tmp_path):
    run, calls, recorded = host
    archive = recipe(tmp_path)
    result = run(
        "get", "lab/lb:1", "--recipe", str(archive), "--base", "debian:bookworm",
        "--build-arg=NGINX_VERSION=1.22.1", present=["debian:bookworm"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    build = calls()[-1].split()
    assert build[:4] == ["build", "-q", "-t", "lab/lb:1"]
    assert "BASE_IMAGE=debian:bookworm" in build and "--build-arg=NGINX_VERSION=1.22.1" in build
    assert recorded() == ["lab/lb:1"]
    assert not archive.exists()  # the upload goes once built


def test_a_missing_base_is_pulled_first_and_recorded_too(host, tmp_path):
    run, calls, recorded = host
    archive = recipe(tmp_path)
    result = run(
        "get", "lab/lb:1", "--recipe", str(archive), "--base", "debian:bookworm",
        pullable="debian:bookworm",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pull -q debian:bookworm" in calls()
    assert recorded() == ["debian:bookworm", "lab/lb:1"]


def test_an_image_without_registry_or_recipe_is_one_sentence(host):
    run, _, recorded = host
    result = run("get", "hashicorp/consul:1.11.3")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("lab-image: image hashicorp/consul:1.11.3 cannot be had on ")
    assert "(Error response from daemon: pull access denied for hashicorp/consul:1.11.3)" in line
    assert "images.registry_mirrors" in line and "labctl up --bundle FILE" in line
    assert recorded() == []


def test_a_failed_build_is_one_sentence_with_dockers_last_line(host, tmp_path):
    run, _, _ = host
    result = run(
        "get", "lab/lb:1", "--recipe", str(recipe(tmp_path)), "--base", "debian:bookworm",
        present=["debian:bookworm"], build_fails="1",
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "building lab/lb:1 on " in line and "failed (step 3 failed)" in line


def bundle(tmp_path: Path) -> Path:
    """A file shaped like `labctl bundle save`'s: an images.tar inside a tar."""
    path = tmp_path / "bundle.tar"
    (tmp_path / "images.tar").write_bytes(b"saved images")
    with tarfile.open(path, "w") as tar:
        tar.add(tmp_path / "images.tar", arcname="images.tar")
    return path


def test_a_bundle_is_recorded_loaded_and_removed(host, tmp_path):
    run, calls, recorded = host
    uploaded = bundle(tmp_path)
    result = run("load", str(uploaded), "a:1", "b:2", bundle_refs="a:1 b:2")
    assert result.returncode == 0, result.stderr
    assert "load -q" in calls() and recorded() == ["a:1", "b:2"] and not uploaded.exists()


def test_a_bundle_without_an_image_is_one_sentence(host, tmp_path):
    run, _, recorded = host
    result = run("load", str(bundle(tmp_path)), "a:1", "b:2", bundle_refs="a:1")
    assert result.returncode == 1
    assert "holds no b:2; make it again with labctl bundle save FILE." in result.stderr
    assert recorded() == ["a:1", "b:2"]  # recorded first: teardown removes what did load
