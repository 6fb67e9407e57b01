"""Service and check definitions: decoding and validation as Consul's agent endpoint does.

Consul decodes bodies case-insensitively and accepts snake_case keys (the
seed's lower-case `check` works). Validation order and messages follow
agent/agent_endpoint.go AgentRegisterService and agent/structs (1.11).
"""

from __future__ import annotations

import ipaddress
import re

from .util import CRITICAL, PASSING, WARNING, ApiError, parse_duration

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
    "Token",
]

# agent/structs/structs.go: metaKeyFormat, metaMaxKeyPairs, metaKeyMaxLength,
# metaValueMaxLength, metaKeyReservedPrefix.
_META_KEY_FORMAT = re.compile(r"^[a-zA-Z0-9_-]+$")
META_MAX_PAIRS = 64
META_KEY_MAX = 128
META_VALUE_MAX = 512
META_RESERVED_PREFIX = "consul-"


def _canon_map(fields: list[str]) -> dict[str, str]:
    return {f.lower().replace("_", ""): f for f in fields}


_SERVICE_CANON = _canon_map(_SERVICE_FIELDS)
_CHECK_CANON = _canon_map(_CHECK_FIELDS)


def canon_keys(obj: dict, canon: dict[str, str]) -> dict:
    """Map `obj`'s keys onto Consul's field names, case- and underscore-insensitively."""
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


def validate_meta(meta: dict[str, str]) -> str | None:
    """structs.ValidateServiceMetadata's error text, or None when `meta` is valid."""
    if len(meta) > META_MAX_PAIRS:
        # Consul's text says "Node metadata" for services too.
        return f"Node metadata cannot contain more than {META_MAX_PAIRS} key/value pairs"
    for key in sorted(meta):
        value = meta[key]
        problem = None
        if key == "":
            problem = "Key cannot be blank"
        elif not _META_KEY_FORMAT.match(key):
            problem = "Key contains invalid characters"
        elif len(key) > META_KEY_MAX:
            problem = f"Key is too long (limit: {META_KEY_MAX} characters)"
        elif key.startswith(META_RESERVED_PREFIX):
            problem = f"Key prefix '{META_RESERVED_PREFIX}' is reserved for internal use"
        elif len(value.encode()) > META_VALUE_MAX:  # Go's len() counts bytes
            problem = f"Value is too long (limit: {META_VALUE_MAX} characters)"
        if problem:
            return f"Couldn't load metadata pair ('{key}', '{value}'): {problem}"
    return None


def normalize_check_definition(raw: dict) -> dict:
    """Canonicalise a check definition and validate it like structs.CheckType.Validate."""
    if not isinstance(raw, dict):
        raise ApiError(400, "Request decode failed: check definition must be an object")
    chk = canon_keys(raw, _CHECK_CANON)
    if "ID" in chk and "CheckID" not in chk:
        chk["CheckID"] = chk.pop("ID")
    chk.pop("ID", None)
    if "ScriptArgs" in chk and "Args" not in chk:
        chk["Args"] = chk.pop("ScriptArgs")
    for key in ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter"):
        _dur_field(chk, key)
    interval = _dur_field(chk, "Interval") or 0
    ttl = _dur_field(chk, "TTL") or 0
    interval_check = any(
        chk.get(k) for k in ("Args", "HTTP", "TCP", "GRPC", "H2PING", "UDP", "DockerContainerID")
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
    status = chk.get("Status", "")
    if status and status not in (PASSING, WARNING, CRITICAL):
        raise ApiError(400, "Status for checks must 'passing', 'warning', 'critical'")
    if "Header" in chk and chk["Header"] is not None and not isinstance(chk["Header"], dict):
        raise ApiError(
            400, "Request decode failed: Header must be a map of string to list of strings"
        )
    return chk


def check_kind(chk: dict) -> str:
    for key, kind in (
        ("HTTP", "http"),
        ("TCP", "tcp"),
        ("UDP", "udp"),
        ("GRPC", "grpc"),
        ("H2PING", "h2ping"),
        ("DockerContainerID", "docker"),
        ("Args", "script"),
        ("AliasService", "alias"),
        ("AliasNode", "alias"),
    ):
        if chk.get(key):
            return kind
    return "ttl"


def _is_any(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def normalize_service_definition(raw: dict) -> dict:
    """Canonicalise and validate a service registration body (Consul's order)."""
    if not isinstance(raw, dict):
        raise ApiError(400, "Request decode failed: service definition must be an object")
    svc = canon_keys(raw, _SERVICE_CANON)
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
    if _is_any(str(svc.get("Address") or "")):
        raise ApiError(400, "Invalid service address")
    tags = svc.get("Tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ApiError(400, "Request decode failed: Tags must be a list of strings")
    meta = svc.get("Meta") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ApiError(400, "Request decode failed: Meta must be a map of strings")
    if svc.get("Weights") is None:  # agent.AddService's default
        svc["Weights"] = {"Passing": 1, "Warning": 1}
    else:  # given: a missing field is Go's zero value
        weights = canon_keys(svc["Weights"], {"passing": "Passing", "warning": "Warning"})
        svc["Weights"] = {
            "Passing": int(weights.get("Passing", 0)),
            "Warning": int(weights.get("Warning", 0)),
        }
    if svc["Weights"]["Passing"] < 1:
        raise ApiError(400, "Invalid Weights: Passing must be greater than 0")
    if svc["Weights"]["Warning"] < 0:
        raise ApiError(400, "Invalid Weights: Warning must be greater or equal than 0")
    problem = validate_meta(meta)
    if problem:
        raise ApiError(400, f"Invalid Service Meta: {problem}")
    checks: list[dict] = []
    if svc.get("Check"):
        checks.append(normalize_check_definition(svc["Check"]))
    for c in svc.get("Checks") or []:
        if c:
            checks.append(normalize_check_definition(c))
    svc["Check"] = None
    svc["Checks"] = checks
    svc["Tags"] = list(tags)
    svc["Meta"] = dict(meta)
    if not svc.get("ID"):
        svc["ID"] = name
    return svc
