"""What the e2e tests look at on the running lab: the LB's state and traffic through it,
and commands on its hosts. Addresses are the e2e lab's own (tests/e2e/conftest.py)."""

from __future__ import annotations

from collections import Counter

import httpx

from labctl import security
from labctl.lb import read_state, sample
from labctl.remote import run
from tests.e2e.conftest import E2E_SUBNET
from tests.support.traffic import RequestLoop

LB = f"{E2E_SUBNET}.4"
SERVICE = "zhibo_service"
# Check interval + timeout + consul-template's quiescence max + a margin.
FOLLOW_DEADLINE = 10 + 5 + 10 + 15


def request_loop(**kwargs) -> RequestLoop:
    return RequestLoop(f"http://{LB}/{SERVICE}", **kwargs)


def lb_state():
    with httpx.Client(timeout=5) as client:
        return read_state(client, LB)


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
