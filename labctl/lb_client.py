"""What the load balancer is doing, read from the outside.

The LB serves its own state under /_lab/ to the lab network: lb.json, the upstreams
of the configuration nginx runs (installed only after `nginx -t` accepted it) and
counters of reloads and rejected renders.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import httpx

from labctl.spec import LabSpec
from roles.contract import LB_RECORD_PATH


@dataclass
class LbRecord:
    """What an LB published about itself (LB_RECORD_PATH, written by templates/lb/lb-publish
    from the configuration nginx runs: the one reading of nginx's upstreams)."""

    upstreams: dict[str, list[str]]  # service -> ["address:port", ...] nginx runs
    reloads: int
    rejected: int


def lb_addresses(spec: LabSpec) -> list[str]:
    """Every LB host's address (the spec's lb_hosts)."""
    return [str(h.address) for h in spec.lb_hosts]


def lb_address(spec: LabSpec) -> str | None:
    """The LB `watch`, `verify` and `scale` read: the first of the spec's LB hosts."""
    return next(iter(lb_addresses(spec)), None)


def read_lb_record(client: httpx.Client, address: str) -> LbRecord:
    """The record the LB at `address` publishes."""
    url = f"http://{address}{LB_RECORD_PATH}"
    try:
        response = client.get(url)
    except httpx.RemoteProtocolError:
        # A reload makes nginx close its idle keep-alive connections; a GET sent on one
        # just then gets no answer at all, and is sent again on a new connection, as
        # RFC 9112 (9.3.1.1) allows for a request that got nothing back.
        response = client.get(url)
    response.raise_for_status()
    record = response.json()
    return LbRecord(
        upstreams={name: list(members) for name, members in record["upstreams"].items()},
        reloads=int(record["reloads"]),
        rejected=int(record["rejected"]),
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
