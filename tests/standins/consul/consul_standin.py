#!/usr/bin/env python3
"""Test-only stand-in for the HashiCorp Consul binary.

This is NOT HashiCorp Consul.  It is a small, standard-library-only Python
program that behaves like the ``consul`` binary for the subset of the
command line and HTTP API v1 that our lab uses, with Consul's own field
names, response shapes, status codes and (mostly) messages.  It exists
because real Consul binaries/images cannot be obtained where the lab's
tests run.  See README.md next to this file for the supported subset and
the known differences from real Consul.

Architecture in one paragraph: every agent serves the HTTP API on
``client_addr:ports.http`` and a private JSON-over-HTTP endpoint on
``bind_addr:ports.serf_lan`` that replaces Serf gossip and server RPC.
Agents push/pull their member lists with every other member once a second
(this is also the liveness probe), servers elect a leader deterministically
(lowest advertise address among alive servers, sticky while it lives, with a
term number to resolve races), the leader owns the catalog and replicates
snapshots of it to the other servers, and every agent syncs its local
services and checks to the leader (anti-entropy).  Catalog and health reads
on any other agent are forwarded to the leader, which also does the
blocking for blocking queries.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import ipaddress
import json
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as _futures_wait
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

VERSION = os.environ.get("CONSUL_STANDIN_VERSION", "1.11.3")
REVISION = "standin"

# Timing of the stand-in's cluster machinery (seconds).
GOSSIP_INTERVAL = 1.0  # push/pull with every member; doubles as the probe
PROBE_TIMEOUT = 0.8
FAIL_AFTER = 3.0  # no successful exchange for this long -> member "failed"
TICK = 0.2
AE_INTERVAL = 3.0  # periodic full anti-entropy sync to the leader
REPLICATION_HEARTBEAT = 2.0
DEFAULT_RETRY_INTERVAL = 2.0
OUTPUT_UPDATE_INTERVAL = 300.0  # Consul's check_update_interval default (5m)
MIN_CHECK_INTERVAL = 1.0  # Consul's MinInterval for checks
OUTPUT_MAX_SIZE = 4096

STATUS_ALIVE, STATUS_LEAVING, STATUS_LEFT, STATUS_FAILED = 1, 2, 3, 4
STATUS_NAMES = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}
# For two records with the same incarnation, the "worse" status wins.
_STATUS_RANK = {STATUS_ALIVE: 0, STATUS_LEAVING: 1, STATUS_FAILED: 2, STATUS_LEFT: 3}

PASSING, WARNING, CRITICAL, MAINT = "passing", "warning", "critical", "maintenance"
SERF_CHECK_ID = "serfHealth"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
NODE_MAINT_ID = "_node_maintenance"

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


class ConfigError(Exception):
    """A configuration problem, reported the way Consul reports it."""


class ApiError(Exception):
    """An HTTP API error: status code plus a plain-text body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_DUR_PART = re.compile(r"(\d+\.?\d*|\.\d+)([a-zµμ]*)")
_DUR_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: Any) -> float:
    """Parse a Go duration ("10s", "1m30s", "90m") into seconds.

    Numbers are taken as nanoseconds, as Consul's JSON decoding does.
    Raises ValueError with Go's error text.
    """
    if isinstance(value, bool):
        raise ValueError(f'time: invalid duration "{value}"')
    if isinstance(value, (int, float)):
        return float(value) / 1e9
    if not isinstance(value, str):
        raise ValueError(f'time: invalid duration "{value}"')
    orig = value
    s = value
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DUR_PART.match(s, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{orig}"')
        unit = m.group(2)
        if not unit:
            raise ValueError(f'time: missing unit in duration "{orig}"')
        if unit not in _DUR_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        total += float(m.group(1)) * _DUR_UNITS[unit]
        pos = m.end()
    return sign * total


def _frac(n: int, unit: int) -> str:
    whole, rem = divmod(n, unit)
    if not rem:
        return str(whole)
    digits = str(rem).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def format_duration(seconds: float | None) -> str:
    """Format seconds the way Go's time.Duration.String() does."""
    if seconds is None:
        return ""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_frac(ns, 1000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_frac(ns, 1_000_000)}ms"
    hours, rem = divmod(ns, 3600 * 10**9)
    minutes, rem = divmod(rem, 60 * 10**9)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _frac(rem, 10**9) + "s"


def _go_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(text)


def _json_dumps(obj: Any, pretty: bool = False) -> bytes:
    if pretty:
        return (json.dumps(obj, indent=4) + "\n").encode()
    return json.dumps(obj, separators=(",", ":")).encode()


def _addr_key(addr: str, port: int = 0) -> tuple:
    """Sort key for an address: numeric IP order, then port."""
    try:
        ip = ipaddress.ip_address(addr)
        return (0, ip.version, int(ip), port)
    except ValueError:
        return (1, 0, addr, port)


def _http_json(method: str, url: str, payload: Any = None, timeout: float = 2.0) -> tuple[int, Any]:
    """Small JSON-over-HTTP client for the stand-in's private traffic."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with _NO_PROXY_OPENER.open(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, (json.loads(body) if body else None)
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body) if body else None
        except ValueError:
            return e.code, body.decode("utf-8", "replace")


def _interface_ipv4(name: str) -> str | None:
    """IPv4 address of a network interface (Linux SIOCGIFADDR)."""
    try:
        import fcntl

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
        return socket.inet_ntoa(packed[20:24])
    except (OSError, ImportError):
        return None


def _default_private_ip() -> str:
    """The address Consul would advertise when bound to 0.0.0.0."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
            ip = s.getsockname()[0]
            if ip and not ip.startswith("127."):
                return ip
    except OSError:
        pass
    try:
        ip = socket.gethostbyname(socket.gethostname())
        if ip:
            return ip
    except OSError:
        pass
    return "127.0.0.1"


_NO_HCL = "HCL configuration is not supported by the Consul stand-in"
_DEPLOYMENT_TABLE = "https://www.consul.io/docs/internals/consensus.html#deployment-table"

_TEMPLATE_RE = re.compile(r"^\{\{\s*(.*?)\s*\}\}$")


def _expand_ip(name: str, value: str) -> str:
    """Resolve an address setting; supports a small go-sockaddr subset."""
    value = value.strip()
    m = _TEMPLATE_RE.match(value)
    if m:
        expr = m.group(1)
        im = re.match(r'^GetInterfaceIP\s+"([^"]+)"$', expr)
        if im:
            ip = _interface_ipv4(im.group(1))
            if not ip:
                raise ConfigError(f"{name}: No address found in {value}")
            return ip
        if expr in ("GetPrivateIP", "GetPublicIP"):
            return _default_private_ip()
        raise ConfigError(
            f"{name}: unsupported go-sockaddr template in the Consul stand-in: {value}"
        )
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name}: invalid ip address: {value}") from None
    return value


def _unknown_service(sid: str) -> ApiError:
    return ApiError(
        404,
        f'Unknown service ID "{sid}". Ensure that the service ID is passed, not the service name.',
    )


def _unknown_check(cid: str) -> ApiError:
    return ApiError(
        404, f'Unknown check ID "{cid}". Ensure that the check ID is passed, not the check name.'
    )


def _multierror(errors: list[str]) -> str:
    word = "error" if len(errors) == 1 else "errors"
    return f"{len(errors)} {word} occurred:\n" + "".join(f"\t* {e}\n" for e in errors) + "\n"


# ---------------------------------------------------------------------------
# Logging (hclog-like lines on stdout, like Consul)
# ---------------------------------------------------------------------------


class Logger:
    LEVELS: ClassVar[dict[str, int]] = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4}

    def __init__(self, level: str = "INFO") -> None:
        self.level = self.LEVELS.get(level, 2)
        self._lock = threading.Lock()

    def log(self, level: str, name: str, msg: str, **kv: Any) -> None:
        if self.LEVELS[level] < self.level:
            return
        ts = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        extra = "".join(f" {k}={v}" for k, v in kv.items())
        line = f"{ts} [{level}]{' ' * (6 - len(level))}{name}: {msg}{extra}\n"
        with self._lock:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def info(self, name: str, msg: str, **kv: Any) -> None:
        self.log("INFO", name, msg, **kv)

    def warn(self, name: str, msg: str, **kv: Any) -> None:
        self.log("WARN", name, msg, **kv)

    def error(self, name: str, msg: str, **kv: Any) -> None:
        self.log("ERROR", name, msg, **kv)

    def debug(self, name: str, msg: str, **kv: Any) -> None:
        self.log("DEBUG", name, msg, **kv)


def _normalize_log_level(value: str) -> str:
    v = value.strip().upper()
    aliases = {"ERR": "ERROR", "WARNING": "WARN"}
    v = aliases.get(v, v)
    if v not in Logger.LEVELS:
        raise ConfigError(
            f'Invalid log level: "{value}". Valid log levels are: [TRACE DEBUG INFO WARN ERR]'
        )
    return v


# ---------------------------------------------------------------------------
# Go-style flag parsing
# ---------------------------------------------------------------------------


class FlagError(Exception):
    pass


def parse_go_flags(
    args: list[str], spec: dict[str, str]
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Parse flags like Go's flag package: -f, --f, -f=v, -f v (non-bool).

    spec maps flag name -> kind ("bool", "str", "int", "list").  Returns the
    flags in command-line order and the remaining positional arguments.
    """
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if len(arg) < 2 or arg[0] != "-":
            break
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if not body or body[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        value: str | None = None
        if "=" in body:
            body, value = body.split("=", 1)
        if body in ("h", "help"):
            raise FlagError("help")
        kind = spec.get(body)
        if kind is None:
            raise FlagError(f"flag provided but not defined: -{body}")
        if kind == "bool":
            if value is None:
                parsed: Any = True
            else:
                try:
                    parsed = _go_bool(value)
                except ValueError:
                    raise FlagError(
                        f'invalid boolean value "{value}" for -{body}: parse error'
                    ) from None
        else:
            if value is None:
                i += 1
                if i >= len(args):
                    raise FlagError(f"flag needs an argument: -{body}")
                value = args[i]
            parsed = value
            if kind == "int":
                try:
                    parsed = int(value, 0)
                except ValueError:
                    raise FlagError(
                        f'invalid value "{value}" for flag -{body}: parse error'
                    ) from None
        out.append((body, parsed))
        i += 1
    return out, args[i:]


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Every top-level key real Consul (1.11) accepts.  Keys without an effect in
# the stand-in are accepted and ignored; anything else is an error.
KNOWN_CONFIG_KEYS = _words(
    "acl acl_agent_master_token acl_agent_token acl_datacenter acl_default_policy "
    "acl_down_policy acl_enable_key_list_policy acl_master_token acl_replication_token "
    "acl_token acl_ttl addresses advertise_addr advertise_addr_ipv4 advertise_addr_ipv6 "
    "advertise_addr_wan advertise_addr_wan_ipv4 advertise_addr_wan_ipv6 "
    "advertise_reconnect_timeout alt_domain audit auto_config auto_encrypt "
    "auto_reload_config autopilot bind_addr bootstrap bootstrap_expect ca_file ca_path "
    "cache cert_file check checks check_output_max_size check_update_interval client_addr "
    "config_entries connect data_dir datacenter default_query_time "
    "disable_anonymous_signature disable_coordinates disable_host_node_id "
    "disable_http_unprintable_char_filter disable_keyring_file disable_remote_exec "
    "disable_update_check discard_check_output discovery_max_stale dns_config domain "
    "enable_acl_replication enable_agent_tls_for_checks enable_central_service_config "
    "enable_debug enable_local_script_checks enable_script_checks enable_syslog encrypt "
    "encrypt_verify_incoming encrypt_verify_outgoing gossip_lan gossip_wan http_config "
    "key_file leave_on_terminate license_path limits log_file log_json log_level "
    "log_rotate_bytes log_rotate_duration log_rotate_max_files max_query_time node_id "
    "node_meta node_name non_voting_server performance pid_file ports primary_datacenter "
    "primary_gateways primary_gateways_interval protocol raft_boltdb raft_protocol "
    "raft_snapshot_interval raft_snapshot_threshold raft_trailing_logs read_replica "
    "reconnect_timeout reconnect_timeout_wan recursor recursors rejoin_after_leave "
    "retry_interval retry_interval_wan retry_join retry_join_wan retry_max retry_max_wan "
    "rpc rpc_max_conns_per_client segment segments serf_lan serf_lan_allowed_cidrs serf_wan "
    "serf_wan_allowed_cidrs server server_name service services session_ttl_min "
    "skip_leave_on_interrupt start_join start_join_wan syslog_facility telemetry "
    "tls_cipher_suites tls_min_version tls_prefer_server_cipher_suites translate_wan_addrs "
    "ui ui_config ui_content_path ui_dir unix_sockets use_streaming_backend verify_incoming "
    "verify_incoming_https verify_incoming_rpc verify_outgoing verify_server_hostname "
    "watches"
)
KNOWN_SUBKEYS = {
    "ports": _words(
        "dns http https serf_lan serf_wan server grpc grpc_tls proxy_min_port proxy_max_port "
        "sidecar_min_port sidecar_max_port expose_min_port expose_max_port"
    ),
    "ui_config": _words(
        "enabled dir content_path metrics_provider metrics_provider_files "
        "metrics_provider_options_json metrics_proxy dashboard_url_templates"
    ),
    "addresses": _words("dns http https grpc"),
}
_BOOL_KEYS = _words(
    "server bootstrap ui leave_on_terminate rejoin_after_leave enable_script_checks "
    "enable_local_script_checks disable_update_check skip_leave_on_interrupt "
    "disable_host_node_id disable_keyring_file log_json enable_syslog non_voting_server "
    "disable_remote_exec enable_debug"
)
_INT_KEYS = _words(
    "bootstrap_expect retry_max raft_protocol protocol log_rotate_bytes log_rotate_max_files"
)
_STR_KEYS = _words(
    "node_name node_id bind_addr advertise_addr advertise_addr_wan client_addr datacenter "
    "data_dir log_level retry_interval domain encrypt primary_datacenter log_file pid_file "
    "segment alt_domain"
)
_LIST_KEYS = _words("retry_join start_join retry_join_wan start_join_wan recursors services checks")
_MAP_KEYS = _words("ports ui_config node_meta addresses")

_GO_TYPE_NAMES = {
    bool: "bool",
    int: "int",
    float: "float64",
    str: "string",
    list: "slice",
    dict: "map",
    type(None): "nil",
}


def _type_error(key: str, want: str, value: Any) -> str:
    got = _GO_TYPE_NAMES.get(type(value), type(value).__name__)
    return f"'{key}' expected type '{want}', got unconvertible type '{got}', value: '{value}'"


def check_config_fragment(data: Any, source: str) -> dict:
    """Check one parsed config file: unknown keys and basic types."""
    if not isinstance(data, dict):
        raise ConfigError(f"failed to parse {source}: top-level value must be a JSON object")
    unknown: list[str] = []
    type_errors: list[str] = []
    for key, value in data.items():
        if key not in KNOWN_CONFIG_KEYS:
            unknown.append(f"invalid config key {key}")
            continue
        if key in KNOWN_SUBKEYS and isinstance(value, dict):
            for sub in value:
                if sub not in KNOWN_SUBKEYS[key]:
                    unknown.append(f"invalid config key {key}.{sub}")
        if key in _BOOL_KEYS and not isinstance(value, bool):
            type_errors.append(_type_error(key, "bool", value))
        elif key in _INT_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
            type_errors.append(_type_error(key, "int", value))
        elif key in _STR_KEYS and not isinstance(value, str):
            type_errors.append(_type_error(key, "string", value))
        elif key in _LIST_KEYS and not isinstance(value, list):
            type_errors.append(
                _type_error(
                    key, "[]string" if key not in ("services", "checks") else "slice", value
                )
            )
        elif key in _MAP_KEYS and not isinstance(value, dict):
            type_errors.append(_type_error(key, "map", value))
        elif key == "ports" and isinstance(value, dict):
            for sub, port in value.items():
                if isinstance(port, bool) or not isinstance(port, int):
                    type_errors.append(_type_error(f"ports.{sub}", "int", port))
    if unknown:
        raise ConfigError(f"failed to parse {source}: {_multierror(unknown)}")
    if type_errors:
        word = "error" if len(type_errors) == 1 else "errors"
        raise ConfigError(
            f"failed to parse {source}: {len(type_errors)} {word}(s) decoding:\n\n"
            + "\n".join(f"* {e}" for e in type_errors)
        )
    return data


def merge_config(dst: dict, src: dict) -> None:
    """Merge like Consul: lists append, maps merge, scalars override."""
    for key, value in src.items():
        if key == "service":
            dst.setdefault("services", []).append(value)
        elif key == "check":
            dst.setdefault("checks", []).append(value)
        elif key in _LIST_KEYS and isinstance(value, list):
            dst.setdefault(key, []).extend(value)
        elif isinstance(value, dict) and isinstance(dst.get(key), dict):
            merged = dict(dst[key])
            merged.update(value)
            dst[key] = merged
        else:
            dst[key] = value


def load_config_path(path: str, is_dir_hint: bool | None = None) -> list[tuple[str, dict]]:
    """Load a config file, or every *.json in a directory (lexical order)."""
    if not os.path.exists(path):
        raise ConfigError(f"Error reading '{path}': stat {path}: no such file or directory")
    if os.path.isdir(path) and is_dir_hint is not False:
        out = []
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if not os.path.isfile(full):
                continue
            if name.endswith(".hcl"):
                raise ConfigError(f"failed to parse {full}: {_NO_HCL}")
            if name.endswith(".json"):
                out.extend(load_config_path(full, False))
        return out
    if path.endswith(".hcl"):
        raise ConfigError(
            f"failed to parse {path}: HCL configuration is not supported by the Consul stand-in"
        )
    if not path.endswith(".json"):
        raise ConfigError(
            f'Missing or invalid file extension for "{path}". Please use ".json" or ".hcl".'
        )
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"Error reading '{path}': {e.strerror}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"failed to parse {path}: {e.msg} (line {e.lineno}, column {e.colno})"
        ) from None
    return [(path, check_config_fragment(data, path))]


@dataclass
class RuntimeConfig:
    """The effective agent configuration (a small part of Consul's)."""

    dev: bool = False
    server: bool = False
    bootstrap: bool = False
    bootstrap_expect: int = 0
    node_name: str = ""
    node_id: str = ""
    bind_addr: str = "0.0.0.0"
    advertise_addr: str = ""
    client_addrs: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    datacenter: str = "dc1"
    data_dir: str = ""
    log_level: str = "INFO"
    retry_join: list[str] = field(default_factory=list)
    start_join: list[str] = field(default_factory=list)
    retry_interval: float = DEFAULT_RETRY_INTERVAL
    retry_max: int = 0
    ui: bool = False
    http_port: int = 8500
    serf_lan_port: int = 8301
    serf_wan_port: int = 8302
    server_port: int = 8300
    dns_port: int = 8600
    grpc_port: int = -1
    leave_on_terminate: bool = False
    skip_leave_on_interrupt: bool = False
    rejoin_after_leave: bool = False
    enable_script_checks: bool = False
    node_meta: dict = field(default_factory=dict)
    services: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    pid_file: str = ""
    warnings: list[str] = field(default_factory=list)


def build_runtime_config(raw: dict, dev: bool, require_data_dir: bool = True) -> RuntimeConfig:
    """Turn the merged raw config into a RuntimeConfig, validating it."""
    rc = RuntimeConfig(dev=dev)
    rc.server = bool(raw.get("server", dev))
    rc.bootstrap = bool(raw.get("bootstrap", dev))
    rc.bootstrap_expect = int(raw.get("bootstrap_expect", 0))
    rc.datacenter = str(raw.get("datacenter", "dc1")).lower()
    rc.data_dir = str(raw.get("data_dir", ""))
    rc.node_name = str(raw.get("node_name") or socket.gethostname())
    rc.node_id = str(raw.get("node_id", ""))
    rc.log_level = _normalize_log_level(str(raw.get("log_level", "DEBUG" if dev else "INFO")))
    rc.retry_join = [str(x) for x in raw.get("retry_join", [])]
    rc.start_join = [str(x) for x in raw.get("start_join", [])]
    rc.retry_max = int(raw.get("retry_max", 0))
    rc.ui = bool(raw.get("ui", dev))
    if isinstance(raw.get("ui_config"), dict) and "enabled" in raw["ui_config"]:
        rc.ui = bool(raw["ui_config"]["enabled"])
    rc.leave_on_terminate = bool(raw.get("leave_on_terminate", not rc.server))
    rc.skip_leave_on_interrupt = bool(raw.get("skip_leave_on_interrupt", rc.server))
    rc.rejoin_after_leave = bool(raw.get("rejoin_after_leave", False))
    rc.enable_script_checks = bool(
        raw.get("enable_script_checks", False) or raw.get("enable_local_script_checks", False)
    )
    rc.node_meta = dict(raw.get("node_meta", {}))
    rc.services = list(raw.get("services", []))
    rc.checks = list(raw.get("checks", []))
    rc.pid_file = str(raw.get("pid_file", ""))
    ports = raw.get("ports", {})
    rc.http_port = int(ports.get("http", 8500))
    rc.serf_lan_port = int(ports.get("serf_lan", 8301))
    rc.serf_wan_port = int(ports.get("serf_wan", 8302))
    rc.server_port = int(ports.get("server", 8300))
    rc.dns_port = int(ports.get("dns", 8600))
    rc.grpc_port = int(ports.get("grpc", 8502 if dev else -1))
    if "retry_interval" in raw:
        try:
            rc.retry_interval = parse_duration(raw["retry_interval"])
        except ValueError as e:
            raise ConfigError(f"retry_interval: {e}") from None

    # Validation, with Consul's messages, in Consul's order where it matters.
    if not rc.datacenter:
        raise ConfigError("datacenter cannot be empty")
    if not re.fullmatch(r"[a-z0-9_-]+", rc.datacenter):
        raise ConfigError(f'datacenter cannot be "{rc.datacenter}". Please use only [a-z0-9-_].')
    if require_data_dir and not dev:
        if not rc.data_dir:
            raise ConfigError("data_dir cannot be empty")
        if os.path.exists(rc.data_dir) and not os.path.isdir(rc.data_dir):
            raise ConfigError(f'data_dir "{rc.data_dir}" is not a directory')
    if not rc.node_name:
        raise ConfigError("node_name cannot be empty")
    bind = _expand_ip("bind_addr", str(raw.get("bind_addr", "127.0.0.1" if dev else "0.0.0.0")))
    rc.bind_addr = bind
    if "advertise_addr" in raw:
        rc.advertise_addr = _expand_ip("advertise_addr", str(raw["advertise_addr"]))
        if rc.advertise_addr in ("0.0.0.0", "::"):
            raise ConfigError("Advertise address cannot be 0.0.0.0, :: or [::]")
    elif bind in ("0.0.0.0", "::"):
        rc.advertise_addr = _default_private_ip()
    else:
        rc.advertise_addr = bind
    client = str(raw.get("client_addr", "127.0.0.1"))
    rc.client_addrs = [_expand_ip("client_addr", c) for c in client.split()] or ["127.0.0.1"]
    if rc.bootstrap and not rc.server:
        raise ConfigError("'bootstrap = true' requires 'server = true'")
    if rc.bootstrap_expect < 0:
        raise ConfigError(
            f"bootstrap_expect cannot be {rc.bootstrap_expect}. "
            "Must be greater than or equal to zero"
        )
    if rc.bootstrap_expect > 0 and not rc.server:
        raise ConfigError("'bootstrap_expect > 0' requires 'server = true'")
    if rc.bootstrap_expect > 0 and dev:
        raise ConfigError("'bootstrap_expect > 0' not allowed in dev mode")
    if rc.bootstrap_expect > 0 and rc.bootstrap:
        raise ConfigError("'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive")
    if rc.serf_lan_port <= 0:
        raise ConfigError(f"ports.serf_lan must be between 1 and 65535, got {rc.serf_lan_port}")
    for svc in rc.services:
        if not isinstance(svc, dict):
            raise ConfigError("services: each service definition must be an object")
        try:
            normalize_service_definition(svc)
        except ApiError as e:
            raise ConfigError(f"service: {e.message}") from None
    if rc.bootstrap_expect == 1:
        rc.warnings.append("BootstrapExpect is set to 1; this is the same as Bootstrap mode.")
    elif rc.bootstrap_expect == 2:
        rc.warnings.append(
            "bootstrap_expect = 2: A cluster with 2 servers will provide no failure tolerance. "
            "See https://www.consul.io/docs/internals/consensus.html#deployment-table"
        )
    elif rc.bootstrap_expect > 2 and rc.bootstrap_expect % 2 == 0:
        rc.warnings.append(
            "bootstrap_expect is even number: A cluster with an even number of servers does not "
            f"achieve optimum fault tolerance. See {_DEPLOYMENT_TABLE}"
        )
    if rc.bootstrap and not dev:
        rc.warnings.append("bootstrap = true: do not enable unless necessary")
    return rc


# Agent flags: name -> (kind, config key or None).  "ports.x" sets a port.
AGENT_FLAGS: dict[str, tuple[str, str | None]] = {
    "server": ("bool", "server"),
    "bootstrap": ("bool", "bootstrap"),
    "bootstrap-expect": ("int", "bootstrap_expect"),
    "node": ("str", "node_name"),
    "node-id": ("str", "node_id"),
    "bind": ("str", "bind_addr"),
    "advertise": ("str", "advertise_addr"),
    "advertise-wan": ("str", "advertise_addr_wan"),
    "client": ("str", "client_addr"),
    "ui": ("bool", "ui"),
    "data-dir": ("str", "data_dir"),
    "config-dir": ("list", None),
    "config-file": ("list", None),
    "config-format": ("str", None),
    "join": ("list", "start_join"),
    "retry-join": ("list", "retry_join"),
    "retry-interval": ("str", "retry_interval"),
    "retry-max": ("int", "retry_max"),
    "join-wan": ("list", "start_join_wan"),
    "retry-join-wan": ("list", "retry_join_wan"),
    "retry-interval-wan": ("str", None),
    "retry-max-wan": ("int", None),
    "datacenter": ("str", "datacenter"),
    "dc": ("str", "datacenter"),
    "domain": ("str", "domain"),
    "alt-domain": ("str", "alt_domain"),
    "log-level": ("str", "log_level"),
    "log-json": ("bool", "log_json"),
    "log-file": ("str", "log_file"),
    "log-rotate-bytes": ("int", None),
    "log-rotate-duration": ("str", None),
    "log-rotate-max-files": ("int", None),
    "syslog": ("bool", "enable_syslog"),
    "http-port": ("int", "ports.http"),
    "https-port": ("int", "ports.https"),
    "dns-port": ("int", "ports.dns"),
    "grpc-port": ("int", "ports.grpc"),
    "serf-lan-port": ("int", "ports.serf_lan"),
    "serf-wan-port": ("int", "ports.serf_wan"),
    "server-port": ("int", "ports.server"),
    "serf-lan-bind": ("str", None),
    "serf-wan-bind": ("str", None),
    "dev": ("bool", None),
    "encrypt": ("str", "encrypt"),
    "enable-script-checks": ("bool", "enable_script_checks"),
    "enable-local-script-checks": ("bool", "enable_local_script_checks"),
    "disable-host-node-id": ("bool", "disable_host_node_id"),
    "disable-keyring-file": ("bool", "disable_keyring_file"),
    "rejoin": ("bool", "rejoin_after_leave"),
    "node-meta": ("list", "node_meta"),
    "recursor": ("list", "recursors"),
    "pid-file": ("str", "pid_file"),
    "raft-protocol": ("int", "raft_protocol"),
    "protocol": ("int", "protocol"),
    "non-voting-server": ("bool", "non_voting_server"),
    "segment": ("str", "segment"),
    "ui-dir": ("str", "ui_dir"),
    "ui-content-path": ("str", "ui_content_path"),
    "default-query-time": ("str", None),
    "max-query-time": ("str", None),
    "primary-gateway": ("list", None),
    "hcl": ("list", None),
}


def agent_config_from_args(args: list[str]) -> tuple[RuntimeConfig, dict]:
    """Parse `consul agent` arguments into a RuntimeConfig (and raw config)."""
    flags, rest = parse_go_flags(args, {k: v[0] for k, v in AGENT_FLAGS.items()})
    if rest:
        raise ConfigError(f"config: Unknown extra arguments: [{' '.join(rest)}]")
    dev = any(name == "dev" and value for name, value in flags)
    raw: dict = {}
    cli: dict = {}
    for name, value in flags:
        kind, key = AGENT_FLAGS[name]
        if name in ("config-dir", "config-file"):
            for _path, frag in load_config_path(value, name == "config-dir"):
                merge_config(raw, frag)
        elif name == "hcl":
            raise ConfigError(
                "-hcl is not supported by the Consul stand-in (JSON configuration only)"
            )
        elif key is None:
            continue
        elif key.startswith("ports."):
            cli.setdefault("ports", {})[key[6:]] = value
        elif key == "node_meta":
            k, _, v = str(value).partition(":")
            cli.setdefault("node_meta", {})[k] = v
        elif kind == "list":
            cli.setdefault(key, []).append(value)
        else:
            cli[key] = value
    merge_config(raw, cli)  # CLI flags are applied last, like Consul
    return build_runtime_config(raw, dev), raw


# ---------------------------------------------------------------------------
# Service / check definitions (Consul's decoding is case-insensitive and
# also accepts snake_case keys)
# ---------------------------------------------------------------------------

_SERVICE_FIELDS = [
    "ID",
    "Name",
    "Tags",
    "Address",
    "TaggedAddresses",
    "Meta",
    "Port",
    "Kind",
    "Proxy",
    "Connect",
    "Check",
    "Checks",
    "EnableTagOverride",
    "Weights",
    "Token",
    "Namespace",
    "Partition",
    "SocketPath",
]
_CHECK_FIELDS = [
    "CheckID",
    "ID",
    "Name",
    "Notes",
    "Status",
    "ServiceID",
    "Args",
    "ScriptArgs",
    "HTTP",
    "Header",
    "Method",
    "Body",
    "TCP",
    "UDP",
    "Interval",
    "Timeout",
    "TTL",
    "TLSServerName",
    "TLSSkipVerify",
    "GRPC",
    "GRPCUseTLS",
    "H2PING",
    "H2PingUseTLS",
    "DockerContainerID",
    "Shell",
    "AliasNode",
    "AliasService",
    "OSService",
    "DeregisterCriticalServiceAfter",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "FailuresBeforeWarning",
    "OutputMaxSize",
    "Namespace",
    "Partition",
]


def _canon_map(fields: list[str]) -> dict[str, str]:
    return {f.lower().replace("_", ""): f for f in fields}


_SERVICE_CANON = _canon_map(_SERVICE_FIELDS)
_CHECK_CANON = _canon_map(_CHECK_FIELDS)
_CHECK_CANON["deregistercriticalserviceafter"] = "DeregisterCriticalServiceAfter"


def _canon_keys(obj: dict, canon: dict[str, str]) -> dict:
    out: dict = {}
    for key, value in obj.items():
        name = canon.get(str(key).lower().replace("_", "").replace("-", ""))
        if name is not None and name not in out:
            out[name] = value
    return out


def _dur_field(check: dict, key: str) -> float | None:
    if key not in check or check[key] in (None, ""):
        return None
    try:
        return parse_duration(check[key])
    except ValueError as e:
        raise ApiError(400, f"Request decode failed: {e}") from None


def normalize_check_definition(raw: dict) -> dict:
    """Canonicalise a check definition and validate it like Consul."""
    if not isinstance(raw, dict):
        raise ApiError(400, "Request decode failed: check definition must be an object")
    chk = _canon_keys(raw, _CHECK_CANON)
    if "ID" in chk and "CheckID" not in chk:
        chk["CheckID"] = chk.pop("ID")
    chk.pop("ID", None)
    if "ScriptArgs" in chk and "Args" not in chk:
        chk["Args"] = chk.pop("ScriptArgs")
    for key in ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter"):
        _dur_field(chk, key)
    status = chk.get("Status", "")
    if status and status not in (PASSING, WARNING, CRITICAL):
        raise ApiError(400, "Status for checks must 'passing', 'warning', 'critical'")
    interval = _dur_field(chk, "Interval") or 0
    ttl = _dur_field(chk, "TTL") or 0
    interval_check = bool(
        chk.get("Args")
        or chk.get("HTTP")
        or chk.get("TCP")
        or chk.get("GRPC")
        or chk.get("H2PING")
        or chk.get("UDP")
        or chk.get("DockerContainerID")
    )
    alias = bool(chk.get("AliasService") or chk.get("AliasNode"))
    if interval > 0 and ttl > 0:
        raise ApiError(400, "Invalid check: Interval and TTL cannot both be specified")
    if interval_check and interval <= 0:
        raise ApiError(
            400, "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks"
        )
    if not interval_check and not alias and ttl <= 0:
        raise ApiError(400, "Invalid check: TTL must be > 0 for TTL checks")
    if "Header" in chk and chk["Header"] is not None and not isinstance(chk["Header"], dict):
        raise ApiError(
            400, "Request decode failed: Header must be a map of string to list of strings"
        )
    return chk


def check_kind(chk: dict) -> str:
    if chk.get("HTTP"):
        return "http"
    if chk.get("TCP"):
        return "tcp"
    if chk.get("UDP"):
        return "udp"
    if chk.get("GRPC"):
        return "grpc"
    if chk.get("H2PING"):
        return "h2ping"
    if chk.get("DockerContainerID"):
        return "docker"
    if chk.get("Args"):
        return "script"
    if chk.get("AliasService") or chk.get("AliasNode"):
        return "alias"
    return "ttl"


def normalize_service_definition(raw: dict) -> dict:
    """Canonicalise and validate a service registration body."""
    if not isinstance(raw, dict):
        raise ApiError(400, "Request decode failed: service definition must be an object")
    svc = _canon_keys(raw, _SERVICE_CANON)
    name = svc.get("Name")
    if not name or not isinstance(name, str):
        raise ApiError(400, "Missing service name")
    port = svc.get("Port", 0)
    if isinstance(port, bool) or not isinstance(port, int):
        raise ApiError(
            400,
            f"Request decode failed: json: cannot unmarshal {type(port).__name__} "
            "into Go struct field ServiceDefinition.Port of type int",
        )
    tags = svc.get("Tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ApiError(400, "Request decode failed: Tags must be a list of strings")
    meta = svc.get("Meta") or {}
    if not isinstance(meta, dict):
        raise ApiError(400, "Request decode failed: Meta must be a map of strings")
    checks: list[dict] = []
    if svc.get("Check"):
        checks.append(normalize_check_definition(svc["Check"]))
    for c in svc.get("Checks") or []:
        if c:
            checks.append(normalize_check_definition(c))
    svc["Check"] = None
    svc["Checks"] = checks
    weights = _canon_keys(svc.get("Weights") or {}, {"passing": "Passing", "warning": "Warning"})
    svc["Weights"] = {
        "Passing": int(weights.get("Passing", 1) or 1),
        "Warning": int(weights.get("Warning", 1) or 1),
    }
    svc["Tags"] = list(tags)
    svc["Meta"] = {str(k): str(v) for k, v in meta.items()}
    svc.setdefault("ID", name)
    if not svc["ID"]:
        svc["ID"] = name
    return svc


# ---------------------------------------------------------------------------
# Catalog (held by the leader, replicated to the other servers)
# ---------------------------------------------------------------------------


class Catalog:
    """Nodes, services and checks with raft-like indexes."""

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.nodes: dict[str, dict] = {}
        self.services: dict[str, dict[str, dict]] = {}
        self.checks: dict[str, dict[str, dict]] = {}

    # -- persistence / replication -----------------------------------------
    def to_dict(self) -> dict:
        return copy.deepcopy(
            {
                "index": self.index,
                "nodes": self.nodes,
                "services": self.services,
                "checks": self.checks,
            }
        )

    @classmethod
    def from_dict(cls, data: dict) -> Catalog:
        cat = cls(int(data.get("index", 0)))
        cat.nodes = data.get("nodes", {})
        cat.services = data.get("services", {})
        cat.checks = data.get("checks", {})
        return cat

    # -- writes ---------------------------------------------------------------
    def _upsert(self, table: dict, key: str, value: dict) -> bool:
        old = table.get(key)
        strip = {k: v for k, v in (old or {}).items() if k not in ("CreateIndex", "ModifyIndex")}
        if old is not None and strip == value:
            return False
        self.index += 1
        value = dict(value)
        value["CreateIndex"] = old["CreateIndex"] if old else self.index
        value["ModifyIndex"] = self.index
        table[key] = value
        return True

    def upsert_node(self, node: dict) -> bool:
        return self._upsert(self.nodes, node["Node"], node)

    def upsert_service(self, node: str, svc: dict) -> bool:
        return self._upsert(self.services.setdefault(node, {}), svc["ID"], svc)

    def upsert_check(self, node: str, chk: dict) -> bool:
        return self._upsert(self.checks.setdefault(node, {}), chk["CheckID"], chk)

    def delete_service(self, node: str, sid: str) -> bool:
        if sid not in self.services.get(node, {}):
            return False
        self.index += 1
        del self.services[node][sid]
        for cid in [c for c, v in self.checks.get(node, {}).items() if v.get("ServiceID") == sid]:
            del self.checks[node][cid]
        return True

    def delete_check(self, node: str, cid: str) -> bool:
        if cid not in self.checks.get(node, {}):
            return False
        self.index += 1
        del self.checks[node][cid]
        return True

    def delete_node(self, node: str) -> bool:
        if node not in self.nodes:
            return False
        self.index += 1
        self.nodes.pop(node, None)
        self.services.pop(node, None)
        self.checks.pop(node, None)
        return True

    # -- reads -----------------------------------------------------------------
    def node_out(self, name: str) -> dict:
        n = self.nodes[name]
        return {
            "ID": n.get("ID", ""),
            "Node": name,
            "Address": n.get("Address", ""),
            "Datacenter": n.get("Datacenter", ""),
            "TaggedAddresses": n.get("TaggedAddresses", {}),
            "Meta": n.get("Meta", {}),
            "CreateIndex": n["CreateIndex"],
            "ModifyIndex": n["ModifyIndex"],
        }

    @staticmethod
    def service_out(svc: dict) -> dict:
        out = {
            "ID": svc["ID"],
            "Service": svc["Service"],
            "Tags": list(svc.get("Tags") or []),
            "Address": svc.get("Address", ""),
        }
        if svc.get("TaggedAddresses"):
            out["TaggedAddresses"] = svc["TaggedAddresses"]
        out.update(
            {
                "Meta": svc.get("Meta") or {},
                "Port": svc.get("Port", 0),
                "Weights": svc.get("Weights") or {"Passing": 1, "Warning": 1},
                "EnableTagOverride": bool(svc.get("EnableTagOverride", False)),
                "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                "Connect": {},
                "CreateIndex": svc["CreateIndex"],
                "ModifyIndex": svc["ModifyIndex"],
            }
        )
        return out

    @staticmethod
    def check_out(chk: dict) -> dict:
        return dict(chk)

    def _service_checks(self, node: str, sid: str) -> list[dict]:
        checks = [
            c for c in self.checks.get(node, {}).values() if c.get("ServiceID", "") in ("", sid)
        ]
        checks.sort(key=lambda c: (c.get("ServiceID", "") != "", c["CheckID"]))
        return [self.check_out(c) for c in checks]

    def _instances(self, name: str, tags: list[str]) -> list[tuple[str, dict]]:
        out = []
        for node in sorted(self.services):
            if node not in self.nodes:
                continue
            for sid in sorted(self.services[node]):
                svc = self.services[node][sid]
                if svc["Service"] != name:
                    continue
                if any(t not in (svc.get("Tags") or []) for t in tags):
                    continue
                out.append((node, svc))
        return out

    def health_service(self, name: str, tags: list[str], passing: bool) -> list[dict]:
        result = []
        for node, svc in self._instances(name, tags):
            checks = self._service_checks(node, svc["ID"])
            if passing and any(c["Status"] != PASSING for c in checks):
                continue
            result.append(
                {"Node": self.node_out(node), "Service": self.service_out(svc), "Checks": checks}
            )
        return result

    def catalog_service(self, name: str, tags: list[str]) -> list[dict]:
        result = []
        for node, svc in self._instances(name, tags):
            n = self.nodes[node]
            entry = {
                "ID": n.get("ID", ""),
                "Node": node,
                "Address": n.get("Address", ""),
                "Datacenter": n.get("Datacenter", ""),
                "TaggedAddresses": n.get("TaggedAddresses", {}),
                "NodeMeta": n.get("Meta", {}),
                "ServiceKind": "",
                "ServiceID": svc["ID"],
                "ServiceName": svc["Service"],
                "ServiceTags": list(svc.get("Tags") or []),
                "ServiceAddress": svc.get("Address", ""),
                "ServiceWeights": svc.get("Weights") or {"Passing": 1, "Warning": 1},
                "ServiceMeta": svc.get("Meta") or {},
                "ServicePort": svc.get("Port", 0),
                "ServiceEnableTagOverride": bool(svc.get("EnableTagOverride", False)),
                "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                "ServiceConnect": {},
                "CreateIndex": svc["CreateIndex"],
                "ModifyIndex": svc["ModifyIndex"],
            }
            if svc.get("TaggedAddresses"):
                entry["ServiceTaggedAddresses"] = svc["TaggedAddresses"]
            result.append(entry)
        return result

    def catalog_services(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for node, svcs in self.services.items():
            if node not in self.nodes:
                continue
            for svc in svcs.values():
                tags = out.setdefault(svc["Service"], [])
                for t in svc.get("Tags") or []:
                    if t not in tags:
                        tags.append(t)
        return {k: out[k] for k in sorted(out)}

    def catalog_nodes(self) -> list[dict]:
        return [self.node_out(n) for n in sorted(self.nodes)]

    def catalog_node(self, name: str) -> dict | None:
        if name not in self.nodes:
            return None
        services = {}
        for sid, svc in sorted(self.services.get(name, {}).items()):
            s = self.service_out(svc)
            services[sid] = s
        return {"Node": self.node_out(name), "Services": services}

    def health_checks_for_service(self, name: str) -> list[dict]:
        out = []
        for node in sorted(self.checks):
            for cid in sorted(self.checks[node]):
                c = self.checks[node][cid]
                if c.get("ServiceName") == name:
                    out.append(self.check_out(c))
        return out

    def health_state(self, state: str) -> list[dict]:
        out = []
        for node in sorted(self.checks):
            for cid in sorted(self.checks[node]):
                c = self.checks[node][cid]
                if state == "any" or c["Status"] == state:
                    out.append(self.check_out(c))
        return out

    def health_node(self, node: str) -> list[dict]:
        return [self.check_out(self.checks[node][cid]) for cid in sorted(self.checks.get(node, {}))]


# ---------------------------------------------------------------------------
# Local checks and their runners
# ---------------------------------------------------------------------------


@dataclass
class LocalCheck:
    check_id: str
    name: str
    kind: str
    defn: dict  # canonical definition as registered
    service_id: str = ""
    service_name: str = ""
    status: str = CRITICAL
    notes: str = ""
    output: str = ""
    synced_output: str = ""
    output_synced_at: float = 0.0
    critical_since: float | None = None
    successes: int = 0
    failures: int = 0
    ttl_deadline: float = 0.0
    runner: CheckRunner | None = None

    def seconds(self, key: str) -> float | None:
        value = self.defn.get(key)
        if value in (None, ""):
            return None
        return parse_duration(value)


def _go_url_error(method: str, url: str, err: BaseException) -> str:
    op = method[:1].upper() + method[1:].lower()
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    hostport = f"{parsed.hostname}:{port}"
    reason = getattr(err, "reason", err)
    if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
        detail = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    elif isinstance(reason, ConnectionRefusedError):
        detail = f"dial tcp {hostport}: connect: connection refused"
    elif isinstance(reason, socket.gaierror):
        detail = f"dial tcp: lookup {parsed.hostname}: no such host"
    elif isinstance(reason, ConnectionResetError):
        detail = "read: connection reset by peer"
    else:
        detail = str(reason)
    return f'{op} "{url}": {detail}'


class CheckRunner(threading.Thread):
    """Runs one interval-based check (HTTP/TCP/script/gRPC) or watches a TTL."""

    def __init__(self, agent: Agent, check: LocalCheck) -> None:
        super().__init__(daemon=True, name=f"check-{check.check_id}")
        self.agent = agent
        self.check = check
        self.stop_event = threading.Event()
        self.ttl_reset = threading.Event()

    def stop(self) -> None:
        self.stop_event.set()
        self.ttl_reset.set()

    def run(self) -> None:
        try:
            if self.check.kind == "ttl":
                self._run_ttl()
            elif self.check.kind in ("http", "tcp", "script", "grpc"):
                self._run_interval()
        except Exception as e:  # never let a check thread die silently
            self.agent.log.error(
                "agent", "check runner crashed", check=self.check.check_id, error=repr(e)
            )

    def _run_ttl(self) -> None:
        ttl = self.check.seconds("TTL") or 0
        self.check.ttl_deadline = time.monotonic() + ttl
        while not self.stop_event.is_set():
            remaining = self.check.ttl_deadline - time.monotonic()
            if remaining <= 0:
                if self.check.status != CRITICAL or self.check.output != "TTL expired":
                    self.agent.log.warn(
                        "agent", "Check missed TTL, is now critical", check=self.check.check_id
                    )
                    self.agent.set_check_status(
                        self.check.check_id, CRITICAL, "TTL expired", from_runner=False
                    )
                self.ttl_reset.wait()
            else:
                self.ttl_reset.wait(remaining)
            self.ttl_reset.clear()

    def _run_interval(self) -> None:
        interval = self.check.seconds("Interval") or MIN_CHECK_INTERVAL
        if interval < MIN_CHECK_INTERVAL:
            self.agent.log.warn(
                "agent",
                "check has interval below minimum",
                check=self.check.check_id,
                minimum_interval=format_duration(MIN_CHECK_INTERVAL),
            )
            interval = MIN_CHECK_INTERVAL
        # Real Consul staggers the first run randomly over the whole interval;
        # the stand-in starts almost at once so tests see results quickly.
        if self.stop_event.wait(random.uniform(0.0, min(interval, 0.3))):
            return
        while not self.stop_event.is_set():
            status, output = self.execute()
            if self.stop_event.is_set():
                return
            self.agent.set_check_status(self.check.check_id, status, output, from_runner=True)
            if self.stop_event.wait(interval):
                return

    def execute(self) -> tuple[str, str]:
        kind = self.check.kind
        if kind == "http":
            return self._http()
        if kind in ("tcp", "grpc"):
            return self._tcp()
        if kind == "script":
            return self._script()
        return self.check.status, self.check.output

    def _http(self) -> tuple[str, str]:
        d = self.check.defn
        url = str(d["HTTP"])
        method = str(d.get("Method") or "GET").upper()
        timeout = self.check.seconds("Timeout") or 10.0
        headers = {"User-Agent": "Consul Health Check", "Accept": "text/plain, text/*, */*"}
        for key, values in (d.get("Header") or {}).items():
            if isinstance(values, list):
                headers[str(key)] = ", ".join(str(v) for v in values)
            else:
                headers[str(key)] = str(values)
        body = d.get("Body")
        data = body.encode() if isinstance(body, str) and body else None
        handlers: list[Any] = [urllib.request.ProxyHandler({})]
        if url.startswith("https"):
            ctx = ssl.create_default_context()
            if d.get("TLSSkipVerify"):
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        opener = urllib.request.build_opener(*handlers)
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with opener.open(req, timeout=timeout) as resp:
                code, reason = resp.status, resp.reason
                text = resp.read(OUTPUT_MAX_SIZE)
        except urllib.error.HTTPError as e:
            code, reason = e.code, e.reason
            try:
                text = e.read(OUTPUT_MAX_SIZE)
            except OSError:
                text = b""
        except (urllib.error.URLError, OSError, ValueError) as e:
            return CRITICAL, _go_url_error(method, url, e)
        output = f"HTTP {method} {url}: {code} {reason} Output: {text.decode('utf-8', 'replace')}"
        if 200 <= code < 300:
            return PASSING, output
        if code == 429:
            return WARNING, output
        return CRITICAL, output

    def _tcp(self) -> tuple[str, str]:
        target = str(self.check.defn.get("TCP") or self.check.defn.get("GRPC") or "")
        target = target.split("/", 1)[0]
        timeout = self.check.seconds("Timeout") or 10.0
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                pass
        except ConnectionRefusedError:
            return CRITICAL, f"dial tcp {target}: connect: connection refused"
        except TimeoutError:
            return CRITICAL, f"dial tcp {target}: i/o timeout"
        except (OSError, ValueError) as e:
            return CRITICAL, f"dial tcp {target}: {e}"
        return PASSING, f"TCP connect {target}: Success"

    def _script(self) -> tuple[str, str]:
        args = [str(a) for a in self.check.defn.get("Args") or []]
        timeout = self.check.seconds("Timeout") or 30.0
        try:
            proc = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return CRITICAL, f"Timed out ({format_duration(timeout)}) running check"
        except OSError as e:
            return CRITICAL, str(e)
        output = (proc.stdout + proc.stderr).decode("utf-8", "replace")[:OUTPUT_MAX_SIZE]
        if proc.returncode == 0:
            return PASSING, output
        if proc.returncode == 1:
            return WARNING, output
        return CRITICAL, output


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    raw_query: str
    body: bytes
    remote: str = ""

    def q(self, key: str, default: str = "") -> str:
        values = self.query.get(key)
        return values[0] if values else default

    def qbool(self, key: str) -> bool:
        if key not in self.query:
            return False
        value = self.query[key][0]
        if value == "":
            return True
        try:
            return _go_bool(value)
        except ValueError:
            return True

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise ApiError(400, f"Request decode failed: {e}") from None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(
    obj: Any, req: Request | None = None, status: int = 200, headers: dict | None = None
) -> Response:
    pretty = bool(req and "pretty" in req.query)
    return Response(status, _json_dumps(obj, pretty), "application/json", dict(headers or {}))


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8")


class _Handler(BaseHTTPRequestHandler):
    """Shared request handler; `server.dispatch` does the routing."""

    protocol_version = "HTTP/1.1"
    server_version = "Consul-standin"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        body = self._read_body()
        req = Request(
            method=self.command,
            path=urllib.parse.unquote(split.path),
            query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
            raw_query=split.query,
            body=body,
            remote=self.client_address[0],
        )
        try:
            resp = self.server.dispatch(req)  # type: ignore[attr-defined]
        except ApiError as e:
            resp = text_response(e.message, e.status)
        except Exception as e:  # keep the server up, report like Consul's 500s
            resp = text_response(f"Internal error: {e!r}", 500)
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.send_header("Vary", "Accept-Encoding")
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], dispatch: Callable[[Request], Response]) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.dispatch = dispatch
        super().__init__(addr, _Handler)


# ---------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------

Route = tuple[frozenset, re.Pattern, str, bool]


def _route(methods: str, pattern: str, handler: str, catalog: bool = False) -> Route:
    return (frozenset(methods.split()), re.compile(pattern), handler, catalog)


ROUTES: list[Route] = [
    _route("GET", r"/v1/status/leader", "status_leader"),
    _route("GET", r"/v1/status/peers", "status_peers"),
    _route("GET", r"/v1/agent/self", "agent_self"),
    _route("GET", r"/v1/agent/members", "agent_members"),
    _route("PUT", r"/v1/agent/service/register", "agent_service_register"),
    _route("PUT", r"/v1/agent/service/deregister/(?P<id>.+)", "agent_service_deregister"),
    _route("PUT", r"/v1/agent/service/maintenance/(?P<id>.+)", "agent_service_maintenance"),
    _route("GET", r"/v1/agent/services", "agent_services"),
    _route("GET", r"/v1/agent/service/(?P<id>.+)", "agent_service"),
    _route("PUT", r"/v1/agent/maintenance", "agent_node_maintenance"),
    _route("GET", r"/v1/agent/checks", "agent_checks"),
    _route("PUT", r"/v1/agent/check/register", "agent_check_register"),
    _route("PUT", r"/v1/agent/check/deregister/(?P<id>.+)", "agent_check_deregister"),
    _route("PUT", r"/v1/agent/check/(?P<op>pass|warn|fail)/(?P<id>.+)", "agent_check_ttl"),
    _route("PUT", r"/v1/agent/check/update/(?P<id>.+)", "agent_check_update"),
    _route("GET", r"/v1/agent/health/service/name/(?P<name>.+)", "agent_health_by_name"),
    _route("GET", r"/v1/agent/health/service/id/(?P<id>.+)", "agent_health_by_id"),
    _route("PUT", r"/v1/agent/leave", "agent_leave"),
    _route("PUT", r"/v1/agent/join/(?P<addr>.+)", "agent_join"),
    _route("GET", r"/v1/catalog/datacenters", "catalog_datacenters"),
    _route("GET", r"/v1/catalog/services", "catalog_services", True),
    _route("GET", r"/v1/catalog/service/(?P<name>.+)", "catalog_service", True),
    _route("GET", r"/v1/catalog/nodes", "catalog_nodes", True),
    _route("GET", r"/v1/catalog/node/(?P<node>.+)", "catalog_node", True),
    _route("GET", r"/v1/health/service/(?P<name>.+)", "health_service", True),
    _route("GET", r"/v1/health/checks/(?P<name>.+)", "health_checks", True),
    _route("GET", r"/v1/health/state/(?P<state>.+)", "health_state", True),
    _route("GET", r"/v1/health/node/(?P<node>.+)", "health_node", True),
    _route("GET", r"/v1/operator/raft/configuration", "operator_raft_configuration", True),
]

# Catalog reads that support blocking queries (the raft config does not).
_NON_BLOCKING_CATALOG = frozenset({"operator_raft_configuration"})


class Agent:
    """One Consul agent (client or server)."""

    def __init__(self, rc: RuntimeConfig, log: Logger) -> None:
        self.rc = rc
        self.log = log
        self.name = rc.node_name
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.stop_event = threading.Event()
        self.exit_code = 0
        self.executor = ThreadPoolExecutor(max_workers=48, thread_name_prefix="standin-net")
        self.node_id = self._load_node_id()
        self.inc = int(time.time() * 1000)
        self.leaving = False
        self.members: dict[str, dict] = {}
        self.last_ack: dict[str, float] = {}
        self.leader_rec: dict[str, Any] = {"term": 0, "name": ""}
        self.bootstrapped = False
        self.persisted_peers: dict[str, str] = {}
        self.persisted_index = 0
        self.leader_ready = False
        self.catalog: Catalog | None = None
        self.repl_dirty = False
        self.last_repl = 0.0
        self.services: dict[str, dict] = {}
        self.service_raw: dict[str, dict] = {}
        self.checks: dict[str, LocalCheck] = {}
        self.persist_services: set[str] = set()
        self.persist_checks: set[str] = set()
        self.maint_reasons: dict[str, str] = {}
        self.sync_event = threading.Event()
        self.synced_once = False
        self.last_synced: dict[str, str] = {}
        self.joined = False
        self.servers: list[_Server] = []
        self._load_raft_state()
        self.members[self.name] = self._self_member()

    # -- persistence ----------------------------------------------------------
    @property
    def persistent(self) -> bool:
        return bool(self.rc.data_dir) and not self.rc.dev

    def _path(self, name: str) -> str:
        return os.path.join(self.rc.data_dir, name)

    def _write_json(self, name: str, data: Any) -> None:
        if not self.persistent:
            return
        tmp = self._path(name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, self._path(name))
        except OSError as e:
            self.log.error("agent", "failed to persist state", file=name, error=str(e))

    def _read_json(self, name: str) -> Any:
        if not self.persistent:
            return None
        try:
            with open(self._path(name), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _load_node_id(self) -> str:
        if self.rc.node_id:
            return self.rc.node_id
        if self.persistent:
            try:
                with open(self._path("node-id"), encoding="utf-8") as f:
                    existing = f.read().strip()
                if existing:
                    return existing
            except OSError:
                pass
        node_id = str(uuid.uuid4())
        if self.persistent:
            try:
                with open(self._path("node-id"), "w", encoding="utf-8") as f:
                    f.write(node_id)
            except OSError:
                pass
        return node_id

    def _load_raft_state(self) -> None:
        if not self.rc.server:
            return
        data = self._read_json("standin-raft.json") or {}
        self.bootstrapped = bool(data.get("bootstrapped", False))
        self.persisted_peers = dict(data.get("peers", {}))
        self.persisted_index = int(data.get("index", 0))

    def _save_raft_state(self) -> None:
        if self.rc.server:
            index = self.catalog.index if self.catalog else self.persisted_index
            self._write_json(
                "standin-raft.json",
                {"bootstrapped": self.bootstrapped, "peers": self.persisted_peers, "index": index},
            )

    def _save_local_state(self) -> None:
        with self.lock:
            services = []
            for sid in sorted(self.persist_services):
                if sid not in self.service_raw:
                    continue
                body = dict(self.service_raw[sid])
                body["Checks"] = [
                    dict(c.defn, CheckID=c.check_id)
                    for c in self.checks.values()
                    if c.service_id == sid and c.kind != MAINT
                ]
                services.append(body)
            checks = [
                dict(
                    self.checks[cid].defn,
                    CheckID=cid,
                    Name=self.checks[cid].name,
                    ServiceID=self.checks[cid].service_id,
                )
                for cid in sorted(self.persist_checks)
                if cid in self.checks
            ]
            data = {"services": services, "checks": checks, "maintenance": dict(self.maint_reasons)}
        self._write_json("standin-local-state.json", data)

    # -- members ----------------------------------------------------------------
    def _self_member(self) -> dict:
        rc = self.rc
        tags = {
            "acls": "0",
            "build": f"{VERSION}:{REVISION}",
            "dc": rc.datacenter,
            "ft_fs": "1",
            "ft_si": "1",
            "id": self.node_id,
            "role": "consul" if rc.server else "node",
            "segment": "",
            "vsn": "2",
            "vsn_max": "3",
            "vsn_min": "2",
            "wan_join_port": str(rc.serf_wan_port),
        }
        if rc.server:
            tags.update({"port": str(rc.server_port), "raft_vsn": "3", "use_tls": "0"})
            if rc.bootstrap_expect:
                tags["expect"] = str(rc.bootstrap_expect)
            if rc.bootstrap:
                tags["bootstrap"] = "1"
        status = STATUS_LEFT if self.leaving else STATUS_ALIVE
        return {
            "Name": self.name,
            "Addr": rc.advertise_addr,
            "Port": rc.serf_lan_port,
            "Tags": tags,
            "Status": status,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
            "_inc": self.inc,
        }

    @staticmethod
    def member_public(m: dict) -> dict:
        return {k: v for k, v in m.items() if not k.startswith("_")}

    @staticmethod
    def _is_server(m: dict) -> bool:
        return m.get("Tags", {}).get("role") == "consul"

    def _server_addr(self, m: dict) -> str:
        return f"{m['Addr']}:{m.get('Tags', {}).get('port', '8300')}"

    def _merge_member(self, rec: dict) -> bool:
        """Merge one gossiped member record (caller holds the lock)."""
        name = rec.get("Name")
        if not name or "_inc" not in rec:
            return False
        if name == self.name:
            # Someone thinks we are dead or gone while we run: refute with a
            # higher incarnation, as SWIM/memberlist does.
            if not self.leaving and rec["Status"] != STATUS_ALIVE and rec["_inc"] >= self.inc:
                self.inc = rec["_inc"] + 1
                self.members[self.name] = self._self_member()
                self.log.warn(
                    "agent.client.memberlist.lan",
                    "memberlist: Refuting a dead/left message",
                    node=name,
                )
            return False
        cur = self.members.get(name)
        if cur is not None:
            newer = rec["_inc"] > cur["_inc"]
            worse = (
                rec["_inc"] == cur["_inc"]
                and _STATUS_RANK[rec["Status"]] > _STATUS_RANK[cur["Status"]]
            )
            if not (newer or worse):
                return False
        old_status = cur["Status"] if cur else None
        self.members[name] = copy.deepcopy(rec)
        if rec["Status"] != old_status:
            if rec["Status"] == STATUS_ALIVE:
                self.last_ack[name] = time.monotonic()
                self.log.info(
                    "agent.client.serf.lan", f"serf: EventMemberJoin: {name} {rec['Addr']}"
                )
            elif rec["Status"] == STATUS_FAILED:
                self.log.info(
                    "agent.client.serf.lan", f"serf: EventMemberFailed: {name} {rec['Addr']}"
                )
            elif rec["Status"] == STATUS_LEFT:
                self.log.info(
                    "agent.client.serf.lan", f"serf: EventMemberLeft: {name} {rec['Addr']}"
                )
        return True

    def _gossip_payload(self) -> dict:
        with self.lock:
            self.members[self.name] = self._self_member()
            return {
                "from": self.name,
                "dc": self.rc.datacenter,
                "members": [copy.deepcopy(m) for m in self.members.values()],
                "leader": dict(self.leader_rec),
                "bootstrapped": self.bootstrapped,
            }

    def _absorb_gossip(self, payload: dict) -> None:
        """Merge a gossip payload (members, leader record, bootstrap flag)."""
        with self.lock:
            changed = False
            for rec in payload.get("members", []):
                changed |= self._merge_member(rec)
            if payload.get("from") and payload["from"] in self.members:
                self.last_ack[payload["from"]] = time.monotonic()
            if payload.get("bootstrapped") and not self.bootstrapped:
                self.bootstrapped = True
                self._save_raft_state()
            self._merge_leader(payload.get("leader") or {})
            if changed:
                self.cond.notify_all()

    def _merge_leader(self, rec: dict) -> None:
        term, name = int(rec.get("term", 0)), str(rec.get("name", ""))
        cur_term, cur_name = self.leader_rec["term"], self.leader_rec["name"]
        if not name or (term, name) == (cur_term, cur_name):
            return
        take = term > cur_term
        if term == cur_term and name != cur_name:
            take = self._member_key(name) < self._member_key(cur_name)
        if take:
            self.leader_rec = {"term": term, "name": name}
            self.log.info("agent", f"New leader elected: payload={name}")
            self.sync_event.set()
            self.cond.notify_all()

    def _member_key(self, name: str) -> tuple:
        m = self.members.get(name)
        if not m:
            return (2, name)
        return (*_addr_key(m["Addr"], m["Port"]), name)

    def _peers_locked(self) -> dict[str, str]:
        """Raft peers as seen by this agent: name -> ip:server_port."""
        if not self.bootstrapped:
            return {}
        peers = dict(self.persisted_peers) if self.rc.server else {}
        for m in self.members.values():
            if not self._is_server(m):
                continue
            if m["Status"] == STATUS_LEFT:
                peers.pop(m["Name"], None)
            else:
                peers[m["Name"]] = self._server_addr(m)
        return peers

    def _quorum_locked(self, peers: dict[str, str]) -> bool:
        if not peers:
            return False
        alive = sum(1 for n in peers if self.members.get(n, {}).get("Status") == STATUS_ALIVE)
        return alive >= len(peers) // 2 + 1

    def known_leader(self) -> dict | None:
        """The leader's member record, if this agent believes there is one."""
        with self.lock:
            name = self.leader_rec["name"]
            if not name:
                return None
            m = self.members.get(name)
            if not m or m["Status"] != STATUS_ALIVE:
                return None
            if name == self.name and not self.leader_ready:
                return None
            if not self._quorum_locked(self._peers_locked()):
                return None
            return copy.deepcopy(m)

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        rc = self.rc
        self.servers.append(_Server((rc.bind_addr, rc.serf_lan_port), self.dispatch_internal))
        if rc.http_port > 0:
            for addr in rc.client_addrs:
                self.servers.append(_Server((addr, rc.http_port), self.dispatch_api))
        for srv in self.servers:
            threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
            ).start()
        self._load_local_state()
        for name, target in (
            ("ticker", self._ticker),
            ("sync", self._sync_loop),
            ("join", self._join_loop),
        ):
            threading.Thread(target=target, name=name, daemon=True).start()

    def _load_local_state(self) -> None:
        data = self._read_json("standin-local-state.json") or {}
        config_ids = set()
        for svc in self.rc.services:
            body = normalize_service_definition(svc)
            config_ids.add(body["ID"])
        for body in data.get("services", []):
            try:
                sid = normalize_service_definition(body)["ID"]
                if sid not in config_ids:
                    self.register_service(body, replace_checks=True, persist=True)
            except ApiError as e:
                self.log.warn("agent", "failed to restore persisted service", error=e.message)
        for body in data.get("checks", []):
            try:
                self.register_check(body, persist=True)
            except ApiError as e:
                self.log.warn("agent", "failed to restore persisted check", error=e.message)
        for svc in self.rc.services:
            self.register_service(svc, replace_checks=True, persist=False)
        for chk in self.rc.checks:
            try:
                self.register_check(chk, persist=False)
            except ApiError as e:
                self.log.warn("agent", "failed to register check from config", error=e.message)
        for key, reason in (data.get("maintenance") or {}).items():
            if key == NODE_MAINT_ID:
                self.set_node_maintenance(True, reason)
            elif key in self.services:
                self.set_service_maintenance(key, True, reason)

    def shutdown(self) -> None:
        self.stop_event.set()
        with self.lock:
            for chk in self.checks.values():
                if chk.runner:
                    chk.runner.stop()
            self.cond.notify_all()
        for srv in self.servers:
            try:
                srv.shutdown()
                srv.server_close()
            except OSError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    def leave(self) -> None:
        """Graceful leave: tell everyone we left, then stop."""
        self.log.info("agent", "Gracefully shutting down agent...")
        with self.lock:
            self.leaving = True
            self.inc += 1
            self.members[self.name] = self._self_member()
            targets = [
                m
                for m in self.members.values()
                if m["Name"] != self.name and m["Status"] != STATUS_LEFT
            ]
        payload = self._gossip_payload()
        futures = [self.executor.submit(self._gossip_to, m, payload) for m in targets]
        _futures_wait(futures, timeout=2.5)
        self.log.info("agent", "Graceful leave complete")

    # -- background loops ---------------------------------------------------------
    def _ticker(self) -> None:
        next_gossip = 0.0
        next_raft_save = time.monotonic() + 5
        while not self.stop_event.is_set():
            now = time.monotonic()
            try:
                if now >= next_gossip and not self.leaving:
                    next_gossip = now + GOSSIP_INTERVAL
                    self._gossip_round()
                self._detect_failures()
                if self.rc.server and not self.leaving:
                    self._evaluate_leadership()
                    if self.leader_ready:
                        self._reconcile()
                        self._maybe_replicate()
                    if now >= next_raft_save:
                        next_raft_save = now + 5
                        self._save_raft_state()
                self._reap_critical_services()
            except Exception as e:
                self.log.error("agent", "background loop error", error=repr(e))
            self.stop_event.wait(TICK)

    def _gossip_round(self) -> None:
        payload = self._gossip_payload()
        with self.lock:
            targets = [
                copy.deepcopy(m)
                for m in self.members.values()
                if m["Name"] != self.name and m["Status"] != STATUS_LEFT
            ]
        for m in targets:
            self.executor.submit(self._gossip_to, m, payload)

    def _gossip_to(self, m: dict, payload: dict) -> bool:
        url = f"http://{m['Addr']}:{m['Port']}/standin/v1/gossip"
        try:
            status, body = _http_json("POST", url, payload, timeout=PROBE_TIMEOUT)
        except (OSError, ValueError):
            return False
        if status != 200 or not isinstance(body, dict):
            return False
        if self.stop_event.is_set():
            return True
        with self.lock:
            self.last_ack[m["Name"]] = time.monotonic()
        self._absorb_gossip(body)
        return True

    def _detect_failures(self) -> None:
        now = time.monotonic()
        with self.lock:
            changed = False
            for name, m in self.members.items():
                if name == self.name or m["Status"] != STATUS_ALIVE:
                    continue
                last = self.last_ack.setdefault(name, now)
                if now - last > FAIL_AFTER:
                    m["Status"] = STATUS_FAILED
                    changed = True
                    self.log.info(
                        "agent.client.memberlist.lan",
                        f"memberlist: Marking {name} as failed, suspect timeout reached",
                    )
                    self.log.info(
                        "agent.client.serf.lan", f"serf: EventMemberFailed: {name} {m['Addr']}"
                    )
            if changed:
                self.cond.notify_all()

    def _join_loop(self) -> None:
        addrs = list(self.rc.start_join) + list(self.rc.retry_join)
        if not addrs:
            return
        self.log.info("agent", "Joining cluster...", cluster="LAN")
        attempt = 0
        while not self.stop_event.is_set():
            attempt += 1
            n = self.join(addrs)
            if n > 0:
                self.log.info(
                    "agent",
                    "Join cluster completed. Synced with initial agents",
                    cluster="LAN",
                    num_agents=n,
                )
                return
            if self.rc.retry_max and attempt >= self.rc.retry_max:
                self.log.error("agent", "Could not join cluster: retry_max reached", cluster="LAN")
                return
            self.log.warn(
                "agent",
                "Join cluster failed, will retry: cluster=LAN "
                f"retry_interval={format_duration(self.rc.retry_interval)} "
                'error="No members could be joined"',
            )
            self.stop_event.wait(self.rc.retry_interval)

    def _resolve_join_addr(self, addr: str) -> list[tuple[str, int]]:
        addr = addr.strip()
        if addr.startswith("provider="):
            self.log.error(
                "agent", "cloud auto-join is not supported by the Consul stand-in", address=addr
            )
            return []
        host, port = addr, self.rc.serf_lan_port
        m = re.fullmatch(r"\[(.+)\](?::(\d+))?", addr)
        if m:
            host, port = m.group(1), int(m.group(2) or port)
        elif addr.count(":") == 1:
            host, p = addr.split(":")
            port = int(p)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return []
        seen: list[tuple[str, int]] = []
        for info in infos:
            target = (info[4][0], port)
            if target not in seen:
                seen.append(target)
        return seen

    def join(self, addrs: list[str]) -> int:
        """Contact the given addresses; returns how many answered."""
        joined = 0
        for addr in addrs:
            for host, port in self._resolve_join_addr(addr):
                hostpart = f"[{host}]" if ":" in host else host
                payload = self._gossip_payload()
                try:
                    status, body = _http_json(
                        "POST", f"http://{hostpart}:{port}/standin/v1/gossip", payload, timeout=2.0
                    )
                except (OSError, ValueError):
                    continue
                if status == 200 and isinstance(body, dict):
                    self._absorb_gossip(body)
                    # Reaching ourselves (retry_join lists often include the
                    # agent's own address) does not count as joining a cluster.
                    if body.get("from") != self.name:
                        joined += 1
        if joined:
            with self.lock:
                self.joined = True
                n = sum(1 for m in self.members.values() if m["Status"] == STATUS_ALIVE)
            self.log.info("agent", f"(LAN) joined: number_of_nodes={joined}")
            self.log.debug("agent", "members after join", alive=n)
        return joined

    # -- leadership (servers) -------------------------------------------------------
    def _evaluate_leadership(self) -> None:
        become = False
        with self.lock:
            self.members[self.name] = self._self_member()
            if not self.bootstrapped:
                expect = 1 if (self.rc.bootstrap or self.rc.dev) else self.rc.bootstrap_expect
                alive_servers = sorted(
                    n
                    for n, m in self.members.items()
                    if self._is_server(m) and m["Status"] == STATUS_ALIVE
                )
                if expect and len(alive_servers) >= expect:
                    self.bootstrapped = True
                    self.log.info(
                        "agent.server",
                        "Found expected number of peers, attempting bootstrap",
                        peers=",".join(alive_servers),
                    )
                    self._save_raft_state()
            peers = self._peers_locked()
            if peers != self.persisted_peers and self.bootstrapped:
                self.persisted_peers = dict(peers)
                self._save_raft_state()
            quorum = self._quorum_locked(peers)
            leader = self.leader_rec["name"]
            leader_alive = (
                bool(leader)
                and self.members.get(leader, {}).get("Status") == STATUS_ALIVE
                and leader in peers
            )
            if quorum and not leader_alive:
                alive = [n for n in peers if self.members.get(n, {}).get("Status") == STATUS_ALIVE]
                candidate = min(alive, key=self._member_key)
                if candidate == self.name:
                    self.leader_rec = {"term": self.leader_rec["term"] + 1, "name": self.name}
                    self.log.info(
                        "agent.server.raft",
                        "entering leader state",
                        leader=self._server_addr(self.members[self.name]),
                    )
                    self.cond.notify_all()
            should_lead = self.leader_rec["name"] == self.name and quorum
            if should_lead and not self.leader_ready:
                become = True
            elif not should_lead and self.leader_ready:
                self.leader_ready = False
                self.log.info("agent.server", "cluster leadership lost")
                self.cond.notify_all()
            term = self.leader_rec["term"]
            replica_sources = [
                copy.deepcopy(self.members[n])
                for n in peers
                if n != self.name and self.members.get(n, {}).get("Status") == STATUS_ALIVE
            ]
        if become:
            self._become_leader(term, replica_sources)

    def _become_leader(self, term: int, sources: list[dict]) -> None:
        """Take over the freshest catalog replica among the alive servers."""
        best: dict | None = None
        futures = [
            self.executor.submit(
                _http_json, "GET", f"http://{m['Addr']}:{m['Port']}/standin/v1/replica", None, 1.0
            )
            for m in sources
        ]
        for fut in futures:
            try:
                status, body = fut.result(timeout=2.0)
            except Exception:
                continue
            if (
                status == 200
                and isinstance(body, dict)
                and body.get("catalog")
                and (best is None or body["catalog"].get("index", 0) > best.get("index", 0))
            ):
                best = body["catalog"]
        with self.lock:
            if self.leader_rec != {"term": term, "name": self.name}:
                return  # lost the race meanwhile
            mine = self.catalog
            if best is not None and (mine is None or best.get("index", 0) > mine.index):
                cat = Catalog.from_dict(best)
            else:
                cat = mine or Catalog()
            cat.index = max(cat.index, self.persisted_index) + 1
            self.catalog = cat
            self.leader_ready = True
            self.repl_dirty = True
            self.log.info("agent.server", "cluster leadership acquired")
            self.log.info("agent.server", f"New leader elected: payload={self.name}")
            self.cond.notify_all()
        self.sync_event.set()

    def _node_entry(self, m: dict) -> dict:
        addr = m["Addr"]
        tagged = {"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr}
        return {
            "ID": m.get("Tags", {}).get("id", ""),
            "Node": m["Name"],
            "Address": addr,
            "Datacenter": m.get("Tags", {}).get("dc", self.rc.datacenter),
            "TaggedAddresses": tagged,
            "Meta": m.get("_meta") or {"consul-network-segment": ""},
        }

    def _reconcile(self) -> None:
        """Leader: make the catalog follow membership (like Consul's reconcile)."""
        with self.lock:
            cat = self.catalog
            if cat is None or not self.leader_ready:
                return
            before = cat.index
            for name, m in list(self.members.items()):
                if m["Status"] == STATUS_LEFT:
                    if cat.delete_node(name):
                        self.log.info(
                            "agent.leader", "deregistering member", member=name, reason="left"
                        )
                    continue
                node = self._node_entry(m)
                old = cat.nodes.get(name)
                if old is not None:
                    node["Meta"] = old.get("Meta", node["Meta"])
                    node["ID"] = old.get("ID") or node["ID"]
                cat.upsert_node(node)
                alive = m["Status"] == STATUS_ALIVE
                cat.upsert_check(
                    name,
                    {
                        "Node": name,
                        "CheckID": SERF_CHECK_ID,
                        "Name": "Serf Health Status",
                        "Status": PASSING if alive else CRITICAL,
                        "Notes": "",
                        "Output": "Agent alive and reachable"
                        if alive
                        else "Agent not live or unreachable",
                        "ServiceID": "",
                        "ServiceName": "",
                        "ServiceTags": [],
                        "Type": "",
                        "Interval": "",
                        "Timeout": "",
                        "ExposedPort": 0,
                        "Definition": {},
                    },
                )
                if self._is_server(m):
                    cat.upsert_service(
                        name,
                        {
                            "ID": "consul",
                            "Service": "consul",
                            "Tags": [],
                            "Address": "",
                            "Meta": {
                                "non_voter": "false",
                                "raft_version": "3",
                                "read_replica": "false",
                                "serf_protocol_current": "2",
                                "serf_protocol_max": "5",
                                "serf_protocol_min": "1",
                                "version": m.get("Tags", {}).get("build", VERSION).split(":")[0],
                            },
                            "Port": int(m.get("Tags", {}).get("port", "8300")),
                            "Weights": {"Passing": 1, "Warning": 1},
                            "EnableTagOverride": False,
                        },
                    )
            for name in list(cat.nodes):
                if name not in self.members:
                    cat.delete_node(name)
                    self.log.info(
                        "agent.leader", "deregistering member", member=name, reason="reaped"
                    )
            if cat.index != before:
                self.repl_dirty = True
                self.cond.notify_all()

    def _maybe_replicate(self) -> None:
        now = time.monotonic()
        with self.lock:
            if not self.leader_ready or self.catalog is None:
                return
            if not self.repl_dirty and now - self.last_repl < REPLICATION_HEARTBEAT:
                return
            self.repl_dirty = False
            self.last_repl = now
            payload = {
                "term": self.leader_rec["term"],
                "leader": self.name,
                "catalog": self.catalog.to_dict(),
            }
            targets = [
                copy.deepcopy(self.members[n])
                for n in self._peers_locked()
                if n != self.name and self.members.get(n, {}).get("Status") == STATUS_ALIVE
            ]
        for m in targets:
            self.executor.submit(
                _http_json,
                "POST",
                f"http://{m['Addr']}:{m['Port']}/standin/v1/replicate",
                payload,
                2.0,
            )

    # -- anti-entropy (every agent) ---------------------------------------------------
    def _local_state_payload(self) -> dict:
        with self.lock:
            now = time.monotonic()
            services = []
            for sid, svc in self.services.items():
                services.append(
                    {
                        "ID": sid,
                        "Service": svc["Service"],
                        "Tags": list(svc["Tags"]),
                        "Address": svc["Address"],
                        "TaggedAddresses": copy.deepcopy(svc.get("TaggedAddresses") or {}),
                        "Meta": dict(svc["Meta"]),
                        "Port": svc["Port"],
                        "Weights": dict(svc["Weights"]),
                        "EnableTagOverride": svc["EnableTagOverride"],
                    }
                )
            checks = []
            for chk in self.checks.values():
                # Output-only changes are synced at most every check_update_interval, like Consul.
                if now - chk.output_synced_at > OUTPUT_UPDATE_INTERVAL:
                    chk.synced_output = chk.output
                    chk.output_synced_at = now
                checks.append(self._check_json(chk, chk.synced_output))
            self.members[self.name] = self._self_member()
            member = copy.deepcopy(self.members[self.name])
            member["_meta"] = dict({"consul-network-segment": ""}, **self.rc.node_meta)
            return {"member": member, "services": services, "checks": checks}

    def _sync_loop(self) -> None:
        while not self.stop_event.is_set():
            self.sync_event.wait(AE_INTERVAL)
            self.sync_event.clear()
            if self.stop_event.is_set() or self.leaving:
                return
            try:
                ok = self._sync_once()
            except Exception as e:
                self.log.error("agent", "anti-entropy sync failed", error=repr(e))
                ok = False
            if not ok:
                if self.stop_event.wait(0.5):
                    return
                self.sync_event.set()

    def _sync_once(self) -> bool:
        leader = self.known_leader()
        if leader is None:
            return False
        payload = self._local_state_payload()
        if leader["Name"] == self.name:
            try:
                self.apply_sync(payload)
            except ApiError:
                return False
        else:
            url = f"http://{leader['Addr']}:{leader['Port']}/standin/v1/sync"
            try:
                status, _ = _http_json("POST", url, payload, timeout=3.0)
            except (OSError, ValueError):
                return False
            if status != 200:
                return False
        self._log_synced(payload)
        return True

    def _log_synced(self, payload: dict) -> None:
        if not self.synced_once:
            self.synced_once = True
            self.log.info("agent", "Synced node info")
        current = {s["ID"]: json.dumps(s, sort_keys=True) for s in payload["services"]}
        for sid, digest in current.items():
            if self.last_synced.get(sid) != digest:
                self.log.info("agent", "Synced service", service=sid)
        for sid in set(self.last_synced) - set(current):
            self.log.info("agent", "Deregistered service", service=sid)
        self.last_synced = current

    def apply_sync(self, payload: dict) -> int:
        """Leader: replace one node's agent-owned services and checks."""
        with self.lock:
            cat = self.catalog
            if cat is None or not self.leader_ready:
                raise ApiError(500, "No cluster leader")
            member = payload["member"]
            name = member["Name"]
            meta = member.pop("_meta", None) or {"consul-network-segment": ""}
            if name != self.name:
                self._merge_member(member)
            m = self.members.get(name)
            if m is None or m["Status"] == STATUS_LEFT:
                raise ApiError(409, "node is not a cluster member")
            before = cat.index
            node = self._node_entry(m)
            node["Meta"] = meta
            cat.upsert_node(node)
            server_owned = {"consul"} if self._is_server(m) else set()
            incoming = {s["ID"]: s for s in payload.get("services", [])}
            for sid in list(cat.services.get(name, {})):
                if sid not in incoming and sid not in server_owned:
                    cat.delete_service(name, sid)
            for svc in incoming.values():
                if svc["ID"] not in server_owned:
                    cat.upsert_service(name, svc)
            incoming_checks = {c["CheckID"]: c for c in payload.get("checks", [])}
            for cid in list(cat.checks.get(name, {})):
                if cid not in incoming_checks and cid != SERF_CHECK_ID:
                    cat.delete_check(name, cid)
            for chk in incoming_checks.values():
                if chk["CheckID"] != SERF_CHECK_ID and (
                    not chk["ServiceID"] or chk["ServiceID"] in incoming
                ):
                    cat.upsert_check(name, chk)
            if cat.index != before:
                self.repl_dirty = True
                self.cond.notify_all()
            return cat.index

    # -- local services and checks ----------------------------------------------------
    def _check_json(self, chk: LocalCheck, output: str | None = None) -> dict:
        svc = self.services.get(chk.service_id)
        d = chk.defn
        definition: dict[str, Any] = {}
        for key in (
            "HTTP",
            "Header",
            "Method",
            "Body",
            "TLSServerName",
            "TLSSkipVerify",
            "TCP",
            "GRPC",
        ):
            if d.get(key):
                definition[key] = d[key]
        if d.get("Args"):
            definition["ScriptArgs"] = d["Args"]
        for key in ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter"):
            secs = chk.seconds(key)
            if secs:
                definition[key] = format_duration(secs)
        return {
            "Node": self.name,
            "CheckID": chk.check_id,
            "Name": chk.name,
            "Status": chk.status,
            "Notes": chk.notes,
            "Output": chk.output if output is None else output,
            "ServiceID": chk.service_id,
            "ServiceName": chk.service_name,
            "ServiceTags": list(svc["Tags"]) if svc else [],
            "Type": chk.kind if chk.kind != MAINT else "maintenance",
            "Interval": format_duration(chk.seconds("Interval"))
            if chk.kind in ("http", "tcp", "script", "grpc")
            else "",
            "Timeout": format_duration(chk.seconds("Timeout")) if chk.seconds("Timeout") else "",
            "ExposedPort": 0,
            "Definition": definition,
            "CreateIndex": 0,
            "ModifyIndex": 0,
        }

    def _new_check(
        self, chk: dict, check_id: str, service_id: str, service_name: str, default_name: str
    ) -> LocalCheck:
        status = chk.get("Status") or CRITICAL
        lc = LocalCheck(
            check_id=check_id,
            name=str(chk.get("Name") or default_name),
            kind=check_kind(chk),
            defn=dict(chk),
            service_id=service_id,
            service_name=service_name,
            status=status,
            notes=str(chk.get("Notes") or ""),
        )
        if lc.kind == "script" and not self.rc.enable_script_checks:
            raise ApiError(
                500,
                "Scripts are disabled on this agent; to enable, configure "
                "'enable_script_checks' or 'enable_local_script_checks' to true",
            )
        lc.critical_since = time.monotonic() if status == CRITICAL else None
        lc.output_synced_at = time.monotonic()
        return lc

    def _install_check(self, lc: LocalCheck, keep_status: bool) -> None:
        """Add or replace a local check (caller holds the lock)."""
        prev = self.checks.get(lc.check_id)
        if prev is not None:
            if prev.runner:
                prev.runner.stop()
            if keep_status:
                lc.status, lc.output, lc.synced_output = (
                    prev.status,
                    prev.output,
                    prev.synced_output,
                )
                lc.critical_since = prev.critical_since
        self.checks[lc.check_id] = lc
        if lc.kind in ("http", "tcp", "script", "grpc", "ttl"):
            lc.runner = CheckRunner(self, lc)
            lc.runner.start()

    def _remove_check(self, cid: str) -> None:
        chk = self.checks.pop(cid, None)
        if chk and chk.runner:
            chk.runner.stop()

    def register_service(
        self, body: dict, replace_checks: bool = False, persist: bool = True
    ) -> str:
        """Register (or replace) a local service and its checks."""
        svc = normalize_service_definition(body)
        sid, name = str(svc["ID"]), str(svc["Name"])
        address = str(svc.get("Address") or "")
        port = int(svc.get("Port") or 0)
        tagged = copy.deepcopy(svc.get("TaggedAddresses") or {})
        try:
            ip = ipaddress.ip_address(address) if address else None
        except ValueError:
            ip = None
        if ip is not None:
            lan, wan = ("lan_ipv4", "wan_ipv4") if ip.version == 4 else ("lan_ipv6", "wan_ipv6")
            tagged.setdefault(lan, {"Address": address, "Port": port})
            tagged.setdefault(wan, {"Address": address, "Port": port})
        entry = {
            "ID": sid,
            "Service": name,
            "Tags": list(svc["Tags"]),
            "Meta": dict(svc["Meta"]),
            "Port": port,
            "Address": address,
            "TaggedAddresses": tagged,
            "Weights": svc["Weights"],
            "EnableTagOverride": bool(svc.get("EnableTagOverride", False)),
        }
        checks = svc["Checks"]
        new_checks = []
        for i, chk in enumerate(checks):
            cid = str(
                chk.get("CheckID")
                or (f"service:{sid}:{i + 1}" if len(checks) > 1 else f"service:{sid}")
            )
            new_checks.append(self._new_check(chk, cid, sid, name, f"Service '{name}' check"))
        raw = {k: v for k, v in svc.items() if k not in ("Check", "Checks") and v is not None}
        with self.lock:
            self.services[sid] = entry
            self.service_raw[sid] = raw
            new_ids = {c.check_id for c in new_checks}
            if replace_checks:
                for cid in [
                    c
                    for c, v in self.checks.items()
                    if v.service_id == sid and v.kind != MAINT and c not in new_ids
                ]:
                    self._remove_check(cid)
            for lc in new_checks:
                self._install_check(lc, keep_status="Status" not in lc.defn)
            for chk in self.checks.values():
                if chk.service_id == sid:
                    chk.service_name = name
            if persist:
                self.persist_services.add(sid)
            else:
                self.persist_services.discard(sid)
        self.log.debug("agent", "added local service", service=sid)
        if persist:
            self._save_local_state()
        self.sync_event.set()
        return sid

    def deregister_service(self, sid: str) -> None:
        with self.lock:
            if sid not in self.services:
                raise _unknown_service(sid)
            del self.services[sid]
            self.service_raw.pop(sid, None)
            self.persist_services.discard(sid)
            self.maint_reasons.pop(sid, None)
            for cid in [c for c, v in self.checks.items() if v.service_id == sid]:
                self._remove_check(cid)
                self.persist_checks.discard(cid)
        self.log.info("agent", "Deregistered service", service=sid)
        self._save_local_state()
        self.sync_event.set()

    def register_check(self, body: dict, persist: bool = True) -> str:
        chk = normalize_check_definition(body)
        name = chk.get("Name")
        if not name:
            raise ApiError(400, "Missing check name")
        cid = str(chk.get("CheckID") or name)
        sid = str(chk.get("ServiceID") or "")
        with self.lock:
            svc_name = ""
            if sid:
                if sid not in self.services:
                    raise ApiError(400, f'ServiceID "{sid}" does not exist')
                svc_name = self.services[sid]["Service"]
            lc = self._new_check(chk, cid, sid, svc_name, str(name))
            self._install_check(lc, keep_status="Status" not in chk)
            if persist:
                self.persist_checks.add(cid)
        if persist:
            self._save_local_state()
        self.sync_event.set()
        return cid

    def deregister_check(self, cid: str) -> None:
        with self.lock:
            if cid not in self.checks:
                raise _unknown_check(cid)
            self._remove_check(cid)
            self.persist_checks.discard(cid)
        self._save_local_state()
        self.sync_event.set()

    def set_check_status(self, cid: str, status: str, output: str, from_runner: bool) -> None:
        """Record a check result (applies success/failure thresholds)."""
        with self.lock:
            chk = self.checks.get(cid)
            if chk is None:
                return
            if from_runner:
                if status == CRITICAL:
                    chk.successes = 0
                    chk.failures += 1
                    threshold = int(chk.defn.get("FailuresBeforeCritical") or 0)
                    if chk.failures < threshold and chk.status != CRITICAL:
                        return
                else:
                    chk.failures = 0
                    chk.successes += 1
                    threshold = int(chk.defn.get("SuccessBeforePassing") or 0)
                    if chk.successes < threshold and chk.status == CRITICAL:
                        return
            old = chk.status
            chk.output = output[:OUTPUT_MAX_SIZE]
            if status == old:
                # Output-only changes wait for check_update_interval, except the
                # very first output, so the catalog never keeps an empty one.
                if chk.synced_output or not chk.output:
                    return
                chk.synced_output = chk.output
                chk.output_synced_at = time.monotonic()
                self.sync_event.set()
                return
            chk.status = status
            chk.synced_output = chk.output
            chk.output_synced_at = time.monotonic()
            chk.critical_since = (
                (chk.critical_since or time.monotonic()) if status == CRITICAL else None
            )
        if status == CRITICAL:
            self.log.warn("agent", "Check is now critical", check=cid)
        elif status == WARNING:
            self.log.warn("agent", "Check is now warning", check=cid)
        else:
            self.log.debug("agent", "Check status updated", check=cid, status=status)
        self.sync_event.set()

    def update_ttl(self, cid: str, status: str, output: str) -> None:
        with self.lock:
            chk = self.checks.get(cid)
            if chk is None:
                raise _unknown_check(cid)
            if chk.kind != "ttl":
                raise ApiError(500, f'CheckID "{cid}" does not have associated TTL')
            ttl = chk.seconds("TTL") or 0
            chk.ttl_deadline = time.monotonic() + ttl
            if chk.runner:
                chk.runner.ttl_reset.set()
        self.set_check_status(cid, status, output, from_runner=False)
        with self.lock:  # output always follows the last update for TTL checks
            if cid in self.checks:
                self.checks[cid].output = output
                self.checks[cid].synced_output = output
        self.sync_event.set()

    def set_service_maintenance(self, sid: str, enable: bool, reason: str) -> None:
        cid = SERVICE_MAINT_PREFIX + sid
        with self.lock:
            svc = self.services.get(sid)
            if svc is None:
                raise _unknown_service(sid)
            if enable:
                notes = reason or (
                    "Maintenance mode is enabled for this service, but no reason was provided. "
                    "This is a default message."
                )
                lc = LocalCheck(
                    check_id=cid,
                    name="Service Maintenance Mode",
                    kind=MAINT,
                    defn={},
                    service_id=sid,
                    service_name=svc["Service"],
                    status=CRITICAL,
                    notes=notes,
                    critical_since=None,
                )
                self.checks[cid] = lc
                self.maint_reasons[sid] = reason
                self.log.info("agent", "Service entered maintenance mode", service=sid)
            else:
                if cid in self.checks:
                    self.log.info("agent", "Service left maintenance mode", service=sid)
                self.checks.pop(cid, None)
                self.maint_reasons.pop(sid, None)
        self._save_local_state()
        self.sync_event.set()

    def set_node_maintenance(self, enable: bool, reason: str) -> None:
        with self.lock:
            if enable:
                notes = reason or (
                    "Maintenance mode is enabled for this node, but no reason was provided. "
                    "This is a default message."
                )
                self.checks[NODE_MAINT_ID] = LocalCheck(
                    check_id=NODE_MAINT_ID,
                    name="Node Maintenance Mode",
                    kind=MAINT,
                    defn={},
                    status=CRITICAL,
                    notes=notes,
                )
                self.maint_reasons[NODE_MAINT_ID] = reason
                self.log.info("agent", "Node entered maintenance mode")
            else:
                self.checks.pop(NODE_MAINT_ID, None)
                self.maint_reasons.pop(NODE_MAINT_ID, None)
        self._save_local_state()
        self.sync_event.set()

    def _reap_critical_services(self) -> None:
        """DeregisterCriticalServiceAfter, checked every tick (no 1m minimum)."""
        now = time.monotonic()
        doomed: list[tuple[str, str]] = []
        with self.lock:
            for chk in self.checks.values():
                if (
                    not chk.service_id
                    or chk.status != CRITICAL
                    or chk.critical_since is None
                    or chk.kind == MAINT
                ):
                    continue
                try:
                    limit = chk.seconds("DeregisterCriticalServiceAfter")
                except ValueError:
                    limit = None
                if limit and now - chk.critical_since > limit:
                    doomed.append((chk.service_id, chk.check_id))
        for sid, cid in doomed:
            if sid in self.services:
                self.log.info(
                    "agent",
                    "Check for service has been critical for too long; deregistered service",
                    service=sid,
                    check=cid,
                )
                with contextlib.suppress(ApiError):
                    self.deregister_service(sid)

    # -- HTTP dispatch ----------------------------------------------------------------
    def dispatch_api(self, req: Request) -> Response:
        return self._dispatch(req, forwarded=False)

    def dispatch_internal(self, req: Request) -> Response:
        if req.path.startswith("/standin/v1/"):
            return self._dispatch_private(req)
        return self._dispatch(req, forwarded=True)

    def _dispatch(self, req: Request, forwarded: bool) -> Response:
        path = req.path
        for methods, pattern, handler, is_catalog in ROUTES:
            m = pattern.fullmatch(path)
            if not m:
                continue
            # Like Go's mux, the first route whose path matches decides.
            if forwarded and not is_catalog:
                break
            if req.method not in methods and not (req.method == "HEAD" and "GET" in methods):
                if req.method == "OPTIONS":
                    return Response(
                        200, b"", "text/plain; charset=utf-8", {"Allow": ",".join(sorted(methods))}
                    )
                raise ApiError(405, f"method {req.method} not allowed")
            if is_catalog:
                return self._catalog_read(handler, req, m.groupdict(), forwarded)
            return getattr(self, "h_" + handler)(req, **m.groupdict())
        if self.rc.ui and (path in ("/", "/ui") or path.startswith("/ui/")):
            return Response(
                200,
                b"<!doctype html><title>Consul stand-in</title><p>Consul stand-in: no UI.</p>",
                "text/html; charset=utf-8",
            )
        if path == "/v1/kv" or path.startswith("/v1/kv/"):
            raise ApiError(501, "the KV store is not implemented by the Consul stand-in")
        return text_response("404 page not found\n", 404)

    def _dispatch_private(self, req: Request) -> Response:
        if req.path == "/standin/v1/gossip" and req.method == "POST":
            payload = req.json()
            self._absorb_gossip(payload)
            return json_response(self._gossip_payload())
        if req.path == "/standin/v1/sync" and req.method == "POST":
            index = self.apply_sync(req.json())
            return json_response({"Index": index})
        if req.path == "/standin/v1/replicate" and req.method == "POST":
            payload = req.json()
            with self.lock:
                if not self.leader_ready and int(payload.get("term", 0)) >= self.leader_rec["term"]:
                    self.catalog = Catalog.from_dict(payload["catalog"])
                    self.persisted_index = max(self.persisted_index, self.catalog.index)
                    self.cond.notify_all()
            return json_response({})
        if req.path == "/standin/v1/replica" and req.method == "GET":
            with self.lock:
                data = self.catalog.to_dict() if self.catalog else None
            return json_response({"catalog": data})
        return text_response("404 page not found\n", 404)

    # -- catalog reads (leader-served, forwarded, blocking) ---------------------------
    def _catalog_read(self, handler: str, req: Request, params: dict, forwarded: bool) -> Response:
        dc = req.q("dc")
        if dc and dc != self.rc.datacenter:
            raise ApiError(500, "No path to datacenter")
        stale = "stale" in req.query
        with self.lock:
            local_ok = self.leader_ready or (stale and self.rc.server and self.catalog is not None)
        if local_ok:
            return self._serve_catalog(handler, req, params, stale)
        if forwarded:
            raise ApiError(500, "No cluster leader")
        leader = self.known_leader()
        if leader is None:
            raise ApiError(500, "No cluster leader")
        return self._forward(leader, req)

    def _forward(self, leader: dict, req: Request) -> Response:
        url = f"http://{leader['Addr']}:{leader['Port']}{urllib.parse.quote(req.path)}"
        if req.raw_query:
            url += "?" + req.raw_query
        timeout = 10.0
        if req.q("index") not in ("", "0"):
            timeout += self._wait_seconds(req)
        fwd = urllib.request.Request(url, method="GET")
        try:
            with _NO_PROXY_OPENER.open(fwd, timeout=timeout) as resp:
                status, headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        except (urllib.error.URLError, OSError) as e:
            server = f"{leader['Addr']}:{leader.get('Tags', {}).get('port', '8300')}"
            reason = getattr(e, "reason", e)
            if isinstance(reason, ConnectionRefusedError):
                detail = f"dial tcp {server}: connect: connection refused"
            elif isinstance(reason, (TimeoutError, socket.timeout)):
                detail = f"dial tcp {server}: i/o timeout"
            else:
                detail = str(reason)
            raise ApiError(500, f"rpc error making call: {detail}") from None
        out = Response(status, body, headers.get("Content-Type", "application/json"))
        for key in (
            "X-Consul-Index",
            "X-Consul-KnownLeader",
            "X-Consul-LastContact",
            "X-Consul-Effective-Consistency",
        ):
            if headers.get(key) is not None:
                out.headers[key] = headers[key]
        return out

    @staticmethod
    def _wait_seconds(req: Request) -> float:
        wait = req.q("wait")
        if not wait:
            return 300.0
        try:
            return max(0.0, min(parse_duration(wait), 600.0))
        except ValueError:
            raise ApiError(400, "Invalid wait time") from None

    def _serve_catalog(self, handler: str, req: Request, params: dict, stale: bool) -> Response:
        index_text = req.q("index")
        try:
            min_index = int(index_text) if index_text else 0
        except ValueError:
            raise ApiError(400, "Invalid index") from None
        blocking = min_index > 0 and handler not in _NON_BLOCKING_CATALOG
        deadline = time.monotonic() + (self._wait_seconds(req) if blocking else 0)
        with self.lock:
            while blocking and not self.stop_event.is_set():
                cat = self.catalog
                if cat is None or cat.index > min_index:
                    break
                if not (self.leader_ready or stale):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            cat = self.catalog
            if cat is None or not (self.leader_ready or stale):
                raise ApiError(500, "No cluster leader")
            result = getattr(self, "c_" + handler)(cat, req, **params)
            known = self.known_leader() is not None
            headers = {
                "X-Consul-Index": str(max(1, cat.index)),
                "X-Consul-KnownLeader": "true" if known else "false",
                "X-Consul-LastContact": "0",
                "X-Consul-Effective-Consistency": "stale" if stale else "leader",
            }
        if isinstance(result, Response):
            result.headers.update(headers)
            return result
        return json_response(result, req, headers=headers)

    def c_catalog_services(self, cat: Catalog, req: Request) -> Any:
        return cat.catalog_services()

    def c_catalog_service(self, cat: Catalog, req: Request, name: str) -> Any:
        return cat.catalog_service(name, req.query.get("tag", []))

    def c_catalog_nodes(self, cat: Catalog, req: Request) -> Any:
        return cat.catalog_nodes()

    def c_catalog_node(self, cat: Catalog, req: Request, node: str) -> Any:
        return cat.catalog_node(node)

    def c_health_service(self, cat: Catalog, req: Request, name: str) -> Any:
        return cat.health_service(name, req.query.get("tag", []), req.qbool("passing"))

    def c_health_checks(self, cat: Catalog, req: Request, name: str) -> Any:
        return cat.health_checks_for_service(name)

    def c_health_state(self, cat: Catalog, req: Request, state: str) -> Any:
        if state not in ("any", PASSING, WARNING, CRITICAL):
            raise ApiError(400, f"Invalid state: {state}")
        return cat.health_state(state)

    def c_health_node(self, cat: Catalog, req: Request, node: str) -> Any:
        return cat.health_node(node)

    def c_operator_raft_configuration(self, cat: Catalog, req: Request) -> Any:
        peers = self._peers_locked()
        leader = self.leader_rec["name"] if self.known_leader() else ""
        servers = []
        for name in sorted(peers, key=self._member_key):
            m = self.members.get(name, {})
            servers.append(
                {
                    "ID": m.get("Tags", {}).get("id", peers[name]),
                    "Node": name if m else "(unknown)",
                    "Address": peers[name],
                    "Leader": name == leader,
                    "ProtocolVersion": "3",
                    "Voter": True,
                }
            )
        return {"Servers": servers, "Index": cat.index}

    # -- agent endpoints ---------------------------------------------------------------
    def h_status_leader(self, req: Request) -> Response:
        with self.lock:
            if not any(
                self._is_server(m) and m["Status"] != STATUS_LEFT for m in self.members.values()
            ):
                raise ApiError(500, "No known Consul servers")
        leader = self.known_leader()
        return json_response(self._server_addr(leader) if leader else "", req)

    def h_status_peers(self, req: Request) -> Response:
        with self.lock:
            peers = self._peers_locked()
            return json_response([peers[n] for n in sorted(peers, key=self._member_key)], req)

    def h_agent_self(self, req: Request) -> Response:
        rc = self.rc
        leader = self.known_leader()
        with self.lock:
            member = self.member_public(self._self_member())
            peers = self._peers_locked()
            stats = {
                "agent": {
                    "check_monitors": "0",
                    "check_ttls": str(sum(1 for c in self.checks.values() if c.kind == "ttl")),
                    "checks": str(len(self.checks)),
                    "services": str(len(self.services)),
                },
                "build": {
                    "prerelease": "",
                    "revision": REVISION,
                    "version": VERSION,
                    "version_metadata": "",
                },
                "consul": {
                    "server": str(rc.server).lower(),
                    "known_servers": str(
                        sum(
                            1
                            for m in self.members.values()
                            if self._is_server(m) and m["Status"] == STATUS_ALIVE
                        )
                    ),
                    "leader": str(bool(self.leader_ready)).lower(),
                    "leader_addr": self._server_addr(leader) if leader else "",
                    "bootstrap": str(rc.bootstrap).lower(),
                    "known_datacenters": "1",
                },
                "serf_lan": {
                    "members": str(len(self.members)),
                    "failed": str(
                        sum(1 for m in self.members.values() if m["Status"] == STATUS_FAILED)
                    ),
                    "left": str(
                        sum(1 for m in self.members.values() if m["Status"] == STATUS_LEFT)
                    ),
                },
            }
            if rc.server:
                stats["raft"] = {
                    "state": "Leader" if self.leader_ready else "Follower",
                    "num_peers": str(max(0, len(peers) - (1 if self.name in peers else 0))),
                    "applied_index": str(self.catalog.index if self.catalog else 0),
                    "commit_index": str(self.catalog.index if self.catalog else 0),
                    "term": str(self.leader_rec["term"]),
                    "protocol_version": "3",
                }
        body = {
            "Config": {
                "Datacenter": rc.datacenter,
                "PrimaryDatacenter": rc.datacenter,
                "NodeName": self.name,
                "NodeID": self.node_id,
                "Revision": REVISION,
                "Server": rc.server,
                "Version": VERSION,
                "BuildDate": "2022-02-11T00:00:00Z",
            },
            "DebugConfig": {
                "AdvertiseAddrLAN": rc.advertise_addr,
                "BindAddr": rc.bind_addr,
                "Bootstrap": rc.bootstrap,
                "BootstrapExpect": rc.bootstrap_expect,
                "ClientAddrs": list(rc.client_addrs),
                "DataDir": rc.data_dir,
                "Datacenter": rc.datacenter,
                "DevMode": rc.dev,
                "HTTPPort": rc.http_port,
                "LeaveOnTerm": rc.leave_on_terminate,
                "LogLevel": rc.log_level,
                "NodeID": self.node_id,
                "NodeName": self.name,
                "RejoinAfterLeave": rc.rejoin_after_leave,
                "RetryJoinIntervalLAN": format_duration(rc.retry_interval),
                "RetryJoinLAN": list(rc.retry_join),
                "SerfPortLAN": rc.serf_lan_port,
                "ServerMode": rc.server,
                "ServerPort": rc.server_port,
                "SkipLeaveOnInt": rc.skip_leave_on_interrupt,
                "StartJoinAddrsLAN": list(rc.start_join),
                "UIConfig": {"Enabled": rc.ui},
                "EnableLocalScriptChecks": rc.enable_script_checks,
                "EnableRemoteScriptChecks": rc.enable_script_checks,
                "DNSPort": rc.dns_port,
                "GRPCPort": rc.grpc_port,
            },
            "Coord": {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
            "Member": member,
            "Stats": stats,
            "Meta": dict({"consul-network-segment": ""}, **rc.node_meta),
            "xDS": {"SupportedProxies": {"envoy": []}, "Port": -1},
        }
        return json_response(body, req)

    def h_agent_members(self, req: Request) -> Response:
        with self.lock:
            self.members[self.name] = self._self_member()
            if req.qbool("wan"):
                if not self.rc.server:
                    raise ApiError(500, "Must be a server to get WAN members")
                out = []
                for m in sorted(self.members.values(), key=lambda x: x["Name"]):
                    if self._is_server(m):
                        w = self.member_public(m)
                        w["Name"] = f"{m['Name']}.{self.rc.datacenter}"
                        w["Port"] = int(m["Tags"].get("wan_join_port", "8302"))
                        out.append(w)
                return json_response(out, req)
            out = [
                self.member_public(m)
                for m in sorted(self.members.values(), key=lambda x: x["Name"])
            ]
        return json_response(out, req)

    def h_agent_service_register(self, req: Request) -> Response:
        body = req.json()
        self.register_service(
            body, replace_checks=req.qbool("replace-existing-checks"), persist=True
        )
        return Response(200, b"", "text/plain; charset=utf-8")

    def h_agent_service_deregister(self, req: Request, id: str) -> Response:
        self.deregister_service(id)
        return Response(200, b"", "text/plain; charset=utf-8")

    def h_agent_service_maintenance(self, req: Request, id: str) -> Response:
        enable = self._parse_enable(req)
        self.set_service_maintenance(id, enable, req.q("reason"))
        return Response(200, b"", "text/plain; charset=utf-8")

    def h_agent_node_maintenance(self, req: Request) -> Response:
        self.set_node_maintenance(self._parse_enable(req), req.q("reason"))
        return Response(200, b"", "text/plain; charset=utf-8")

    @staticmethod
    def _parse_enable(req: Request) -> bool:
        if "enable" not in req.query:
            raise ApiError(400, "Missing value for enable")
        raw = req.q("enable")
        try:
            return _go_bool(raw)
        except ValueError:
            raise ApiError(400, f'Invalid value for enable: "{raw}"') from None

    def _agent_service_out(self, svc: dict) -> dict:
        out = {
            "ID": svc["ID"],
            "Service": svc["Service"],
            "Tags": list(svc["Tags"]),
            "Meta": dict(svc["Meta"]),
            "Port": svc["Port"],
            "Address": svc["Address"],
        }
        if svc.get("TaggedAddresses"):
            out["TaggedAddresses"] = copy.deepcopy(svc["TaggedAddresses"])
        out.update(
            {
                "Weights": dict(svc["Weights"]),
                "EnableTagOverride": svc["EnableTagOverride"],
                "Datacenter": self.rc.datacenter,
            }
        )
        return out

    def h_agent_services(self, req: Request) -> Response:
        with self.lock:
            out = {sid: self._agent_service_out(s) for sid, s in sorted(self.services.items())}
        return json_response(out, req)

    def h_agent_service(self, req: Request, id: str) -> Response:
        with self.lock:
            svc = self.services.get(id)
            if svc is None:
                raise ApiError(404, f"unknown service ID: {id}")
            out = self._agent_service_out(svc)
        out["ContentHash"] = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[
            :16
        ]
        return json_response(out, req, headers={"X-Consul-ContentHash": out["ContentHash"]})

    def h_agent_checks(self, req: Request) -> Response:
        with self.lock:
            out = {cid: self._check_json(c) for cid, c in sorted(self.checks.items())}
        return json_response(out, req)

    def h_agent_check_register(self, req: Request) -> Response:
        self.register_check(req.json(), persist=True)
        return Response(200, b"", "text/plain; charset=utf-8")

    def h_agent_check_deregister(self, req: Request, id: str) -> Response:
        self.deregister_check(id)
        return Response(200, b"", "text/plain; charset=utf-8")

    def h_agent_check_ttl(self, req: Request, op: str, id: str) -> Response:
        status = {"pass": PASSING, "warn": WARNING, "fail": CRITICAL}[op]
        note = req.q("note")
        self.update_ttl(id, status, note)
        return Response(200, b"", "text/plain; charset=utf-8")

    def h_agent_check_update(self, req: Request, id: str) -> Response:
        body = _canon_keys(req.json() or {}, {"status": "Status", "output": "Output"})
        status = body.get("Status", "")
        if status not in (PASSING, WARNING, CRITICAL):
            raise ApiError(400, f"Invalid check status: '{status}'")
        self.update_ttl(id, status, str(body.get("Output", "")))
        return Response(200, b"", "text/plain; charset=utf-8")

    def _aggregate(self, sid: str) -> tuple[str, list[dict]]:
        checks = [c for c in self.checks.values() if c.service_id in ("", sid)]
        checks.sort(key=lambda c: c.check_id)
        status = PASSING
        for c in checks:
            if c.kind == MAINT:
                status = MAINT
                break
            if c.status == CRITICAL:
                status = CRITICAL
            elif c.status == WARNING and status == PASSING:
                status = WARNING
        return status, [self._check_json(c) for c in checks]

    _HEALTH_CODES: ClassVar[dict[str, int]] = {
        PASSING: 200,
        WARNING: 429,
        CRITICAL: 503,
        MAINT: 503,
    }

    def h_agent_health_by_id(self, req: Request, id: str) -> Response:
        text = req.q("format") == "text"
        with self.lock:
            svc = self.services.get(id)
            if svc is None:
                return text_response(f"ServiceId {id} not found", 404)
            status, checks = self._aggregate(id)
            body = {
                "AggregatedStatus": status,
                "Service": self._agent_service_out(svc),
                "Checks": checks,
            }
        code = self._HEALTH_CODES[status]
        if text:
            return text_response(status, code)
        return json_response(body, req, code)

    def h_agent_health_by_name(self, req: Request, name: str) -> Response:
        text = req.q("format") == "text"
        with self.lock:
            matches = [s for s in self.services.values() if s["Service"] == name]
            if not matches:
                return text_response(f"ServiceName {name} Not Found", 404)
            entries = []
            worst = PASSING
            order = {PASSING: 0, WARNING: 1, CRITICAL: 2, MAINT: 3}
            for svc in sorted(matches, key=lambda s: s["ID"]):
                status, checks = self._aggregate(svc["ID"])
                if order[status] > order[worst]:
                    worst = status
                entries.append(
                    {
                        "AggregatedStatus": status,
                        "Service": self._agent_service_out(svc),
                        "Checks": checks,
                    }
                )
        code = self._HEALTH_CODES[worst]
        if text:
            return text_response(worst, code)
        return json_response(entries, req, code)

    def h_agent_leave(self, req: Request) -> Response:
        def _do_leave() -> None:
            time.sleep(0.1)  # let the HTTP response go out first
            self.leave()
            self.exit_code = 0
            self.stop_event.set()

        threading.Thread(target=_do_leave, daemon=True).start()
        return Response(200, b"", "text/plain; charset=utf-8")

    def h_agent_join(self, req: Request, addr: str) -> Response:
        if self.join([addr]) == 0:
            raise ApiError(
                500,
                _multierror(
                    [f"Failed to join {addr}: dial tcp {addr}: connect: connection refused"]
                ),
            )
        return Response(200, b"", "text/plain; charset=utf-8")

    def h_catalog_datacenters(self, req: Request) -> Response:
        return json_response([self.rc.datacenter], req)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

API_FLAGS = {
    "http-addr": "str",
    "token": "str",
    "token-file": "str",
    "ca-file": "str",
    "ca-path": "str",
    "client-cert": "str",
    "client-key": "str",
    "tls-server-name": "str",
    "datacenter": "str",
    "stale": "bool",
    "namespace": "str",
    "partition": "str",
}

COMMANDS = {
    "agent": "Runs a Consul agent",
    "catalog": "Interact with the catalog",
    "info": "Provides debugging information for operators.",
    "join": "Tell Consul agent to join cluster",
    "leave": "Gracefully leaves the Consul cluster and shuts down",
    "members": "Lists the members of a Consul cluster",
    "operator": "Provides cluster-level tools for Consul operators",
    "validate": "Validate config files/directories",
    "version": "Prints the Consul version",
}


def usage() -> str:
    lines = ["Usage: consul [--version] [--help] <command> [<args>]", "", "Available commands are:"]
    width = max(len(c) for c in COMMANDS)
    for name, text in COMMANDS.items():
        lines.append(f"    {name.ljust(width)}    {text}")
    lines.append("")
    lines.append("(This is a test-only Consul stand-in; only the commands above exist.)")
    return "\n".join(lines)


class ApiClientError(Exception):
    pass


def _api_base(flag_value: str | None) -> str:
    addr = flag_value or os.environ.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"
    if "://" not in addr:
        ssl_on = os.environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true")
        addr = ("https://" if ssl_on else "http://") + addr
    return addr.rstrip("/")


def api_call(base: str, method: str, path: str, query: dict | None = None) -> tuple[int, dict, Any]:
    """Call the HTTP API; raises ApiClientError with Go-client-like text."""
    url = base + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    req = urllib.request.Request(url, method=method, data=b"" if method == "PUT" else None)
    try:
        with _NO_PROXY_OPENER.open(req, timeout=30) as resp:
            body = resp.read()
            status = resp.status
            headers = dict(resp.headers)
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace")
        raise ApiClientError(f"Unexpected response code: {e.code} ({text})") from None
    except (urllib.error.URLError, OSError) as e:
        raise ApiClientError(_go_url_error(method, url, e)) from None
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = body.decode("utf-8", "replace")
    return status, headers, data


def columnize(rows: list[list[str]]) -> str:
    """Format rows like ryanuber/columnize with a two-space glue."""
    widths = [0] * max(len(r) for r in rows)
    for r in rows:
        for i, cell in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(cell))
    out = []
    for r in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(r[:-1])] + [r[-1]]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _parse_cli(
    args: list[str], spec: dict[str, str], help_text: str
) -> tuple[dict[str, Any], list[str]] | int:
    try:
        flags, rest = parse_go_flags(args, spec)
    except FlagError as e:
        if str(e) == "help":
            print(help_text)
            return 0
        print(str(e), file=sys.stderr)
        print(help_text, file=sys.stderr)
        return 1
    values: dict[str, Any] = {}
    for name, value in flags:
        if spec[name] == "list":
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values, rest


def cmd_version(args: list[str]) -> int:
    parsed = _parse_cli(args, {"format": "str"}, "Usage: consul version [options]")
    if isinstance(parsed, int):
        return parsed
    opts, _ = parsed
    if opts.get("format") == "json":
        print(
            json.dumps(
                {
                    "Version": VERSION,
                    "Revision": REVISION,
                    "Prerelease": "",
                    "RPC": {"Default": 2, "Min": 2, "Max": 3},
                },
                indent=2,
            )
        )
        return 0
    print(f"Consul v{VERSION}")
    print(f"Revision {REVISION}")
    print(
        "Protocol 2 spoken by default, understands 2 to 3 (agent will automatically use "
        "protocol >2 when speaking to compatible agents)"
    )
    return 0


def cmd_validate(args: list[str]) -> int:
    parsed = _parse_cli(
        args,
        {"quiet": "bool", "config-format": "str"},
        "Usage: consul validate [options] FILE_OR_DIRECTORY...",
    )
    if isinstance(parsed, int):
        return parsed
    opts, paths = parsed
    if not paths:
        print("Must specify at least one config file or directory", file=sys.stderr)
        return 1
    raw: dict = {}
    try:
        for path in paths:
            for _, frag in load_config_path(path):
                merge_config(raw, frag)
        build_runtime_config(raw, dev=False, require_data_dir=False)
    except ConfigError as e:
        print(f"Config validation failed: {e}", file=sys.stderr)
        return 1
    if not opts.get("quiet"):
        print("Configuration is valid!")
    return 0


def cmd_members(args: list[str]) -> int:
    spec = dict(
        API_FLAGS,
        **{"detailed": "bool", "status": "str", "wan": "bool", "segment": "str", "filter": "str"},
    )
    parsed = _parse_cli(args, spec, "Usage: consul members [options]")
    if isinstance(parsed, int):
        return parsed
    opts, _ = parsed
    status_re = opts.get("status", ".*")
    try:
        pattern = re.compile(status_re)
    except re.error as e:
        print(f"Failed to compile status regexp: {e}", file=sys.stderr)
        return 1
    try:
        _, _, members = api_call(
            _api_base(opts.get("http-addr")),
            "GET",
            "/v1/agent/members",
            {"wan": "1"} if opts.get("wan") else {"segment": "_all"},
        )
    except ApiClientError as e:
        print(f"Error retrieving members: {e}", file=sys.stderr)
        return 1
    rows = []
    for m in members or []:
        status = STATUS_NAMES.get(m.get("Status"), "unknown")
        if not pattern.search(status):
            continue
        rows.append((m, status))
    if not rows:
        return 2
    if opts.get("detailed"):
        table = [["Node", "Address", "Status", "Tags"]]
        for m, status in sorted(rows, key=lambda r: r[0]["Name"]):
            tags = ",".join(f"{k}={v}" for k, v in sorted(m.get("Tags", {}).items()))
            table.append([m["Name"], f"{m['Addr']}:{m['Port']}", status, tags])
        print(columnize(table))
        return 0
    table = [
        ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]
    ]
    entries = []
    for m, status in rows:
        tags = m.get("Tags", {})
        server = tags.get("role") == "consul"
        segment = "<all>" if server else (tags.get("segment") or "<default>")
        entries.append(
            (
                "default",
                segment,
                m["Name"],
                [
                    m["Name"],
                    f"{m['Addr']}:{m['Port']}",
                    status,
                    "server" if server else "client",
                    tags.get("build", "").split(":")[0],
                    tags.get("vsn", "2"),
                    tags.get("dc", ""),
                    "default",
                    segment,
                ],
            )
        )
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    table.extend(e[3] for e in entries)
    print(columnize(table))
    return 0


def cmd_operator(args: list[str]) -> int:
    if len(args) < 2 or args[0] != "raft" or args[1] != "list-peers":
        print(
            "Usage: consul operator raft list-peers [options]\n\n"
            "(the Consul stand-in implements only 'operator raft list-peers')",
            file=sys.stderr,
        )
        return 1
    parsed = _parse_cli(args[2:], API_FLAGS, "Usage: consul operator raft list-peers [options]")
    if isinstance(parsed, int):
        return parsed
    opts, _ = parsed
    query = {"stale": ""} if opts.get("stale") else None
    try:
        _, _, conf = api_call(
            _api_base(opts.get("http-addr")), "GET", "/v1/operator/raft/configuration", query
        )
    except ApiClientError as e:
        print(f"Error getting peers: Failed to retrieve raft configuration: {e}", file=sys.stderr)
        return 1
    table = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]]
    for s in conf.get("Servers", []):
        table.append(
            [
                s["Node"],
                s["ID"],
                s["Address"],
                "leader" if s.get("Leader") else "follower",
                str(bool(s.get("Voter"))).lower(),
                s.get("ProtocolVersion", "3"),
            ]
        )
    print(columnize(table))
    return 0


def cmd_leave(args: list[str]) -> int:
    parsed = _parse_cli(args, API_FLAGS, "Usage: consul leave [options]")
    if isinstance(parsed, int):
        return parsed
    opts, rest = parsed
    if rest:
        print(f"Error! Extra arguments: {rest}", file=sys.stderr)
        return 1
    try:
        api_call(_api_base(opts.get("http-addr")), "PUT", "/v1/agent/leave")
    except ApiClientError as e:
        print(f"Error leaving: {e}", file=sys.stderr)
        return 1
    print("Graceful leave complete")
    return 0


def cmd_join(args: list[str]) -> int:
    parsed = _parse_cli(
        args, dict(API_FLAGS, wan="bool"), "Usage: consul join [options] address ..."
    )
    if isinstance(parsed, int):
        return parsed
    opts, addrs = parsed
    if not addrs:
        print("At least one address to join must be specified.", file=sys.stderr)
        return 1
    base = _api_base(opts.get("http-addr"))
    joined = 0
    for addr in addrs:
        try:
            api_call(base, "PUT", "/v1/agent/join/" + urllib.parse.quote(addr, safe=":[]"))
            joined += 1
        except ApiClientError as e:
            print(f"Error joining address '{addr}': {e}", file=sys.stderr)
    if not joined:
        print("Failed to join any nodes.", file=sys.stderr)
        return 1
    print(f"Successfully joined cluster by contacting {joined} nodes.")
    return 0


def cmd_catalog(args: list[str]) -> int:
    if not args or args[0] not in ("services", "nodes", "datacenters"):
        print("Usage: consul catalog <services|nodes|datacenters> [options]", file=sys.stderr)
        return 1
    parsed = _parse_cli(
        args[1:], dict(API_FLAGS, tags="bool", detailed="bool"), f"Usage: consul catalog {args[0]}"
    )
    if isinstance(parsed, int):
        return parsed
    opts, _ = parsed
    base = _api_base(opts.get("http-addr"))
    try:
        if args[0] == "datacenters":
            _, _, dcs = api_call(base, "GET", "/v1/catalog/datacenters")
            print("\n".join(dcs))
        elif args[0] == "services":
            _, _, services = api_call(base, "GET", "/v1/catalog/services")
            if opts.get("tags"):
                print(
                    columnize(
                        [[name, ",".join(sorted(tags))] for name, tags in sorted(services.items())]
                    )
                )
            else:
                print("\n".join(sorted(services)))
        else:
            _, _, nodes = api_call(base, "GET", "/v1/catalog/nodes")
            table = [["Node", "ID", "Address", "DC"]]
            for n in nodes:
                table.append([n["Node"], n["ID"][:8], n["Address"], n["Datacenter"]])
            print(columnize(table))
    except ApiClientError as e:
        print(f"Error listing {args[0]}: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_info(args: list[str]) -> int:
    parsed = _parse_cli(args, API_FLAGS, "Usage: consul info [options]")
    if isinstance(parsed, int):
        return parsed
    opts, _ = parsed
    try:
        _, _, self_info = api_call(_api_base(opts.get("http-addr")), "GET", "/v1/agent/self")
    except ApiClientError as e:
        print(f"Error querying agent: {e}", file=sys.stderr)
        return 1
    for section in sorted(self_info.get("Stats", {})):
        print(f"{section}:")
        for key, value in sorted(self_info["Stats"][section].items()):
            print(f"\t{key} = {value}")
    return 0


def _print_banner(rc: RuntimeConfig, node_id: str) -> None:
    clients = " ".join(rc.client_addrs)
    lines = [
        "==> Starting Consul agent...",
        f"           Version: '{VERSION}'",
        f"           Node ID: '{node_id}'",
        f"         Node name: '{rc.node_name}'",
        f"        Datacenter: '{rc.datacenter}' (Segment: '{'<all>' if rc.server else ''}')",
        f"            Server: {str(rc.server).lower()} (Bootstrap: {str(rc.bootstrap).lower()})",
        f"       Client Addr: [{clients}] (HTTP: {rc.http_port}, HTTPS: -1, "
        f"gRPC: {rc.grpc_port}, DNS: {rc.dns_port})",
        f"      Cluster Addr: {rc.advertise_addr} "
        f"(LAN: {rc.serf_lan_port}, WAN: {rc.serf_wan_port})",
        "           Encrypt: Gossip: false, TLS-Outgoing: false, TLS-Incoming: false, "
        "Auto-Encrypt-TLS: false",
        "",
        "==> NOTE: this is a test-only Consul stand-in, not HashiCorp Consul",
        "==> Log data will now stream in as it occurs:",
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def cmd_agent(args: list[str]) -> int:
    try:
        rc, _raw = agent_config_from_args(args)
    except FlagError as e:
        if str(e) == "help":
            print(
                "Usage: consul agent [options]\n\n"
                "  Starts the Consul agent and runs until an interrupt is received."
            )
            return 0
        print(f"==> {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        msg = str(e)
        if "invalid config key" in msg or msg.startswith("failed to parse"):
            msg = f"Config validation failed: {msg}"
        print(f"==> {msg}", file=sys.stderr)
        return 1
    log = Logger(rc.log_level)
    if rc.data_dir and not rc.dev:
        try:
            os.makedirs(rc.data_dir, exist_ok=True)
        except OSError as e:
            print(f"==> Error creating data_dir {rc.data_dir!r}: {e.strerror}", file=sys.stderr)
            return 1
    for warning in rc.warnings:
        print(f"==> {warning}")
    agent = Agent(rc, log)
    signals: list[int] = []

    def _on_signal(signum: int, _frame: Any) -> None:
        signals.append(signum)
        if len(signals) > 1:
            os._exit(1)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(
            signal.SIGHUP,
            lambda *_: log.info(
                "agent", "Caught signal: hangup (reload is a no-op in the stand-in)"
            ),
        )
    _print_banner(rc, agent.node_id)
    try:
        agent.start()
    except OSError as e:
        print(f"==> Error starting agent: {e.strerror or e}", file=sys.stderr)
        agent.shutdown()
        return 1
    if rc.pid_file:
        try:
            with open(rc.pid_file, "w", encoding="utf-8") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
    log.info(
        "agent",
        "Started HTTP server",
        address=",".join(f"{a}:{rc.http_port}" for a in rc.client_addrs),
        network="tcp",
    )
    log.info("agent", "started state syncer")
    log.info("agent", "Consul agent running!")
    while not agent.stop_event.wait(0.5):
        pass
    code = agent.exit_code
    if signals:
        sig = signals[0]
        name = "terminated" if sig == signal.SIGTERM else "interrupt"
        log.info("agent", f"Caught signal: {name}")
        graceful = (
            rc.leave_on_terminate if sig == signal.SIGTERM else not rc.skip_leave_on_interrupt
        )
        if graceful:
            agent.leave()
            code = 0
        else:
            code = 1
    log.info("agent", "Requesting shutdown")
    agent.shutdown()
    log.info("agent", "shutdown complete")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_standin_iface_addr(args: list[str]) -> int:
    """Hidden helper for docker-entrypoint.sh: print an interface's IPv4."""
    if len(args) != 1:
        return 1
    ip = _interface_ipv4(args[0])
    if not ip:
        return 1
    print(ip)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 127
    if argv[0] in ("-v", "--version", "-version"):
        return cmd_version([])
    if argv[0] in ("-h", "--help", "-help", "help"):
        print(usage(), file=sys.stderr)
        return 0
    handlers: dict[str, Callable[[list[str]], int]] = {
        "agent": cmd_agent,
        "version": cmd_version,
        "validate": cmd_validate,
        "members": cmd_members,
        "operator": cmd_operator,
        "leave": cmd_leave,
        "join": cmd_join,
        "catalog": cmd_catalog,
        "info": cmd_info,
        "standin-iface-addr": cmd_standin_iface_addr,
    }
    handler = handlers.get(argv[0])
    if handler is None:
        print(usage(), file=sys.stderr)
        return 127
    return handler(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
