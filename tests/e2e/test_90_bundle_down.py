"""Last: an image bundle carries the lab across `down` with no registry, and `down`
leaves nothing behind."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import docker

from labctl import vagrant
from labctl.images.bundles import BUNDLE_MANIFEST
from labctl.images.tags import image_namespace
from labctl.paths import lab_dir, vagrant_home
from tests.e2e.conftest import (
    assert_nothing_left,
    images_taken_away,
    labctl,
    start_lab,
    suites_image,
)


def test_bundle_save_down_then_up_from_the_bundle(lab, e2e_spec, tags_before, tmp_path):
    bundle = tmp_path / "lab-images.tar"
    try:
        bundle_save_down_then_up(lab, e2e_spec, tags_before, bundle)
    finally:
        bundle.unlink(missing_ok=True)  # about 350 MB, which pytest would keep for 3 runs


def bundle_save_down_then_up(lab, e2e_spec, tags_before, bundle: Path) -> None:
    saved = labctl(e2e_spec, "bundle", "save", str(bundle), timeout=600)
    assert saved.returncode == 0, saved.stderr
    with tarfile.open(bundle) as archive:
        manifest = json.load(archive.extractfile(BUNDLE_MANIFEST))["images"]
    refs = sorted(manifest)
    # Consul, the demo service and the LB (nginx + consul-template).
    spec, _, _ = lab
    own = f"{image_namespace()}/"
    assert sorted(manifest) == sorted([spec.consul_image, *(r for r in refs if r.startswith(own))])
    names = [r.split(":")[0] for r in refs if r.startswith(own)]
    assert names == [f"{own}demo-service", f"{own}lb"]

    assert labctl(e2e_spec, "down", timeout=300).returncode == 0
    client = docker.from_env()
    # Only the suite's own images go (a real Consul image someone pulled before stays).
    removed = [ref for ref in refs if suites_image(ref, tags_before)]
    assert set(refs) - set(removed) <= {spec.consul_image}
    with images_taken_away():  # the other worker's labs resolve them too
        for ref in removed:
            client.images.remove(ref, force=True)
        start_lab(e2e_spec, leftovers=False)  # `down` took the mark with the lab
        up = labctl(e2e_spec, "up", "--bundle", str(bundle), timeout=1500)
    assert up.returncode == 0, up.stdout + up.stderr
    # The images are the bundle's own (a rebuild of the demo recipe would get a new ID).
    assert {ref: client.images.get(ref).id for ref in refs} == manifest


def machine_index_entries(home: Path, spec) -> list[str]:
    """The lab's machines in the Vagrant machine index under `home` (a Vagrant data
    directory), by name."""
    index = home / "data" / "machine-index" / "index"
    if not index.exists():
        return []
    machines = json.loads(index.read_text()).get("machines", {}).values()
    return sorted(m["name"] for m in machines if str(lab_dir(spec)) in m.get("local_data_path", ""))


def test_down_leaves_nothing_behind(lab, e2e_spec):
    """Nor an entry in a Vagrant machine index: the lab's own (in its directory, which
    Vagrant used while the lab was up), nor the user's, which it never used."""
    spec, _, _ = lab
    users_home = Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")
    machines = [vagrant.machine_name(spec, h.name) for h in spec.hosts]
    assert machine_index_entries(vagrant_home(spec), spec) == sorted(machines)
    assert machine_index_entries(users_home, spec) == []
    result = labctl(e2e_spec, "down", timeout=300)
    assert result.returncode == 0, result.stderr
    assert_nothing_left(spec)  # the lab's containers, and its directory with its index
    assert machine_index_entries(users_home, spec) == []
    again = labctl(e2e_spec, "down", timeout=300)
    assert again.returncode == 0 and "already down" in again.stderr
