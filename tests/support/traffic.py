"""Clients that send GETs through the LB in a background thread and count what came back.

Two kinds, because nginx treats them differently at every reload:

- fresh: a new connection per request, like `curl` in a loop;
- keep-alive: one reused connection, as browsers and curl reuse theirs. nginx closes
  idle keep-alive connections at a reload, and a request sent on one just then is lost
  before any answer. RFC 9112 section 9.3.1 lets a client retry an idempotent request
  on a new connection when that happens, and browsers and curl do; httpx does not, so
  this client does it itself: once, only for a request sent on a reused connection
  that closed without an answer. Such retries are counted apart; a failed retry, or
  any other error, is a failed GET.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter

import httpx

# What a reused connection closed by the server before it answered looks like in httpx.
CLOSED_BEFORE_ANSWER = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


# After a failed GET, so an LB refusing at once does not become a hot loop.
FAILURE_PAUSE = 0.01


class RequestLoop:
    """GET `url` in a loop until stopped or `seconds` passed; count status codes and
    error names in `outcomes`, RFC 9112 retries in `retried`. A context manager.

    With `log`, every request is also logged as (monotonic time of the answer, what came
    back): the X-Instance that answered a 200, "HTTP <status>" or "error <name>"; a retry
    as "retry"."""

    def __init__(
        self,
        url: str,
        keepalive: bool = False,
        seconds: float = 300,
        timeout: float = 5.0,
        log: list[tuple[float, str]] | None = None,
    ):
        self.url = url
        self.keepalive = keepalive
        self.timeout = timeout
        self.outcomes: Counter = Counter()
        self.retried = 0
        self.log = log
        self._stop = threading.Event()
        self._deadline = time.monotonic() + seconds
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _client(self) -> httpx.Client:
        limits = httpx.Limits(max_keepalive_connections=1 if self.keepalive else 0)
        return httpx.Client(timeout=self.timeout, limits=limits, trust_env=False)

    def _record(self, outcome: int | str, logged: str) -> None:
        self.outcomes[outcome] += 1
        if self.log is not None:
            # Interned: a long run logs hundreds of thousands of a handful of strings.
            self.log.append((time.monotonic(), sys.intern(logged)))

    def _failed(self, exc: Exception) -> None:
        self._record(type(exc).__name__, f"error {type(exc).__name__}")
        time.sleep(FAILURE_PAUSE)

    def _run(self) -> None:
        client = self._client()
        reused = False  # the next request goes out on a connection that answered before
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    response = client.get(self.url)
                except CLOSED_BEFORE_ANSWER as exc:
                    if not (self.keepalive and reused):
                        self._failed(exc)
                        continue
                    self.retried += 1
                    if self.log is not None:
                        self.log.append((time.monotonic(), "retry"))
                    client.close()
                    client = self._client()
                    try:
                        response = client.get(self.url)
                    except httpx.HTTPError as retry_error:
                        self._failed(retry_error)
                        reused = False
                        continue
                except httpx.HTTPError as exc:
                    self._failed(exc)
                    reused = False
                    continue
                if response.status_code == 200:
                    self._record(200, response.headers.get("X-Instance", "?"))
                else:
                    self._record(response.status_code, f"HTTP {response.status_code}")
                    time.sleep(FAILURE_PAUSE)
                reused = self.keepalive
        finally:
            client.close()

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def failures(self) -> dict:
        return {k: v for k, v in self.outcomes.items() if k != 200}

    @property
    def answered(self) -> int:
        return self.outcomes[200]
