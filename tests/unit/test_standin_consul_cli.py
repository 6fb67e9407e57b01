"""The Consul stand-in's command line: version, validate, keygen, errors."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.consul_standin import free_port, run_cli


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_version_prints_consul_version() -> None:
    out = run_cli("version")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0] == "Consul v1.11.3"
    assert lines[1] == "Revision standin"
    assert lines[2].startswith("Protocol 2 spoken by default")
    env = dict(os.environ, CONSUL_STANDIN_VERSION="1.12.0")
    assert run_cli("version", env=env).stdout.startswith("Consul v1.12.0\n")


def test_validate_accepts_good_config(tmp_path: Path) -> None:
    write(
        tmp_path / "00-server.json",
        {
            "server": True,
            "bootstrap_expect": 3,
            "node_name": "consul-1",
            "datacenter": "dc1",
            "data_dir": "/consul/data",
            "bind_addr": "10.0.0.11",
            "client_addr": "0.0.0.0",
            "retry_join": ["10.0.0.12", "10.0.0.13"],
            "ui_config": {"enabled": True},
            "ports": {"http": 8500, "dns": -1},
            "leave_on_terminate": True,
            "disable_update_check": True,
        },
    )
    write(tmp_path / "10-extra.json", {"log_level": "INFO", "enable_script_checks": False})
    write(
        tmp_path / "20-secure.json",
        {
            "encrypt": base64.b64encode(b"k" * 32).decode(),
            "encrypt_verify_incoming": True,
            "encrypt_verify_outgoing": True,
            "acl": {
                "enabled": True,
                "default_policy": "deny",
                "down_policy": "extend-cache",
                "enable_token_persistence": True,
                "tokens": {
                    "initial_management": "m",
                    "agent": "a",
                    "default": "d",
                    "agent_recovery": "r",
                },
            },
        },
    )
    out = run_cli("validate", str(tmp_path))
    assert (out.returncode, out.stdout.strip()) == (0, "Configuration is valid!"), out.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"server": True, "bogus_key": 1}, "invalid config key bogus_key"),
        ({"ports": {"htp": 8500}}, "invalid config key ports.htp"),
        ({"acl": {"tokens": {"mastr": "x"}}}, "invalid config key acl.tokens.mastr"),
        ({"bootstrap_expect": 3}, "'bootstrap_expect > 0' requires 'server = true'"),
        (
            {"server": True, "bootstrap": True, "bootstrap_expect": 3},
            "'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive",
        ),
        ({"bind_addr": "not-an-ip"}, "bind_addr: invalid ip address: not-an-ip"),
        ('{"server": true,, }', "failed to parse"),
        ({"server": "yes"}, "'server' expected type 'bool'"),
        ({"acl": {"enabled": "yes"}}, "'acl.enabled' expected type 'bool'"),
        # builder.go: "encrypt has invalid key: %s" with Go's base64 error.
        (
            {"encrypt": "not base64!"},
            "encrypt has invalid key: illegal base64 data at input byte 3",
        ),
        ({"performance": {"raft_multiplier": 11}}, "performance.raft_multiplier cannot be 11"),
    ],
)
def test_validate_rejects_bad_config(tmp_path: Path, content: Any, message: str) -> None:
    path = write(tmp_path / "bad.json", content)
    out = run_cli("validate", str(path))
    assert out.returncode == 1
    assert out.stderr.startswith("Config validation failed: "), out.stderr
    assert message in out.stderr


def test_validate_warns_about_the_pre_111_token_names(tmp_path: Path) -> None:
    """Consul 1.11 still reads acl.tokens.master / agent_master, with a deprecation warning."""
    path = write(tmp_path / "acl.json", {"acl": {"enabled": True, "tokens": {"master": "x"}}})
    out = run_cli("validate", str(path))
    assert out.returncode == 0, out.stderr
    assert (
        "The 'acl.tokens.master' field is deprecated. "
        "Use the 'acl.tokens.initial_management' field instead." in out.stderr
    )


def test_keygen_prints_a_32_byte_key() -> None:
    out = run_cli("keygen")
    assert out.returncode == 0
    assert len(base64.b64decode(out.stdout.strip(), validate=True)) == 32
    assert run_cli("keygen").stdout != out.stdout


def test_agent_refuses_unknown_config_key(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "x.json", {"nope": 1})
    out = run_cli("agent", "-dev", "-config-dir", str(tmp_path / "conf"))
    assert out.returncode == 1
    assert "Config validation failed" in out.stderr
    assert "invalid config key nope" in out.stderr


def test_agent_refuses_a_key_of_the_wrong_length(tmp_path: Path) -> None:
    """A valid base64 key must still be 16, 24 or 32 bytes (memberlist ValidateKey)."""
    port = free_port(["127.0.0.1"])
    out = run_cli(
        "agent", "-dev", f"-http-port={port}", "-encrypt", base64.b64encode(b"short").decode()
    )
    assert out.returncode == 1
    assert "key size must be 16, 24 or 32 bytes" in out.stderr


def test_agent_exits_when_no_join_address_answers(tmp_path: Path) -> None:
    """command/agent startupJoin: a failed -join (start_join) stops the agent; only
    -retry-join keeps trying."""
    http, serf, dead = (free_port(["127.0.0.31"]) for _ in range(3))
    out = run_cli(
        "agent",
        "-node=j",
        "-bind=127.0.0.31",
        f"-http-port={http}",
        f"-serf-lan-port={serf}",
        "-data-dir",
        str(tmp_path),
        f"-join=127.0.0.31:{dead}",
    )
    assert out.returncode == 1
    assert "connection refused" in out.stdout


def test_cli_reports_unreachable_agent() -> None:
    port = free_port(["127.0.0.1"])
    out = run_cli("members", f"-http-addr=127.0.0.1:{port}")
    assert out.returncode == 1
    assert out.stderr.startswith("Error retrieving members: ")
    assert "connection refused" in out.stderr
    env = dict(os.environ, CONSUL_HTTP_ADDR=f"127.0.0.1:{port}")
    out = run_cli("operator", "raft", "list-peers", env=env)
    assert out.returncode == 1
    assert "connection refused" in out.stderr


def test_cli_reports_a_missing_token_file(tmp_path: Path) -> None:
    """api.NewClient: "Error loading token file: open <path>: no such file or directory"."""
    out = run_cli("members", f"-token-file={tmp_path / 'none'}")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "Error connecting to Consul agent: Error loading token file: "
        f"open {tmp_path / 'none'}: no such file or directory"
    )
