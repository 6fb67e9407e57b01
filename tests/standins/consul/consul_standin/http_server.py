"""HTTP plumbing shared by the public API and the agents' private transport."""

from __future__ import annotations

import json
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .util import ApiError, go_bool, json_dumps


class DropConnection(Exception):
    """Close the connection without an answer (what memberlist does with a bad message)."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    raw_query: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
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
            return go_bool(value)
        except ValueError:
            return True

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

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
    return Response(status, json_dumps(obj, pretty), "application/json", dict(headers or {}))


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8")


def empty_ok() -> Response:
    return Response(200, b"", "text/plain; charset=utf-8")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Consul-standin"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        req = Request(
            method=self.command,
            path=urllib.parse.unquote(split.path),
            query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
            raw_query=split.query,
            body=self._read_body(),
            headers={k.lower(): v for k, v in self.headers.items()},
            remote=f"{self.client_address[0]}:{self.client_address[1]}",
        )
        try:
            resp = self.server.dispatch(req)  # type: ignore[attr-defined]
        except DropConnection:
            self.close_connection = True
            return
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


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], dispatch: Callable[[Request], Response]) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.dispatch = dispatch
        super().__init__(addr, _Handler)
