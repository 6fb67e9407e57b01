"""Run a command on a lab host over SSH (paramiko), with the inventory's connection data.

Host keys follow the policy pyinfra's SSH connector applies to the same data
(`ssh_strict_host_key_checking`, `ssh_known_hosts_file`): with `accept-new` a first
contact is recorded in the known_hosts file and a changed key is refused; with `no`
(Vagrant's throwaway machines, known_hosts /dev/null) nothing is checked or kept.
"""

from __future__ import annotations

import atexit
import errno
import shlex
import socket
import threading
from pathlib import Path
from typing import Any

import paramiko
from paramiko.hostkeys import HostKeyEntry

# How to reach a host: pyinfra's connection keys, as its SSH connector names them
# (ssh_hostname, ssh_port, ssh_user, ssh_key, ssh_known_hosts_file, ...).
SshData = dict[str, Any]

# One writer at a time: several hosts are probed in parallel.
_KNOWN_HOSTS_LOCK = threading.Lock()


class RemoteError(Exception):
    """A host could not be reached or did not answer; `cause` says why, and the fix."""

    def __init__(self, where: str, cause: str):
        super().__init__(f"{where}: {cause}")
        self.where = where
        self.cause = cause


def address(ssh: SshData) -> str:
    return f"{ssh['ssh_hostname']}:{ssh.get('ssh_port', 22)}"


def known_hosts_entry(ssh: SshData) -> str:
    """The name a host's key is recorded under (OpenSSH's and paramiko's form)."""
    port = int(ssh.get("ssh_port", 22))
    return ssh["ssh_hostname"] if port == 22 else f"[{ssh['ssh_hostname']}]:{port}"


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """OpenSSH's StrictHostKeyChecking=accept-new: record an unknown host's key by
    appending one line (paramiko's own save would rewrite the user's whole file)."""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        line = HostKeyEntry([hostname], key).to_line()
        with _KNOWN_HOSTS_LOCK, self.path.open("a") as known_hosts:
            known_hosts.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)


def _host_key_policy(client: paramiko.SSHClient, ssh: SshData) -> None:
    known = ssh.get("ssh_known_hosts_file")
    if ssh.get("ssh_strict_host_key_checking") == "no" or known in (None, "/dev/null"):
        # Kept in memory only (no file is loaded, so none is written), and silently.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        return
    path = Path(known).expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    client.load_host_keys(str(path))
    client.set_missing_host_key_policy(_AcceptNew(path))


def describe(ssh: SshData, exc: BaseException, timeout: float = 30.0) -> str:
    """What went wrong reaching a host, and the fix, as the end of one sentence."""
    user = ssh.get("ssh_user", "root")
    if isinstance(exc, paramiko.BadHostKeyException):
        known = Path(ssh["ssh_known_hosts_file"]).expanduser()
        entry = known_hosts_entry(ssh)
        return (
            f"its SSH host key is not the one {known} records for {entry}; if the machine "
            f"was rebuilt, forget the old key with `ssh-keygen -f {known} -R '{entry}'` and "
            "retry (if it was not, something is intercepting the connection)"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        key = ssh.get("ssh_key") or "the SSH agent and default keys"
        return (
            f"authentication as {user} with {key} failed; install that key's public half in "
            f"~{user}/.ssh/authorized_keys there, or fix ssh.user / ssh.key in the lab spec"
        )
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        # paramiko gathers one error per address, each a refusal or "no route to host".
        refused = all(e.errno == errno.ECONNREFUSED for e in exc.errors.values())
        exc = (
            ConnectionRefusedError() if refused else OSError(errno.EHOSTUNREACH, "No route to host")
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused; start sshd there, or fix the host's address or ssh_port"
    if isinstance(exc, socket.gaierror):
        return f"the name {ssh['ssh_hostname']} does not resolve; fix the host's ssh_host"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {timeout:.0f} s; check that the machine is up and reachable"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror.lower()}; check that the machine is up and reachable"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def connect(ssh: SshData, timeout: float = 30.0) -> paramiko.SSHClient:
    """An open connection to the host; RemoteError naming the cause otherwise."""
    client = paramiko.SSHClient()
    try:
        _host_key_policy(client, ssh)
        client.connect(
            ssh["ssh_hostname"],
            port=int(ssh.get("ssh_port", 22)),
            username=ssh.get("ssh_user"),
            key_filename=ssh.get("ssh_key"),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            # An explicit key is the only one tried, as pyinfra's ssh_key is.
            allow_agent="ssh_key" not in ssh,
            look_for_keys="ssh_key" not in ssh,
        )
    except (TimeoutError, paramiko.SSHException, OSError) as exc:
        client.close()
        raise RemoteError(address(ssh), describe(ssh, exc, timeout)) from exc
    return client


def _key(ssh: SshData) -> tuple:
    """What makes two connections the same: everything in the connection data."""
    return tuple(sorted((name, str(value)) for name, value in ssh.items()))


# One open connection per host for a whole labctl verb (keep_connections): a verb asks
# each host several things (its architecture, its engine, the checks of `verify`), and
# an SSH handshake costs more than most of those answers.
_OPEN: dict[tuple, paramiko.SSHClient] = {}
_OPEN_LOCK = threading.Lock()
_keep = False
# A kept connection that does not open a session in this time is taken for dead (its
# host went away in between) and replaced.
REUSE_TIMEOUT = 5.0


def keep_connections() -> None:
    """From now on, keep each host's connection open for the next command, until the
    process ends: for a labctl verb, one short run. A long-lived caller (the test suite,
    whose hosts come and go) leaves it off and gets a connection per command."""
    global _keep
    _keep = True


def _connection(ssh: SshData, timeout: float) -> tuple[paramiko.SSHClient, bool]:
    """The host's open connection (True: reused) or a new one, kept for the next call."""
    key = _key(ssh)
    with _OPEN_LOCK:
        client = _OPEN.pop(key, None)
    transport = client.get_transport() if client is not None else None
    if client is not None and transport is not None and transport.is_active():
        return client, True
    if client is not None:
        client.close()
    return connect(ssh, timeout), False


def _put_back(ssh: SshData, client: paramiko.SSHClient) -> None:
    """Back for the next call; a second connection to the same host (several callers at
    once), or any when connections are not kept, is closed instead."""
    if not _keep:
        client.close()
        return
    with _OPEN_LOCK:
        spare = _OPEN.setdefault(_key(ssh), client)
    if spare is not client:
        client.close()


@atexit.register
def close_all() -> None:
    """Close every kept connection (at exit, or when a caller wants fresh ones)."""
    with _OPEN_LOCK:
        clients = list(_OPEN.values())
        _OPEN.clear()
    for client in clients:
        client.close()


def run(ssh: SshData, command: str, timeout: float = 30.0, sudo: bool = False) -> tuple[int, str]:
    """Run `command` on the host; return (exit status, combined output). With
    keep_connections, the connection stays open for the next command on the host."""
    if sudo and ssh.get("ssh_user", "root") != "root":
        command = f"sudo -n sh -c {shlex.quote(command)}"
    client, reused = _connection(ssh, timeout)
    try:
        try:
            wait = min(timeout, REUSE_TIMEOUT) if reused else timeout
            channel = client.get_transport().open_session(timeout=wait)
        except (paramiko.SSHException, OSError, AttributeError):
            client.close()
            if not reused:
                raise
            # The kept connection died in between (the host restarted, sshd went away):
            # the command has not started, so it goes over a new connection.
            client, reused = connect(ssh, timeout), False
            channel = client.get_transport().open_session(timeout=timeout)
        channel.settimeout(timeout)
        channel.set_combine_stderr(True)
        channel.exec_command(command)
        with channel.makefile("rb") as stdout:
            output = stdout.read().decode(errors="replace")
        status = channel.recv_exit_status()
        channel.close()
    except (TimeoutError, paramiko.SSHException, OSError) as exc:
        client.close()
        raise RemoteError(address(ssh), describe(ssh, exc, timeout)) from exc
    except BaseException:
        client.close()
        raise
    _put_back(ssh, client)
    return status, output


def openssh_command(ssh: SshData, remote: str, timeout: float = 30.0) -> list[str]:
    """The OpenSSH client command running `remote` (as root: through `sudo -n` for
    another user) on the host, with the same key, user and host-key policy as paramiko
    and pyinfra above. For bulk data: OpenSSH moves a stream several times faster than
    paramiko, and outside the Python process."""
    user = ssh.get("ssh_user") or "root"
    options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(timeout)}"]
    options += ["-p", str(ssh.get("ssh_port", 22))]
    if ssh.get("ssh_key"):
        options += ["-i", str(ssh["ssh_key"]), "-o", "IdentitiesOnly=yes"]
    known = ssh.get("ssh_known_hosts_file")
    if ssh.get("ssh_strict_host_key_checking") == "no" or known in (None, "/dev/null"):
        options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        options += ["-o", "LogLevel=ERROR"]  # no "Permanently added" for throwaway keys
    else:
        policy = ssh.get("ssh_strict_host_key_checking") or "yes"
        known_hosts = Path(known).expanduser()
        options += [
            "-o",
            f"StrictHostKeyChecking={policy}",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
        ]
    if user != "root":
        remote = f"sudo -n sh -c {shlex.quote(remote)}"
    return ["ssh", *options, f"{user}@{ssh['ssh_hostname']}", remote]
