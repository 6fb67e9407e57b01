"""A background poll for the e2e tests: `poll(client)` every `interval` seconds in a
thread, with one httpx client, for as long as the `with` block runs."""

from __future__ import annotations

import threading

import httpx


class BackgroundPoll:
    interval = 0.1
    timeout = 2.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self, client: httpx.Client) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout, trust_env=False) as client:
            while not self._stop.is_set():
                self.poll(client)
                self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
