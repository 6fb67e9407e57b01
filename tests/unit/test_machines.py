"""Reaching existing machines before anything changes on them (labctl.machines,
labctl.remote): one sentence per machine that cannot be used, naming it and the cause,
and the host-key policy. No network: SSH is faked where it would be used."""

from __future__ import annotations

import errno
import socket

import paramiko
import pytest

from labctl import machines
from labctl.connections import ssh_data_from_vagrant
from labctl.machines import UnreachableError, reach, reachable_arches
from labctl.remote import RemoteError, _AcceptNew, describe, known_hosts_entry, openssh_command

SSH = {
    "ssh_hostname": "192.168.70.3",
    "ssh_port": 22,
    "ssh_user": "admin",
    "ssh_key": "/keys/admin",
    "ssh_known_hosts_file": "/tmp/kh",
}


@pytest.fixture
def answers(monkeypatch):
    """Each host's answer to the probe: (exit status, output) or a RemoteError."""
    table: dict[str, object] = {}

    def run(ssh, command, timeout=30.0, sudo=False):
        answer = table[ssh["ssh_hostname"]]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(machines, "run", run)
    return table


def connections(*addresses: str) -> dict[str, dict]:
    return {f"m{n}": SSH | {"ssh_hostname": a} for n, a in enumerate(addresses, start=1)}


def test_each_machine_architecture_is_read_in_dockers_words(answers):
    answers.update(
        {"10.0.0.1": (0, "arch=x86_64\nlab=\n"), "10.0.0.2": (0, "arch=aarch64\nlab=labssh\n")}
    )
    arches = reachable_arches(connections("10.0.0.1", "10.0.0.2"), "labssh")
    assert arches == {"m1": "amd64", "m2": "arm64"}


def test_every_unusable_machine_is_one_sentence_and_the_others_still_count(answers):
    answers.update(
        {
            "10.0.0.1": (0, "arch=x86_64\nlab=\n"),
            "10.0.0.2": RemoteError("10.0.0.2:22", "connection refused; start sshd there"),
            "10.0.0.3": (0, "arch=x86_64\nsudo=no\nlab=\n"),
            "10.0.0.4": (0, "arch=x86_64\nlab=other\n"),
        }
    )
    arches, problems = reach(connections("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"), "labssh")
    assert arches == {"m1": "amd64"}
    assert problems == [
        "m2 (10.0.0.2:22): connection refused; start sshd there",
        "m3 (10.0.0.3:22): admin may not sudo without a password; allow it (`admin ALL=(ALL) "
        "NOPASSWD:ALL` in /etc/sudoers.d/) or connect as root",
        "m4 (10.0.0.4:22): it holds lab other, not labssh; take that lab down first "
        "(`labctl --spec ITS_SPEC down`) or use other machines",
    ]
    with pytest.raises(UnreachableError) as error:
        reachable_arches(connections("10.0.0.1", "10.0.0.2"), "labssh")
    assert error.value.problems == ["m2 (10.0.0.2:22): connection refused; start sshd there."]


def key() -> paramiko.PKey:
    return paramiko.RSAKey.generate(1024)


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (
            paramiko.BadHostKeyException("192.168.70.3", key(), key()),
            "its SSH host key is not the one /tmp/kh records for 192.168.70.3; if the machine "
            "was rebuilt, forget the old key with `ssh-keygen -f /tmp/kh -R '192.168.70.3'` "
            "and retry (if it was not, something is intercepting the connection)",
        ),
        (
            paramiko.AuthenticationException("Authentication failed."),
            "authentication as admin with /keys/admin failed; install that key's public half "
            "in ~admin/.ssh/authorized_keys there, or fix ssh.user / ssh.key in the lab spec",
        ),
        (
            paramiko.ssh_exception.NoValidConnectionsError(
                {("192.168.70.3", 22): ConnectionRefusedError(errno.ECONNREFUSED, "refused")}
            ),
            "connection refused; start sshd there, or fix the host's address or ssh_port",
        ),
        (
            paramiko.ssh_exception.NoValidConnectionsError(
                {("192.168.70.3", 22): OSError(errno.EHOSTUNREACH, "No route to host")}
            ),
            "no route to host; check that the machine is up and reachable",
        ),
        (
            TimeoutError("timed out"),
            "no answer within 15 s; check that the machine is up and reachable",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            "the name 192.168.70.3 does not resolve; fix the host's ssh_host",
        ),
        (
            OSError(113, "No route to host"),
            "no route to host; check that the machine is up and reachable",
        ),
    ],
    ids=["host-key", "auth", "refused", "unreachable", "timeout", "dns", "no-route"],
)
def test_each_ssh_failure_is_named_with_its_fix(exc, cause):
    assert describe(SSH, exc, timeout=15) == cause


def test_a_host_key_on_another_port_is_recorded_as_openssh_does():
    assert known_hosts_entry(SSH | {"ssh_port": 2222}) == "[192.168.70.3]:2222"


def test_accept_new_appends_one_line_and_keeps_the_rest_of_the_file(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("# my own comment\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\n")
    client = paramiko.SSHClient()
    new = key()
    _AcceptNew(known).missing_host_key(client, "[192.168.70.3]:2222", new)
    lines = known.read_text().splitlines()
    assert lines[:2] == ["# my own comment", "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"]
    assert lines[2] == f"[192.168.70.3]:2222 ssh-rsa {new.get_base64()}"
    assert client.get_host_keys().lookup("[192.168.70.3]:2222")["ssh-rsa"] == new


def test_openssh_runs_as_root_with_the_spec_key_and_the_recorded_host_keys(tmp_path):
    """The OpenSSH client gets the policy paramiko applies to the same data: accept-new
    with the spec's known_hosts file, and only the spec's key."""
    ssh = SSH | {"ssh_user": "root", "ssh_strict_host_key_checking": "accept-new",
                 "ssh_known_hosts_file": str(tmp_path / "kh")}  # fmt: skip
    command = openssh_command(ssh, "docker load", timeout=60)
    assert command[:2] == ["ssh", "-o"] and command[-2:] == ["root@192.168.70.3", "docker load"]
    options = " ".join(command[1:-2])
    assert "-i /keys/admin -o IdentitiesOnly=yes" in options
    assert "StrictHostKeyChecking=accept-new" in options
    assert f"UserKnownHostsFile={tmp_path / 'kh'}" in options
    assert "BatchMode=yes" in options and "ConnectTimeout=60" in options


def test_openssh_to_a_vagrant_machine_sudoes_and_keeps_no_host_key():
    conf = {"HostName": "172.17.0.3", "Port": "22", "User": "vagrant", "IdentityFile": "/k"}
    command = openssh_command(ssh_data_from_vagrant(conf), "docker load")
    assert command[-2:] == ["vagrant@172.17.0.3", "sudo -n sh -c 'docker load'"]
    options = " ".join(command[1:-2])
    assert "StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null" in options
