"""The agents' private transport on the Serf LAN port, authenticated with the gossip key.

Real Consul speaks memberlist over UDP+TCP on 8301 and RPC on 8300; the
stand-in sends every agent-to-agent message as JSON over HTTP to
bind_addr:serf_lan. With `encrypt` set, every message and answer carries an
HMAC-SHA256 of its path and body under the primary gossip key (memberlist
encrypts with AES-GCM; HMAC is what the standard library offers, and it
decides the same thing: who holds the key). A message no installed key
verifies is dropped, closing the connection, and logged with memberlist's
words; the sender sees the connection close ("EOF"), as memberlist's would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from .http_server import DropConnection, Request, Response, Server, json_response
from .util import Logger

MAC_HEADER = "X-Standin-Gossip-Mac"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# memberlist's messages for a stream (TCP) and a packet (UDP) it cannot accept.
ERR_NO_KEY_DECRYPTS = "No installed keys could decrypt the message"
ERR_REMOTE_ENCRYPTED = "Remote state is encrypted and encryption is not configured"
ERR_REMOTE_PLAIN = "Encryption is configured but remote state is not encrypted"


class TransportError(Exception):
    """A message could not be delivered or its answer not accepted."""

    def rpc_text(self, server_rpc_addr: str) -> str:
        """The error Consul's connection pool reports for an RPC to `server_rpc_addr`."""
        text = str(self)
        if text.startswith("dial tcp "):
            text = f"dial tcp {server_rpc_addr}:" + text.split(":", 2)[2]
        return f"rpc error getting client: failed to get conn: {text}"


class Keyring:
    """The LAN gossip keyring: keys[0] is the primary (used to sign)."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, encrypt: str, data_dir: str, use_file: bool, log: Logger) -> Keyring:
        """agent/keyring.go setupBaseKeyrings: data_dir/serf/local.keyring wins over -encrypt."""
        path = os.path.join(data_dir, "serf", "local.keyring") if data_dir and use_file else ""
        encoded: list[str] = []
        if path and os.path.exists(path):
            if encrypt:
                log.warn("agent", "LAN keyring exists but -encrypt given, using keyring")
            with open(path, encoding="utf-8") as f:
                encoded = list(json.load(f))
        elif encrypt:
            encoded = [encrypt]
        keys = [base64.b64decode(k) for k in encoded]
        for key in keys:
            if len(key) not in (16, 24, 32):
                raise ValueError("Invalid key: key size must be 16, 24 or 32 bytes")
        if path and encrypt and not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(encoded, f)
        return cls(keys)

    def sign(self, path: str, body: bytes) -> str:
        return hmac.new(self.keys[0], path.encode() + b"\n" + body, hashlib.sha256).hexdigest()

    def verify(self, path: str, body: bytes, mac: str) -> bool:
        return any(
            hmac.compare_digest(
                hmac.new(key, path.encode() + b"\n" + body, hashlib.sha256).hexdigest(), mac
            )
            for key in self.keys
        )


class Transport:
    """Serves and sends the private messages of one agent."""

    def __init__(
        self,
        bind: tuple[str, int],
        keyring: Keyring,
        verify_incoming: bool,
        verify_outgoing: bool,
        log: Logger,
        log_name: str,
    ) -> None:
        self.bind = bind
        self.keyring = keyring
        self.verify_incoming = verify_incoming
        self.verify_outgoing = verify_outgoing
        self.log = log
        self.log_name = log_name
        self.handlers: dict[str, Callable[[dict, str], Any]] = {}
        self.server: Server | None = None

    @property
    def encrypted(self) -> bool:
        return bool(self.keyring.keys)

    def route(self, name: str, handler: Callable[[dict, str], Any]) -> None:
        """Serve /standin/v1/<name>: handler(payload, remote addr) -> JSON-able answer."""
        self.handlers[name] = handler

    def start(self) -> None:
        self.server = Server(self.bind, self._dispatch)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        ).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def _problem(self, path: str, body: bytes, mac: str, stream: bool) -> str | None:
        """Why memberlist would refuse this message, or None."""
        if not self.encrypted:
            return ERR_REMOTE_ENCRYPTED if mac else None
        if mac:
            return None if self.keyring.verify(path, body, mac) else ERR_NO_KEY_DECRYPTS
        if not self.verify_incoming:
            return None
        return ERR_REMOTE_PLAIN if stream else ERR_NO_KEY_DECRYPTS

    def _dispatch(self, req: Request) -> Response:
        name = req.path.removeprefix("/standin/v1/")
        handler = self.handlers.get(name)
        if req.method != "POST" or handler is None:
            raise DropConnection
        stream = not name.startswith("packet/")
        problem = self._problem(req.path, req.body, req.header(MAC_HEADER), stream)
        if problem:
            what = "failed to receive" if stream else "Decrypt packet failed"
            self.log.error(self.log_name, f"memberlist: {what}: {problem} from={req.remote}")
            raise DropConnection
        try:
            payload = json.loads(req.body or b"{}")
        except ValueError:
            raise DropConnection from None
        answer = handler(payload, req.remote)
        resp = json_response(answer)
        if self.encrypted and self.verify_outgoing:
            resp.headers[MAC_HEADER] = self.keyring.sign(req.path + "#answer", resp.body)
        return resp

    def send(self, addr: str, port: int, name: str, payload: Any, timeout: float) -> Any:
        """POST a message; return the peer's answer or raise TransportError."""
        host = f"[{addr}]" if ":" in addr else addr
        path = f"/standin/v1/{name}"
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.encrypted and self.verify_outgoing:
            headers[MAC_HEADER] = self.keyring.sign(path, body)
        req = urllib.request.Request(
            f"http://{host}:{port}{path}", data=body, method="POST", headers=headers
        )
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                answer, mac = resp.read(), resp.headers.get(MAC_HEADER, "")
        except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine):
            raise TransportError("EOF") from None
        except urllib.error.HTTPError as e:
            raise TransportError(f"unexpected answer {e.code}") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, ConnectionRefusedError):
                raise TransportError(
                    f"dial tcp {host}:{port}: connect: connection refused"
                ) from None
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise TransportError(f"dial tcp {host}:{port}: i/o timeout") from None
            raise TransportError(str(reason)) from None
        except (TimeoutError, OSError) as e:
            raise TransportError(f"read tcp {addr}:{port}: {e}") from None
        problem = self._problem(path + "#answer", answer, mac, stream=True)
        if problem:
            raise TransportError(problem)
        try:
            return json.loads(answer or b"null")
        except ValueError:
            raise TransportError("malformed answer") from None
