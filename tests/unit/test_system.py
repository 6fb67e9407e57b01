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
    assert "sudo apt-get install vagrant" in str(caught.value)
