"""A docker lab keeps Vagrant's data (its machine index) in a directory of its own, so
`down` removes the lab's containers and that directory without starting Vagrant, and
nothing of the user's Vagrant state is touched; VirtualBox labs, whose VMs need the
user's boxes, and docker labs Vagrant made before, keep the user's Vagrant home and
`vagrant destroy`."""

from __future__ import annotations

import json

import pytest
import yaml

from labctl import box, lifecycle, paths, vagrant
from labctl.cli import app
from labctl.spec import SPEC_ENV, parse_spec
from tests.support.bad_inputs import LAB, VALID
from tests.support.sandbox import Contact, invoke

USER_HOME = "/home/someone/.vagrant.d"


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A docker lab's spec file and parsed spec, its state under tmp_path."""
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path)
    monkeypatch.setenv("VAGRANT_HOME", USER_HOME)
    file = tmp_path / "lab.yaml"
    file.write_text(yaml.safe_dump(VALID))
    monkeypatch.setenv(SPEC_ENV, str(file))
    spec, _ = parse_spec(VALID)
    return file, spec


def made_by_vagrant(spec, own_home: bool) -> None:
    """What `up` leaves: the state, Vagrant's records of the machines, its own home."""
    machines = paths.vagrant_dotfile_path(spec) / "machines" / f"{LAB}-server1" / "docker"
    machines.mkdir(parents=True)
    (machines / "id").write_text("0123abcd")
    if own_home:
        (paths.vagrant_home(spec) / "data" / "machine-index").mkdir(parents=True)
    (paths.lab_dir(spec) / "state.json").write_text(json.dumps({"provider": "docker"}))


def test_a_docker_lab_gets_a_vagrant_home_inside_its_own_directory(lab):
    _, spec = lab
    env = vagrant.vagrant_env(spec, "docker")
    home = paths.vagrant_home(spec)
    assert env["VAGRANT_HOME"] == str(home) and home.is_dir()
    assert home.is_relative_to(paths.lab_dir(spec))


def test_a_virtualbox_lab_keeps_the_users_vagrant_home(lab):
    _, spec = lab
    assert vagrant.vagrant_env(spec, "virtualbox")["VAGRANT_HOME"] == USER_HOME
    assert not paths.vagrant_home(spec).exists()


def test_a_docker_lab_vagrant_made_in_the_users_home_stays_there(lab):
    _, spec = lab
    made_by_vagrant(spec, own_home=False)
    assert vagrant.vagrant_env(spec, "docker")["VAGRANT_HOME"] == USER_HOME
    assert not paths.vagrant_home(spec).exists()


def test_down_of_a_docker_lab_starts_no_vagrant_and_removes_its_vagrant_data(lab, monkeypatch):
    """No child process at all (the sandbox fails the test on one): the containers go
    through the engine's API (stubbed here), Vagrant's records with the lab's directory."""
    file, spec = lab
    made_by_vagrant(spec, own_home=True)
    swept = []
    monkeypatch.setattr(
        lifecycle, "_sweep_docker", lambda s, *_, **kw: swept.append(kw) or ["container x"]
    )
    monkeypatch.setattr(lifecycle.aptcache, "stop_after_the_last_lab", lambda: None)
    result = invoke(app, ["--spec", str(file), "down"])
    assert not isinstance(result.exception, Contact), f"reached outside: {result.exception}"
    assert result.exit_code == 0, result.output
    assert swept == [{"containers_only": True}, {"boxes_kept": box.CACHE_BOUND}]
    assert not paths.lab_dir(spec).exists()


def test_down_of_a_docker_lab_vagrant_made_in_the_users_home_asks_vagrant(lab, monkeypatch):
    """Its entries are in the user's machine index: Vagrant removes them."""
    _, spec = lab
    made_by_vagrant(spec, own_home=False)
    destroyed = []

    class FakeVagrant:
        def destroy(self):
            destroyed.append(True)

    monkeypatch.setattr(lifecycle.vagrant, "client", lambda s, provider: FakeVagrant())
    monkeypatch.setattr(lifecycle, "_sweep_docker", lambda *_, **__: [])
    monkeypatch.setattr(lifecycle.aptcache, "stop_after_the_last_lab", lambda: None)
    removed = lifecycle.down(spec, lambda line: None)
    assert destroyed == [True]
    assert "vagrant machines (docker)" in removed
