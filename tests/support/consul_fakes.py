"""Test helpers around the consul-template stand-in: build it (as a given release), and
serve it a catalog from a fake Consul HTTP API on 127.0.0.1.

The fake answers blocking queries as Consul does (a request with ?index=N at or past the
current index is held until the data changes or its wait= runs out), so a consul-template
in watch mode does not spin against it. It can also lag behind the leader
(X-Consul-LastContact on ?stale reads), refuse every request (e.g. 403 for an ACL error), and
it records each request's path and X-Consul-Token."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from labctl.spec import Versions

STANDIN_DIR = Path(__file__).resolve().parents[1] / "standins" / "consul-template"
# `./lab test` installs Go (Debian's golang-go); without it the tests fail, never skip.
GO = shutil.which("go") or "go"
# The release the stand-in behaves as unless told otherwise: the lab's default
# consul-template (also main.version's default in the stand-in's release.go).
DEFAULT_VERSION = Versions().consul_template


def go_env(tmp_dir: Path) -> dict[str, str]:
    """Environment for the go tool: offline, static, with a build cache even where HOME is unset."""
    env = dict(os.environ, GOPROXY="off", GOFLAGS="", CGO_ENABLED="0")
    if not (env.get("GOCACHE") or env.get("HOME") or env.get("XDG_CACHE_HOME")):
        env["GOCACHE"] = str(tmp_dir / "gocache")
    return env


def go(tmp_dir: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the go tool in `cwd` (offline, see go_env); its output is captured."""
    return subprocess.run(
        [GO, *args], cwd=cwd, env=go_env(tmp_dir), capture_output=True, text=True, timeout=timeout
    )


def build_consul_template(out_dir: Path, version: str = DEFAULT_VERSION) -> Path:
    """Build the stand-in into `out_dir` as consul-template `version` (0.19.0 or 0.19.5);
    return the binary, `out_dir/consul-template`."""
    binary = out_dir / "consul-template"
    flags = f"-ldflags=-X main.version={version}"
    proc = go(out_dir, STANDIN_DIR, "build", "-trimpath", flags, "-o", str(binary), ".")
    assert proc.returncode == 0, f"go build failed:\n{proc.stdout}\n{proc.stderr}"
    # The binary refuses to run as a release it does not implement: say so here, once.
    check = subprocess.run([str(binary), "-v"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr.strip()
    return binary


@dataclass(frozen=True)
class SeenRequest:
    """One request the fake Consul answered (or refused)."""

    path: str  # path and query, as sent
    token: str | None  # X-Consul-Token, None when absent

    @property
    def stale(self) -> bool:
        return "stale" in parse_qs(urlsplit(self.path).query, keep_blank_values=True)


class FakeConsul:
    """The state a fake Consul serves; change it with `update` (wakes blocked queries) or
    by setting `last_contact_ms` / `deny`."""

    # A blocking query is held at most this long, whatever its wait= says, so a test that
    # forgets to change the data still ends.
    MAX_HOLD_S = 65.0

    def __init__(self, catalog: dict, health: dict) -> None:
        self.catalog, self.health = catalog, health
        self.index = 42
        # X-Consul-LastContact (ms) of ?stale answers; consistent reads get 0.
        self.last_contact_ms = 0
        # (status, body) to refuse every request with, e.g. (403, "ACL not found").
        self.deny: tuple[int, str] | None = None
        self.seen: list[SeenRequest] = []
        self.requests: list[str] = []  # the paths of `seen`, in order
        self.address = ""
        self._changed = threading.Condition()
        self._closing = False

    def update(self, catalog: dict | None = None, health: dict | None = None) -> None:
        """Replace the catalog and/or health entries; the index moves on."""
        with self._changed:
            if catalog is not None:
                self.catalog = catalog
            if health is not None:
                self.health = health
            self.index += 1
            self._changed.notify_all()

    def hold(self, index: int, wait_s: float) -> None:
        """Block like Consul while `index` is at or past the current index."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._closing or self.index > index, timeout=min(wait_s, self.MAX_HOLD_S)
            )

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()


def _wait_seconds(value: str) -> float:
    """Consul's wait= ("60000ms", "5s", "1m"); Consul's default is 5 minutes."""
    match = re.fullmatch(r"(\d+)(ms|s|m)", value or "")
    if not match:
        return 300.0
    return int(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2]]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        fake: FakeConsul = self.server.fake
        fake.seen.append(SeenRequest(self.path, self.headers.get("X-Consul-Token")))
        fake.requests.append(self.path)
        if fake.deny:
            status, text = fake.deny
            self._send(status, text.encode(), {})
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        if "index" in query:
            fake.hold(int(query["index"][0]), _wait_seconds(query.get("wait", [""])[0]))
        headers = {
            "X-Consul-Index": str(fake.index),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": str(fake.last_contact_ms if "stale" in query else 0),
        }
        if url.path == "/v1/catalog/services":
            body = fake.catalog
        elif url.path.startswith("/v1/health/service/"):
            body = fake.health.get(url.path.rsplit("/", 1)[1], [])
            if "passing" in query:
                body = [e for e in body if all(c["Status"] == "passing" for c in e["Checks"])]
        else:
            self._send(404, b"", headers)
            return
        self._send(200, json.dumps(body).encode(), headers | {"Content-Type": "application/json"})

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on a held query (it stopped, or was killed)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve_fake_consul(catalog: dict, health: dict) -> Iterator[FakeConsul]:
    """Serve `catalog` (/v1/catalog/services) and `health` (service -> entries) on
    127.0.0.1; yield the FakeConsul (its `address` is host:port)."""
    fake = FakeConsul(catalog, health)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.fake = fake
    fake.address = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def fake_consul(catalog: dict, health: dict) -> Iterator[tuple[str, list[str]]]:
    """serve_fake_consul, yielding (host:port, the request paths seen so far)."""
    with serve_fake_consul(catalog, health) as fake:
        yield fake.address, fake.requests
