"""The e2e request loops hold themselves to their own pace (testbed/traffic.py): a
loop that stalls, stops early or slows to a crawl during an event fails
`assert_served_throughout`, against a loopback server that misbehaves on cue."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from testbed.traffic import RequestLoop, assert_served_throughout, calm_rates


class Backend(ThreadingHTTPServer):
    """Answers 200 with an X-Instance header, each answer `delay` s late (set it to
    slow the loop down or stall it)."""

    daemon_threads = True
    delay = 0.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        time.sleep(self.server.delay)
        self.send_response(200)
        self.send_header("X-Instance", "one")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url(server: Backend) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.mark.parametrize("keepalive", [False, True])
def test_a_loop_that_runs_through_the_event_passes(backend, keepalive):
    with RequestLoop(url(backend), keepalive=keepalive) as loop:
        (rate,) = calm_rates(loop, seconds=0.3)
        start = time.monotonic()
        time.sleep(0.3)  # the event
        end = time.monotonic()
    assert_served_throughout(loop, rate, start, end, "calm", max_silence=0.5)
    assert loop.last_answer >= end and loop.failures == {}


@pytest.mark.parametrize(
    ("delay", "checks", "refusal"),
    [
        (1.0, {"share": 0.0, "max_silence": 0.5}, "without an answer"),  # a stall
        (0.5, {"max_silence": 2.0}, "under 20% of its calm"),  # a crawl
    ],
)
def test_a_loop_that_stalls_or_crawls_during_the_event_fails(backend, delay, checks, refusal):
    with RequestLoop(url(backend)) as loop:
        (rate,) = calm_rates(loop, seconds=0.3)
        start = time.monotonic()
        backend.delay = delay
        time.sleep(1.2)
        backend.delay = 0.0
        end = time.monotonic()
    with pytest.raises(AssertionError, match=refusal):
        assert_served_throughout(loop, rate, start, end, "slowed", **checks)


def test_a_loop_that_ended_before_the_event_did_fails(backend):
    with RequestLoop(url(backend), seconds=0.6) as loop:
        (rate,) = calm_rates(loop, seconds=0.3)
        start = time.monotonic()
        time.sleep(0.6)
        end = time.monotonic()
    assert loop.expired
    with pytest.raises(AssertionError, match="ended by itself"):
        assert_served_throughout(loop, rate, start, end, "expired", share=0.0, max_silence=9)


def test_the_exit_waits_for_an_answer_after_it(backend):
    with RequestLoop(url(backend)) as loop:
        backend.delay = 0.3
        time.sleep(0.1)
        exited = time.monotonic()
    assert loop.last_answer >= exited
