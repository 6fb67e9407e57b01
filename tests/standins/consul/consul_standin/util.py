"""Helpers every part of the stand-in uses: Go-style durations, errors, logging."""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import re
import socket
import struct
import sys
import threading
import urllib.parse
from typing import Any, ClassVar

VERSION = os.environ.get("CONSUL_STANDIN_VERSION", "1.11.3")
REVISION = "standin"

PASSING, WARNING, CRITICAL, MAINT = "passing", "warning", "critical", "maintenance"


class ConfigError(Exception):
    """A configuration problem, reported the way Consul reports it."""


class ApiError(Exception):
    """An HTTP API error: status code plus a plain-text body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RPCError(Exception):
    """An error a Consul RPC returned; its text is what Consul's error says."""


PERMISSION_DENIED = "Permission denied"  # acl/errors.go errPermissionDenied
ACL_NOT_FOUND = "ACL not found"  # acl/errors.go errNotFound
NO_LEADER = "No cluster leader"  # structs.ErrNoLeader
NO_SERVERS = "No known Consul servers"  # structs.ErrNoServers


def rpc_error_status(message: str) -> int:
    """The HTTP status Consul's http.go gives an RPC error (by its text)."""
    if PERMISSION_DENIED in message or ACL_NOT_FOUND in message:
        return 403
    return 500


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
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f'time: invalid duration "{value}"')
    if isinstance(value, (int, float)):
        return float(value) / 1e9
    orig, s, sign = value, value, 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{orig}"')
    total, pos = 0.0, 0
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


def random_stagger(seconds: float) -> float:
    """lib.RandomStagger: a random duration in [0, seconds)."""
    return random.uniform(0.0, seconds) if seconds > 0 else 0.0


def random_timeout(seconds: float) -> float:
    """hashicorp/raft randomTimeout: between seconds and twice that."""
    return seconds + random.uniform(0.0, seconds)


def go_bool(text: str) -> bool:
    """strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(text)


def json_dumps(obj: Any, pretty: bool = False) -> bytes:
    if pretty:
        return (json.dumps(obj, indent=4) + "\n").encode()
    return json.dumps(obj, separators=(",", ":")).encode()


def multierror(errors: list[str]) -> str:
    """hashicorp/go-multierror's text."""
    word = "error" if len(errors) == 1 else "errors"
    return f"{len(errors)} {word} occurred:\n" + "".join(f"\t* {e}\n" for e in errors) + "\n"


def interface_ipv4(name: str) -> str | None:
    """IPv4 address of a network interface (Linux SIOCGIFADDR)."""
    try:
        import fcntl

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
        return socket.inet_ntoa(packed[20:24])
    except (OSError, ImportError):
        return None


def default_private_ip() -> str:
    """The address Consul would advertise when bound to 0.0.0.0."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent for a UDP connect
            ip = s.getsockname()[0]
            if ip and not ip.startswith("127."):
                return ip
    except OSError:
        pass
    try:
        return socket.gethostbyname(socket.gethostname()) or "127.0.0.1"
    except OSError:
        return "127.0.0.1"


def go_url_error(method: str, url: str, err: BaseException) -> str:
    """The text of a Go net/http client error for `err`."""
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


class Logger:
    """hclog-like lines on stdout, like Consul's."""

    LEVELS: ClassVar[dict[str, int]] = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4}

    def __init__(self, level: str = "INFO") -> None:
        self.level = self.LEVELS.get(level, 2)
        self._lock = threading.Lock()

    def log(self, level: str, name: str, msg: str, **kv: Any) -> None:
        if self.LEVELS[level] < self.level:
            return
        ts = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        # hclog: "msg: key=value key=value".
        extra = ": " + " ".join(f"{k}={v}" for k, v in kv.items()) if kv else ""
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


def normalize_log_level(value: str) -> str:
    v = value.strip().upper()
    v = {"ERR": "ERROR", "WARNING": "WARN"}.get(v, v)
    if v not in Logger.LEVELS:
        raise ConfigError(
            f'Invalid log level: "{value}". Valid log levels are: [TRACE DEBUG INFO WARN ERR]'
        )
    return v
