"""Role consul's wait for a started agent (roles/consul.py agent_answers_command), run on
this machine's engine against containers of the test's own: an agent that stops at its
start (Consul refusing its configuration, the check a first configuration gets instead
of `consul validate`) fails the wait at once with the agent's own words; one that runs
but does not answer yet is waited for. `curl` is a stand-in that never connects, so no
request leaves the test."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import docker
import pytest

from labctl.images.debian_base import ensure_base_image
from labctl.spec import DockerProvider
from roles.consul import agent_answers_command

REFUSAL = "==> Config validation failed: invalid config key foo"


@pytest.fixture
def agent_container():
    """Run a container of the test's own as the agent, from `script`; its name."""
    client = docker.from_env()
    image = DockerProvider().base_image
    ensure_base_image(client, image)
    made = []

    def run(script: str) -> str:
        name = f"labtest-agent-{uuid.uuid4().hex[:8]}"
        made.append(client.containers.run(image, ["sh", "-c", script], name=name, detach=True,
                                          network_mode="none"))  # fmt: skip
        return name

    yield run
    for container in made:
        container.remove(force=True)


@pytest.fixture
def never_connects(tmp_path, monkeypatch):
    """A `curl` first on PATH that fails as curl does when nothing listens (exit 7)."""
    curl = tmp_path / "curl"
    curl.write_text("#!/bin/sh\nexit 7\n")
    curl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


def wait(name: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    command = agent_answers_command(name, "http://127.0.0.1:9", timeout)
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    return done, time.monotonic() - started


def test_an_agent_that_refuses_its_configuration_fails_the_wait_with_its_words(
    agent_container, never_connects
):
    name = agent_container(f"echo '{REFUSAL}' >&2; exit 1")
    client = docker.from_env()
    deadline = time.monotonic() + 30
    while client.containers.get(name).status != "exited" and time.monotonic() < deadline:
        time.sleep(0.1)
    done, seconds = wait(name, timeout=60)
    assert done.returncode == 1, done
    assert "the Consul agent stopped; its last lines:" in done.stderr
    assert REFUSAL in done.stderr
    assert seconds < 30  # not the whole timeout


def test_a_running_agent_that_does_not_answer_yet_is_waited_for(agent_container, never_connects):
    name = agent_container("sleep 60")
    done, seconds = wait(name, timeout=3)
    assert done.returncode == 124, done  # timeout's own status: waited the whole time
    assert "stopped" not in done.stderr
    assert seconds >= 3
