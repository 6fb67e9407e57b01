"""What the e2e tests look at on the running lab: the LB's state and traffic through it,
and commands on its hosts. Addresses are the e2e lab's own (tests/e2e/conftest.py)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

import httpx

from labctl import security
from labctl.lb_client import read_lb_record, sample
from labctl.remote import run
from testbed.traffic import RequestLoop, assert_served_throughout, calm_rates
from tests.e2e.conftest import E2E_SUBNET

LB = f"{E2E_SUBNET}.4"
SERVICE = "zhibo_service"
# Check interval + timeout + consul-template's quiescence max + a margin.
FOLLOW_DEADLINE = 10 + 5 + 10 + 15


def request_loop(**kwargs) -> RequestLoop:
    return RequestLoop(f"http://{LB}/{SERVICE}", **kwargs)


class Traffic:
    """A fresh-connection and a keep-alive loop through the LB around an event (the body
    of the `with`): entering measures their calm rates first; `assert_no_failed_get`
    then holds each to its own pace over the event and bounds the keep-alive client's
    RFC 9112 retries by what can cause one: nginx closing idle connections at a reload,
    once per reload."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.fresh = request_loop()
        self.kept = request_loop(keepalive=True)
        self.loops = (self.fresh, self.kept)

    def __enter__(self) -> Traffic:
        self.reloads_before = lb_state().reloads
        for loop in self.loops:
            loop.__enter__()
        try:
            self.rates = calm_rates(*self.loops)
        except BaseException:
            self.__exit__()
            raise
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.end = time.monotonic()
        for loop in self.loops:
            loop.__exit__()

    def assert_no_failed_get(self, also: tuple[int, ...] = ()) -> None:
        """No failed GET (`also`: statuses that are no failure here, e.g. the LB's 502
        with no instance left), each loop at its pace through the event, retries bound."""
        reloads = lb_state().reloads - self.reloads_before
        for loop, rate in zip(self.loops, self.rates, strict=True):
            failures = {k: v for k, v in loop.failures.items() if k not in also}
            assert failures == {}, f"{self.what}: failed GETs {dict(loop.outcomes)}"
            assert_served_throughout(loop, rate, self.start, self.end, self.what, also)
        assert self.kept.retried <= reloads, (
            f"{self.what}: {self.kept.retried} RFC 9112 retries, more than the {reloads} "
            "nginx reloads that can cause one"
        )


def started(connections, host: str, container: str) -> tuple[float, int]:
    """When `container` on `host` last started (Unix time) and its restart count."""
    output = on_host(connections, host, "docker inspect -f "
                     f"'{{{{.State.StartedAt}}}} {{{{.RestartCount}}}}' {container}")  # fmt: skip
    stamp, count = output.split()
    # Docker's RFC 3339 with nanoseconds; Python reads microseconds.
    head, _, fraction = stamp.rstrip("Z").partition(".")
    when = datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00")
    return when.timestamp(), int(count)


def lb_state():
    with httpx.Client(timeout=5) as client:
        return read_lb_record(client, LB)


def upstream() -> set[str]:
    return set(lb_state().upstreams.get(SERVICE, []))


def lb_sample(n: int = 30) -> Counter:
    with httpx.Client(timeout=5) as client:
        return sample(client, LB, SERVICE, n)


def on_host(connections, host: str, command: str) -> str:
    """Run `command` with root rights on a lab host; fail the test if it fails."""
    code, output = run(connections[host], command, sudo=True)
    assert code == 0, f"`{command}` on {host}: {output}"
    return output


def consul_as(spec, token_name: str | None, method: str, path: str, **kwargs) -> httpx.Response:
    """A request to the first server's HTTP API with one of the lab's tokens (None:
    anonymous), as the part of the lab that holds it would send it."""
    secret = security.token(spec, token_name) if token_name else None
    headers = {"X-Consul-Token": secret} if secret else {}
    url = f"http://{spec.consul_servers[0].address}:8500{path}"
    return httpx.request(method, url, headers=headers, timeout=10, **kwargs)


def consul(spec, path: str):
    """A read with the person's token (`labctl token read`), as verify and watch read."""
    response = consul_as(spec, "read", "GET", path)
    response.raise_for_status()
    return response.json()


# Curl on a lab host reading its agent with the host's registration token (role consul).
AGENT_CURL = "curl -fsS -H @/etc/lab/secrets/consul.header http://127.0.0.1:8500"
