"""A labctl verb keeps one SSH connection per host for all its commands there
(labctl.remote.keep_connections); a kept connection that died is replaced before the
command starts, so no command runs twice. No network: paramiko's client is faked."""

from __future__ import annotations

import io

import paramiko
import pytest

from labctl import remote

SSH = {"ssh_hostname": "192.168.70.3", "ssh_port": 22, "ssh_user": "root"}


class FakeChannel:
    def __init__(self, ran: list[str]):
        self.ran = ran

    def settimeout(self, timeout):
        pass

    def set_combine_stderr(self, combine):
        pass

    def exec_command(self, command):
        self.ran.append(command)

    def makefile(self, mode):
        return io.BytesIO(b"ok\n")

    def recv_exit_status(self):
        return 0

    def close(self):
        pass


class FakeClient:
    """A connection: `dead` ones refuse new sessions, as a transport whose host went away."""

    def __init__(self, ran: list[str]):
        self.ran, self.dead, self.closed = ran, False, False

    def get_transport(self):
        return self

    def is_active(self):
        return not self.closed

    def open_session(self, timeout=None):
        if self.dead:
            raise paramiko.SSHException("Timeout opening channel.")
        return FakeChannel(self.ran)

    def close(self):
        self.closed = True


@pytest.fixture
def connections(monkeypatch):
    """Every connection remote.connect made, in order (`.ran`: the commands run over
    them); kept connections forgotten after."""

    class Made(list):
        ran: list[str]

    made = Made()
    ran = made.ran = []

    def connect(ssh, timeout=30.0):
        made.append(FakeClient(ran))
        return made[-1]

    monkeypatch.setattr(remote, "connect", connect)
    monkeypatch.setattr(remote, "_keep", False)
    yield made
    remote.close_all()


def test_without_keeping_each_command_has_its_own_connection(connections):
    assert remote.run(SSH, "true") == (0, "ok\n")
    assert remote.run(SSH, "true") == (0, "ok\n")
    assert len(connections) == 2 and all(c.closed for c in connections)


def test_a_verb_keeps_one_connection_per_host(connections):
    remote.keep_connections()
    for _ in range(3):
        remote.run(SSH, "true")
    remote.run(SSH | {"ssh_hostname": "192.168.70.4"}, "true")
    assert len(connections) == 2  # one per host
    assert connections.ran == ["true"] * 4


def test_a_kept_connection_that_died_is_replaced_and_the_command_runs_once(connections):
    remote.keep_connections()
    remote.run(SSH, "first")
    connections[0].dead = True  # its host restarted in between
    assert remote.run(SSH, "second") == (0, "ok\n")
    assert len(connections) == 2 and connections[0].closed
    assert connections.ran == ["first", "second"]


def test_a_new_connection_that_refuses_a_session_is_the_hosts_error(connections, monkeypatch):
    def connect(ssh, timeout=30.0):
        client = FakeClient([])
        client.dead = True
        return client

    monkeypatch.setattr(remote, "connect", connect)
    with pytest.raises(remote.RemoteError, match=r"192\.168\.70\.3:22"):
        remote.run(SSH, "true")
