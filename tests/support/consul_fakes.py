"""Test helpers around the consul-template stand-in: build it, and serve it a fixed
catalog from a fake Consul HTTP API on 127.0.0.1 (no blocking queries: enough for -once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

STANDIN_DIR = Path(__file__).resolve().parents[1] / "standins" / "consul-template"
# `./lab test` installs Go (Debian's golang-go); without it the tests fail, never skip.
GO = shutil.which("go") or "go"


def go_env(tmp_dir: Path) -> dict[str, str]:
    """Environment for the go tool: offline, static, with a build cache even where HOME is unset."""
    env = dict(os.environ, GOPROXY="off", GOFLAGS="", CGO_ENABLED="0")
    if not (env.get("GOCACHE") or env.get("HOME") or env.get("XDG_CACHE_HOME")):
        env["GOCACHE"] = str(tmp_dir / "gocache")
    return env


def build_consul_template(out_dir: Path) -> Path:
    """Build the stand-in into `out_dir`; return the binary."""
    binary = out_dir / "consul-template"
    proc = subprocess.run(
        [GO, "build", "-trimpath", "-o", str(binary), "."],
        cwd=STANDIN_DIR,
        env=go_env(out_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"go build failed:\n{proc.stdout}\n{proc.stderr}"
    return binary


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        server.requests.append(self.path)
        url = urlsplit(self.path)
        if url.path == "/v1/catalog/services":
            body = server.catalog
        elif url.path.startswith("/v1/health/service/"):
            body = server.health.get(url.path.rsplit("/", 1)[1], [])
            if "passing" in parse_qs(url.query, keep_blank_values=True):
                body = [e for e in body if all(c["Status"] == "passing" for c in e["Checks"])]
        else:
            self.send_response(404)
            self.send_header("X-Consul-Index", "42")
            self.end_headers()
            return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Consul-Index", "42")
        self.send_header("X-Consul-KnownLeader", "true")
        self.send_header("X-Consul-LastContact", "0")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def fake_consul(catalog: dict, health: dict) -> Iterator[tuple[str, list[str]]]:
    """Serve `catalog` (/v1/catalog/services) and `health` (service -> entries) on
    127.0.0.1; yield (host:port, the request paths seen)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.catalog, server.health, server.requests = catalog, health, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
