"""Helpers for the Consul stand-in's tests: agent processes on loopback, HTTP calls, waits.

Agents bind 127.0.0.x addresses (all of 127.0.0.0/8 is loopback on Linux, the
only platform the lab supports) on free ports; every wait polls against a
deadline; every process started is killed by its fixture.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

STANDIN_DIR = Path(__file__).resolve().parents[1] / "standins" / "consul"
CONSUL = STANDIN_DIR / "consul"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Real Consul knobs that make a test cluster elect and answer sooner; the
# timing each stand-in test pins is measured with Consul's defaults instead.
FAST_RAFT = {"performance": {"raft_multiplier": 1, "rpc_hold_timeout": "2s"}}


def free_port(hosts: list[str]) -> int:
    """A TCP port that is currently free on every one of `hosts`."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        ok = True
        for host in hosts:
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no free port")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy or time runs out."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError, urllib.error.URLError) as e:
            last_error = e
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def call(
    method: str, url: str, body: Any = None, timeout: float = 15.0, token: str = ""
) -> tuple[int, dict, bytes]:
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"X-Consul-Token": token} if token else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str, token: str = "") -> Any:
    status, _, body = call("GET", url, token=token)
    assert status == 200, f"GET {url} -> {status}: {body!r}"
    return json.loads(body)


def json_if_ok(url: str, token: str = "") -> Any:
    """The JSON answer of a GET, or None when it is not a 200 (for waits)."""
    status, _, body = call("GET", url, token=token)
    return json.loads(body) if status == 200 else None


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 30
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CONSUL), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


class AgentProc:
    """One stand-in agent process, configured by flags plus an optional JSON config."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        ip: str,
        http_port: int,
        serf_port: int,
        config: dict | None = None,
    ) -> None:
        self.name = name
        self.ip = ip
        self.http_port = http_port
        self.serf_port = serf_port
        self.config = config or {}
        self.dir = workdir / name
        self.data_dir = self.dir / "data"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://{self.ip}:{self.http_port}"

    @property
    def http_addr(self) -> str:
        return f"{self.ip}:{self.http_port}"

    @property
    def serf_addr(self) -> str:
        return f"{self.ip}:{self.serf_port}"

    def start(self, *extra: str, wait: bool = True) -> AgentProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.dir / "config.json"
        config_file.write_text(json.dumps(self.config))
        args = [
            sys.executable,
            str(CONSUL),
            "agent",
            "-node",
            self.name,
            "-bind",
            self.ip,
            "-client",
            self.ip,
            f"-http-port={self.http_port}",
            f"-serf-lan-port={self.serf_port}",
            "-data-dir",
            str(self.data_dir),
            "-retry-interval=500ms",
            f"-config-file={config_file}",
            *extra,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            wait_for(self._http_up, 15, f"{self.name} HTTP API")
        return self

    def _http_up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited early:\n{self.log()}")
        status, _, _ = call(
            "GET",
            self.base + "/v1/agent/self",
            timeout=1,
            token=self.config.get("acl", {}).get("tokens", {}).get("initial_management", ""),
        )
        return status in (200, 403)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def leader(self) -> str:
        return get_json(self.base + "/v1/status/leader")


class HealthServer:
    """A tiny HTTP server answering /health with 200 (or `code`) and body `body`."""

    def __init__(self, code: int = 200, body: bytes = b"ok") -> None:
        self.code = code
        self.body = body
        self.stopped = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(owner.code)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/health"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        ).start()

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()


def health_statuses(entries: list[dict]) -> dict[str, str]:
    return {c["CheckID"]: c["Status"] for e in entries for c in e["Checks"]}


def members_table(agent: AgentProc, *extra: str) -> list[list[str]]:
    out = run_cli("members", f"-http-addr={agent.http_addr}", *extra)
    assert out.returncode == 0, out.stderr
    return [line.split() for line in out.stdout.splitlines()]


# The package the image installs, importable for in-process tests of its parts.
sys.path.insert(0, str(STANDIN_DIR))
from consul_standin import (  # noqa: E402
    acl,
    anti_entropy,
    checks,
    config,
    definitions,
    leadership,
    local_state,
    membership,
    rpc_endpoints,
    state_store,
    transport,
    util,
)

__all__ = [
    "acl",
    "anti_entropy",
    "checks",
    "config",
    "definitions",
    "leadership",
    "local_state",
    "membership",
    "rpc_endpoints",
    "state_store",
    "transport",
    "util",
]
