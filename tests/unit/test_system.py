"""Provider choice and missing prerequisites: one sentence naming what to install."""

from __future__ import annotations

import pytest

from labctl import system


@pytest.fixture
def machine(monkeypatch):
    """A control machine whose tools, engine and root rights the test decides."""
    state = {"tools": set(), "engine": False, "root_with_apt": False}
    monkeypatch.setattr(system, "have", lambda tool: tool.command in state["tools"])
    monkeypatch.setattr(system, "engine", lambda: object() if state["engine"] else None)
    monkeypatch.setattr(system, "can_install", lambda: state["root_with_apt"])
    monkeypatch.setattr(system.shutil, "which", lambda cmd: cmd in state["tools"] or None)
    monkeypatch.setattr(system.os, "geteuid", lambda: 0 if state["root_with_apt"] else 1000)
    return state


def test_auto_prefers_virtualbox(machine):
    machine["tools"] = {"VBoxManage", "vagrant"}
    machine["engine"] = True
    assert system.choose_provider("auto") == "virtualbox"


def test_auto_takes_docker_when_an_engine_answers(machine):
    machine["engine"] = True
    assert system.choose_provider("auto") == "docker"


def test_auto_takes_docker_when_up_may_install_it(machine):
    machine["root_with_apt"] = True
    assert system.choose_provider("auto") == "docker"


def test_auto_with_nothing_names_what_to_install(machine):
    with pytest.raises(system.PrerequisiteError) as caught:
        system.choose_provider("auto")
    message = str(caught.value)
    assert "neither VirtualBox nor a Docker engine" in message
    assert "apt-get install docker.io" in message


def test_an_explicit_provider_is_kept(machine):
    assert system.choose_provider("ssh") == "ssh"


def test_virtualbox_requested_but_missing(machine):
    with pytest.raises(system.PrerequisiteError) as caught:
        system.ensure_provider("virtualbox")
    assert "needs VirtualBox, which is not installed" in str(caught.value)
    assert "provider: docker" in str(caught.value)


def test_missing_vagrant_without_root_says_how_to_install(machine):
    machine["engine"] = True
    with pytest.raises(system.PrerequisiteError) as caught:
        system.ensure_provider("docker")
    assert "apt-get install vagrant as root" in str(caught.value)


def test_a_user_installs_through_sudo_and_root_directly(monkeypatch):
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    assert system.as_root(["apt-get", "update"])[:2] == ["sudo", "-n"]
    monkeypatch.setattr(system.os, "geteuid", lambda: 0)
    assert system.as_root(["apt-get", "update"]) == ["apt-get", "update"]


def test_sudo_asking_for_a_password_is_one_sentence_naming_sudo_v(monkeypatch):
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(system.shutil, "which", lambda command: f"/usr/bin/{command}")
    failed = type("Result", (), {"returncode": 1, "stderr": "sudo: a password is required\n"})
    monkeypatch.setattr(system.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(system.PrerequisiteError) as caught:
        system.apt_install("vagrant")
    assert str(caught.value) == (
        "`apt-get update -qq` needs root and sudo asks for a password; run `sudo -v` first "
        "(sudo then remembers it for a while) and retry, or run as root."
    )


@pytest.mark.parametrize(
    ("uid", "docker_host", "accessible", "refuses"),
    [(1000, None, False, True), (1000, None, True, False), (0, None, False, False),
     (1000, "tcp://10.0.0.1:2375", False, False)],
    ids=["user-refused", "user-in-docker-group", "root", "remote-engine"],
)  # fmt: skip
def test_an_engine_that_serves_root_only_is_noticed(
    monkeypatch, tmp_path, uid, docker_host, accessible, refuses
):
    socket = tmp_path / "docker.sock"
    socket.touch()
    monkeypatch.setattr(system, "DOCKER_SOCKET", socket)
    monkeypatch.setattr(system.os, "geteuid", lambda: uid)
    monkeypatch.setattr(system.os, "access", lambda path, mode: accessible)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    if docker_host:
        monkeypatch.setenv("DOCKER_HOST", docker_host)
    assert system.engine_refuses_user() is refuses
