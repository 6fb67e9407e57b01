"""Health check runners: HTTP, TCP, script and TTL, as agent/checks/check.go runs them.

An interval check's first run waits a random time up to its interval
(`lib.RandomStagger(c.Interval)` in check.go's run()), then runs every
interval. Results go to a notifier (the agent's local state), which decides
what reaches the catalog.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from .util import (
    CRITICAL,
    PASSING,
    WARNING,
    Logger,
    format_duration,
    go_url_error,
    parse_duration,
    random_stagger,
)

MIN_INTERVAL = 1.0  # checks.MinInterval
OUTPUT_MAX_SIZE = 4096  # checks.DefaultBufSize
INTERVAL_KINDS = frozenset({"http", "tcp", "script", "grpc"})

Notify = Callable[[str, str, str], None]  # (check ID, status, output)


class CheckRunner(threading.Thread):
    """Runs one interval check (HTTP, TCP, script, gRPC as TCP) until stopped."""

    def __init__(
        self, check_id: str, kind: str, defn: dict, interval: float, notify: Notify, log: Logger
    ) -> None:
        super().__init__(daemon=True, name=f"check-{check_id}")
        self.check_id = check_id
        self.kind = kind
        self.defn = defn
        self.interval = interval
        self.notify = notify
        self.log = log
        self.stop_event = threading.Event()

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        # check.go: "Get the randomized initial pause time".
        if self.stop_event.wait(random_stagger(self.interval)):
            return
        while not self.stop_event.is_set():
            try:
                status, output = self.execute()
            except Exception as e:  # a check never takes the agent down
                status, output = CRITICAL, f"check failed: {e!r}"
            if self.stop_event.is_set():
                return
            self.notify(self.check_id, status, output)
            if self.stop_event.wait(self.interval):
                return

    def _timeout(self, default: float) -> float:
        value = self.defn.get("Timeout")
        return parse_duration(value) if value not in (None, "") else default

    def execute(self) -> tuple[str, str]:
        if self.kind == "http":
            return self._http()
        if self.kind == "script":
            return self._script()
        return self._tcp()

    def _http(self) -> tuple[str, str]:
        d = self.defn
        url = str(d["HTTP"])
        method = str(d.get("Method") or "GET").upper()
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
            with opener.open(req, timeout=self._timeout(10.0)) as resp:
                code, reason = resp.status, resp.reason
                text = resp.read(OUTPUT_MAX_SIZE)
        except urllib.error.HTTPError as e:
            code, reason = e.code, e.reason
            try:
                text = e.read(OUTPUT_MAX_SIZE)
            except OSError:
                text = b""
        except (urllib.error.URLError, OSError, ValueError) as e:
            return CRITICAL, go_url_error(method, url, e)
        output = f"HTTP {method} {url}: {code} {reason} Output: {text.decode('utf-8', 'replace')}"
        if 200 <= code < 300:
            return PASSING, output
        if code == 429:
            return WARNING, output
        return CRITICAL, output

    def _tcp(self) -> tuple[str, str]:
        target = str(self.defn.get("TCP") or self.defn.get("GRPC") or "").split("/", 1)[0]
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), self._timeout(10.0)):
                pass
        except ConnectionRefusedError:
            return CRITICAL, f"dial tcp {target}: connect: connection refused"
        except TimeoutError:
            return CRITICAL, f"dial tcp {target}: i/o timeout"
        except (OSError, ValueError) as e:
            return CRITICAL, f"dial tcp {target}: {e}"
        return PASSING, f"TCP connect {target}: Success"

    def _script(self) -> tuple[str, str]:
        args = [str(a) for a in self.defn.get("Args") or []]
        timeout = self._timeout(30.0)
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


class TTLTimer:
    """check.go CheckTTL: critical once the TTL passes without an update."""

    def __init__(self, check_id: str, ttl: float, notify: Notify, log: Logger) -> None:
        self.check_id = check_id
        self.ttl = ttl
        self.notify = notify
        self.log = log
        self.last_output = ""
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._stopped = False

    def start(self) -> None:
        self._arm()

    def _arm(self) -> None:
        with self._lock:
            if self._timer:
                self._timer.cancel()
            if self._stopped:
                return
            self._timer = threading.Timer(self.ttl, self._expired)
            self._timer.daemon = True
            self._timer.start()

    def _expired(self) -> None:
        self.log.warn("agent", "Check missed TTL, is now critical", check=self.check_id)
        output = "TTL expired"
        if self.last_output:
            output += f" (last output before timeout follows): {self.last_output}"
        self.notify(self.check_id, CRITICAL, output)

    def set_status(self, status: str, output: str) -> str:
        """CheckTTL.SetStatus: record the update and restart the TTL."""
        if len(output) > OUTPUT_MAX_SIZE:
            output = (
                f"{output[:OUTPUT_MAX_SIZE]} ... (captured {OUTPUT_MAX_SIZE} of "
                f"{len(output)} bytes)"
            )
        self.notify(self.check_id, status, output)
        self.last_output = output
        self._arm()
        return output

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._timer:
                self._timer.cancel()
