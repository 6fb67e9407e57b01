"""Agent configuration: JSON config files, command-line flags, validation.

Keys, merge rules, defaults and messages follow Consul 1.11's agent/config
(builder.go, default.go). HCL config files are not supported.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from .definitions import normalize_service_definition
from .flags import parse_go_flags
from .util import (
    ApiError,
    ConfigError,
    default_private_ip,
    interface_ipv4,
    multierror,
    normalize_log_level,
    parse_duration,
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Every top-level key Consul 1.11 accepts. Keys without an effect in the
# stand-in are accepted and ignored; anything else is an error.
KNOWN_CONFIG_KEYS = _words(
    "acl addresses advertise_addr advertise_addr_ipv4 advertise_addr_ipv6 "
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
# Consul 1.11 still reads the pre-1.4 top-level ACL keys; the stand-in does not,
# and says so instead of silently ignoring a setting that matters.
LEGACY_ACL_KEYS = _words(
    "acl_agent_master_token acl_agent_token acl_datacenter acl_default_policy "
    "acl_down_policy acl_enable_key_list_policy acl_master_token acl_replication_token "
    "acl_token acl_ttl"
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
    "acl": _words(
        "enabled default_policy down_policy enable_token_persistence enable_token_replication "
        "enable_key_list_policy policy_ttl role_ttl token_ttl msp_disable_bootstrap tokens"
    ),
    "acl.tokens": _words(
        "initial_management master agent agent_recovery agent_master default replication "
        "managed_service_provider"
    ),
    "gossip_lan": _words(
        "gossip_interval gossip_nodes probe_interval probe_timeout retransmit_mult suspicion_mult"
    ),
    "performance": _words("leave_drain_time raft_multiplier rpc_hold_timeout"),
}
_BOOL_KEYS = _words(
    "server bootstrap ui leave_on_terminate rejoin_after_leave enable_script_checks "
    "enable_local_script_checks disable_update_check skip_leave_on_interrupt "
    "disable_host_node_id disable_keyring_file log_json enable_syslog non_voting_server "
    "disable_remote_exec enable_debug encrypt_verify_incoming encrypt_verify_outgoing "
    "acl.enabled acl.enable_token_persistence"
)
_INT_KEYS = _words(
    "bootstrap_expect retry_max raft_protocol protocol log_rotate_bytes log_rotate_max_files "
    "gossip_lan.gossip_nodes gossip_lan.retransmit_mult gossip_lan.suspicion_mult "
    "performance.raft_multiplier"
)
_STR_KEYS = _words(
    "node_name node_id bind_addr advertise_addr advertise_addr_wan client_addr datacenter "
    "data_dir log_level retry_interval domain encrypt primary_datacenter log_file pid_file "
    "segment alt_domain check_update_interval acl.default_policy acl.down_policy "
    "acl.token_ttl acl.policy_ttl acl.role_ttl gossip_lan.gossip_interval "
    "gossip_lan.probe_interval gossip_lan.probe_timeout performance.rpc_hold_timeout "
    "performance.leave_drain_time"
)
_LIST_KEYS = _words("retry_join start_join retry_join_wan start_join_wan recursors services checks")
_MAP_KEYS = _words("ports ui_config node_meta addresses acl acl.tokens gossip_lan performance")

_GO_TYPE_NAMES = {
    bool: "bool",
    int: "int",
    float: "float64",
    str: "string",
    list: "slice",
    dict: "map",
    type(None): "nil",
}

_NO_HCL = "HCL configuration is not supported by the Consul stand-in"
_DEPLOYMENT_TABLE = "https://www.consul.io/docs/internals/consensus.html#deployment-table"
_TEMPLATE_RE = re.compile(r"^\{\{\s*(.*?)\s*\}\}$")
# agent/config: the deprecated 1.11 names of acl.tokens keys, and their new names.
_DEPRECATED_TOKENS = {"master": "initial_management", "agent_master": "agent_recovery"}


def _type_error(key: str, want: str, value: Any) -> str:
    got = _GO_TYPE_NAMES.get(type(value), type(value).__name__)
    return f"'{key}' expected type '{want}', got unconvertible type '{got}', value: '{value}'"


def _check_value(key: str, value: Any, unknown: list[str], type_errors: list[str]) -> None:
    if key in _BOOL_KEYS and not isinstance(value, bool):
        type_errors.append(_type_error(key, "bool", value))
    elif key in _INT_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
        type_errors.append(_type_error(key, "int", value))
    elif key in _STR_KEYS and not isinstance(value, str):
        type_errors.append(_type_error(key, "string", value))
    elif key in _LIST_KEYS and not isinstance(value, list):
        want = "slice" if key in ("services", "checks") else "[]string"
        type_errors.append(_type_error(key, want, value))
    elif key in _MAP_KEYS and not isinstance(value, dict):
        type_errors.append(_type_error(key, "map", value))
    elif key == "ports" and isinstance(value, dict):
        for sub, port in value.items():
            if isinstance(port, bool) or not isinstance(port, int):
                type_errors.append(_type_error(f"ports.{sub}", "int", port))
    if key in KNOWN_SUBKEYS and isinstance(value, dict):
        for sub, subvalue in value.items():
            if sub not in KNOWN_SUBKEYS[key]:
                unknown.append(f"invalid config key {key}.{sub}")
            elif key != "ports":
                _check_value(f"{key}.{sub}", subvalue, unknown, type_errors)


def check_config_fragment(data: Any, source: str) -> dict:
    """Check one parsed config file: unknown keys and basic types."""
    if not isinstance(data, dict):
        raise ConfigError(f"failed to parse {source}: top-level value must be a JSON object")
    unknown: list[str] = []
    type_errors: list[str] = []
    for key, value in data.items():
        if key in LEGACY_ACL_KEYS:
            raise ConfigError(
                f"failed to parse {source}: {key} (a pre-1.4 ACL setting) is not supported "
                "by the Consul stand-in; use the acl stanza (acl.enabled, acl.tokens, ...)"
            )
        if key not in KNOWN_CONFIG_KEYS:
            unknown.append(f"invalid config key {key}")
            continue
        _check_value(key, value, unknown, type_errors)
    if unknown:
        raise ConfigError(f"failed to parse {source}: {multierror(unknown)}")
    if type_errors:
        word = "error" if len(type_errors) == 1 else "errors"
        raise ConfigError(
            f"failed to parse {source}: {len(type_errors)} {word}(s) decoding:\n\n"
            + "\n".join(f"* {e}" for e in type_errors)
        )
    return data


def merge_config(dst: dict, src: dict) -> None:
    """Merge like Consul: lists append, maps merge (recursively), scalars override."""
    for key, value in src.items():
        if key == "service":
            dst.setdefault("services", []).append(value)
        elif key == "check":
            dst.setdefault("checks", []).append(value)
        elif key in _LIST_KEYS and isinstance(value, list):
            dst.setdefault(key, []).extend(value)
        elif isinstance(value, dict) and isinstance(dst.get(key), dict):
            merged = dict(dst[key])
            merge_config(merged, value)
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
        raise ConfigError(f"failed to parse {path}: {_NO_HCL}")
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


def _expand_ip(name: str, value: str) -> str:
    """Resolve an address setting; supports a small go-sockaddr subset."""
    value = value.strip()
    m = _TEMPLATE_RE.match(value)
    if m:
        expr = m.group(1)
        im = re.match(r'^GetInterfaceIP\s+"([^"]+)"$', expr)
        if im:
            ip = interface_ipv4(im.group(1))
            if not ip:
                raise ConfigError(f"{name}: No address found in {value}")
            return ip
        if expr in ("GetPrivateIP", "GetPublicIP"):
            return default_private_ip()
        raise ConfigError(
            f"{name}: unsupported go-sockaddr template in the Consul stand-in: {value}"
        )
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name}: invalid ip address: {value}") from None
    return value


def _go_base64_error(text: str) -> str | None:
    """The error Go's base64.StdEncoding.DecodeString gives `text`, or None."""
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    for i, ch in enumerate(text):
        if ch == "=":
            # Padding: only in the last quantum, at most two, then nothing else.
            quantum = i - i % 4
            tail = text[i:]
            if set(tail) != {"="} or len(text) % 4 or len(tail) > 2 or i % 4 < 2:
                return f"illegal base64 data at input byte {quantum if i % 4 < 2 else i}"
            break
        if ch not in alphabet:
            return f"illegal base64 data at input byte {i}"
    if len(text) % 4:
        return f"illegal base64 data at input byte {len(text) - len(text) % 4}"
    try:
        base64.b64decode(text, validate=True)
    except binascii.Error:
        return "illegal base64 data at input byte 0"
    return None


@dataclass
class GossipConfig:
    """memberlist timing for the LAN pool (Consul's gossip_lan, memberlist.DefaultLANConfig)."""

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    indirect_checks: int = 3
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead: float = 30.0
    push_pull_interval: float = 30.0
    tcp_timeout: float = 10.0
    reconnect_interval: float = 30.0  # Serf's ReconnectInterval (Consul keeps the default)


@dataclass
class ACLConfig:
    enabled: bool = False
    default_policy: str = "allow"
    down_policy: str = "extend-cache"
    enable_token_persistence: bool = False
    token_ttl: float = 30.0
    initial_management: str = ""
    agent: str = ""
    default: str = ""
    agent_recovery: str = ""
    replication: str = ""


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
    retry_interval: float = 30.0  # default.go retry_interval = "30s"
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
    check_update_interval: float = 300.0  # default.go check_update_interval = "5m"
    gossip: GossipConfig = field(default_factory=GossipConfig)
    raft_multiplier: int = 5  # consul.DefaultRaftMultiplier
    rpc_hold_timeout: float = 7.0  # performance.rpc_hold_timeout
    leave_drain_time: float = 5.0  # performance.leave_drain_time
    encrypt: str = ""
    encrypt_verify_incoming: bool = True
    encrypt_verify_outgoing: bool = True
    disable_keyring_file: bool = False
    acl: ACLConfig = field(default_factory=ACLConfig)
    warnings: list[str] = field(default_factory=list)


def _duration(raw: dict, key: str, default: float) -> float:
    if key not in raw:
        return default
    try:
        return parse_duration(raw[key])
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None


def _acl_config(raw: dict, rc: RuntimeConfig) -> ACLConfig:
    acl = raw.get("acl") or {}
    tokens = dict(acl.get("tokens") or {})
    for old, new in _DEPRECATED_TOKENS.items():
        if old in tokens:
            rc.warnings.append(
                f"The 'acl.tokens.{old}' field is deprecated. "
                f"Use the 'acl.tokens.{new}' field instead."
            )
            tokens.setdefault(new, tokens[old])
    out = ACLConfig(
        enabled=bool(acl.get("enabled", False)),
        default_policy=str(acl.get("default_policy", "allow")),
        down_policy=str(acl.get("down_policy", "extend-cache")),
        enable_token_persistence=bool(acl.get("enable_token_persistence", False)),
        token_ttl=_duration(acl, "token_ttl", 30.0),
        initial_management=str(tokens.get("initial_management", "")),
        agent=str(tokens.get("agent", "")),
        default=str(tokens.get("default", "")),
        agent_recovery=str(tokens.get("agent_recovery", "")),
        replication=str(tokens.get("replication", "")),
    )
    if out.default_policy not in ("allow", "deny"):
        raise ConfigError(
            f'invalid value for acl.default_policy: "{out.default_policy}"; '
            'must be "allow" or "deny"'
        )
    if out.down_policy not in ("allow", "deny", "extend-cache", "async-cache"):
        raise ConfigError(
            f'invalid value for acl.down_policy: "{out.down_policy}"; must be one of '
            '"allow", "deny", "extend-cache" or "async-cache"'
        )
    return out


def _gossip_config(raw: dict) -> GossipConfig:
    g = raw.get("gossip_lan") or {}
    out = GossipConfig()
    out.probe_interval = _duration(g, "probe_interval", out.probe_interval)
    out.probe_timeout = _duration(g, "probe_timeout", out.probe_timeout)
    out.gossip_interval = _duration(g, "gossip_interval", out.gossip_interval)
    out.suspicion_mult = int(g.get("suspicion_mult", out.suspicion_mult))
    out.retransmit_mult = int(g.get("retransmit_mult", out.retransmit_mult))
    out.gossip_nodes = int(g.get("gossip_nodes", out.gossip_nodes))
    return out


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
    rc.log_level = normalize_log_level(str(raw.get("log_level", "DEBUG" if dev else "INFO")))
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
    rc.retry_interval = _duration(raw, "retry_interval", rc.retry_interval)
    rc.check_update_interval = _duration(raw, "check_update_interval", rc.check_update_interval)
    rc.gossip = _gossip_config(raw)
    perf = raw.get("performance") or {}
    # default.go DevSource: raft_multiplier = 1 and faster gossip in -dev mode.
    rc.raft_multiplier = int(perf.get("raft_multiplier", 1 if dev else 5))
    rc.rpc_hold_timeout = _duration(perf, "rpc_hold_timeout", rc.rpc_hold_timeout)
    rc.leave_drain_time = _duration(perf, "leave_drain_time", rc.leave_drain_time)
    if dev and "gossip_lan" not in raw:
        rc.gossip.probe_interval = rc.gossip.probe_timeout = rc.gossip.gossip_interval = 0.1
        rc.gossip.suspicion_mult = 3
    rc.encrypt = str(raw.get("encrypt", ""))
    rc.encrypt_verify_incoming = bool(raw.get("encrypt_verify_incoming", True))
    rc.encrypt_verify_outgoing = bool(raw.get("encrypt_verify_outgoing", True))
    rc.disable_keyring_file = bool(raw.get("disable_keyring_file", dev))
    rc.acl = _acl_config(raw, rc)

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
        rc.advertise_addr = default_private_ip()
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
    if not 1 <= rc.raft_multiplier <= 10:
        raise ConfigError(
            f"performance.raft_multiplier cannot be {rc.raft_multiplier}. Must be between 1 and 10"
        )
    if rc.encrypt:
        problem = _go_base64_error(rc.encrypt)
        if problem:
            raise ConfigError(f"encrypt has invalid key: {problem}")
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
            f"See {_DEPLOYMENT_TABLE}"
        )
    elif rc.bootstrap_expect > 2 and rc.bootstrap_expect % 2 == 0:
        rc.warnings.append(
            "bootstrap_expect is even number: A cluster with an even number of servers does not "
            f"achieve optimum fault tolerance. See {_DEPLOYMENT_TABLE}"
        )
    if rc.bootstrap and not dev:
        rc.warnings.append("bootstrap = true: do not enable unless necessary")
    return rc


# Agent flags: name -> (kind, config key or None). "ports.x" sets a port.
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


def agent_config_from_args(args: list[str]) -> RuntimeConfig:
    """Parse `consul agent` arguments into a RuntimeConfig."""
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
    return build_runtime_config(raw, dev)


def load_paths(paths: list[str]) -> dict:
    """Merge the config files/directories `consul validate` is given."""
    raw: dict = {}
    for path in paths:
        for _, frag in load_config_path(path):
            merge_config(raw, frag)
    return raw
