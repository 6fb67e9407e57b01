"""What the load balancer is doing, read from the outside.

The LB serves its own state under /_lab/ to the lab network: the configuration
nginx runs (`service.conf`, installed only after `nginx -t` accepted it) and
counters of reloads and rejected renders.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import httpx

from labctl.spec import LabSpec

UPSTREAM_RE = re.compile(r"upstream\s+(\S+)\s*\{(.*?)\}", re.S)
SERVER_RE = re.compile(r"^\s*server\s+(\S+?)(?:\s|;)", re.M)
FALLBACK = "127.0.0.1:65535"


@dataclass
class LbState:
    upstreams: dict[str, list[str]]  # service -> ["address:port", ...] nginx runs
    reloads: int
    rejected: int


def lb_address(spec: LabSpec) -> str | None:
    return next((str(h.address) for h in spec.hosts if h.lb), None)


def parse_upstreams(config: str) -> dict[str, list[str]]:
    """Upstream name -> servers, from an nginx configuration (the fallback left out)."""
    return {
        name: [s for s in SERVER_RE.findall(body) if s != FALLBACK]
        for name, body in UPSTREAM_RE.findall(config)
    }


def read_state(client: httpx.Client, address: str) -> LbState:
    def get(name: str) -> str:
        url = f"http://{address}/_lab/{name}"
        try:
            response = client.get(url)
        except httpx.RemoteProtocolError:
            # A reload makes nginx close its idle keep-alive connections; a GET sent on one
            # just then gets no answer at all, and is sent again on a new connection, as
            # RFC 9112 (9.3.1.1) allows for a request that got nothing back.
            response = client.get(url)
        response.raise_for_status()
        return response.text

    return LbState(
        upstreams=parse_upstreams(get("service.conf")),
        reloads=int(get("reloads").strip() or 0),
        rejected=int(get("rejected").strip() or 0),
    )


def sample(client: httpx.Client, address: str, service: str, requests: int) -> Counter:
    """Send `requests` GETs through the LB; count answers by instance (X-Instance),
    failures by status code or error name."""
    seen: Counter = Counter()
    for _ in range(requests):
        try:
            response = client.get(f"http://{address}/{service}")
        except httpx.HTTPError as exc:
            seen[f"error {type(exc).__name__}"] += 1
            continue
        if response.status_code == 200:
            seen[response.headers.get("X-Instance", "?")] += 1
        else:
            seen[f"HTTP {response.status_code}"] += 1
    return seen
