"""Run a command on a lab host over SSH (paramiko), with the inventory's connection data."""

from __future__ import annotations

import shlex

import paramiko

from labctl.inventory import SshData


class RemoteError(Exception):
    pass


def run(ssh: SshData, command: str, timeout: float = 30.0, sudo: bool = False) -> tuple[int, str]:
    """Run `command` on the host; return (exit status, combined output)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            ssh["ssh_hostname"],
            port=int(ssh.get("ssh_port", 22)),
            username=ssh.get("ssh_user"),
            key_filename=ssh.get("ssh_key"),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys="ssh_key" not in ssh,
        )
        if sudo and ssh.get("ssh_user", "root") != "root":
            command = f"sudo -n sh -c {shlex.quote(command)}"
        _, stdout, _ = client.exec_command(command, timeout=timeout, get_pty=False)
        stdout.channel.set_combine_stderr(True)
        output = stdout.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), output
    except (TimeoutError, paramiko.SSHException, OSError) as exc:
        raise RemoteError(f"{ssh['ssh_hostname']}:{ssh.get('ssh_port', 22)}: {exc}") from exc
    finally:
        client.close()
