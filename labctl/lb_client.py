"""What the load balancer is doing, read from the outside.

The LB serves its own state under /_lab/ to the lab network: lb.json, the upstreams
of the configuration nginx runs (installed only after `nginx -t` accepted it) and
counters of reloads and rejected renders.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import httpx

from labctl import remote
from labctl.remote import RemoteError, SshData
from labctl.spec import LabSpec
from roles.contract import LB_RECORD_PATH, VRRP_RECORD_PATH


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
    """Where `watch`, `verify` and `scale` reach the LB: the address the LBs share when
    there are several, else the one LB host's own."""
    return spec.lb_address


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
    """Send `requests` GETs through the LB, each on a connection of its own; count
    answers by instance (X-Instance), failures by status code or error name. Not one
    kept-alive connection: nginx closes idle ones at every reload, and a GET sent on one
    as it closes fails before any answer (a client retries that, RFC 9112 section
    9.3.1); a reload is no failure of the LB's."""
    seen: Counter = Counter()
    for _ in range(requests):
        try:
            response = client.get(f"http://{address}/{service}", headers={"Connection": "close"})
        except httpx.HTTPError as exc:
            seen[f"error {type(exc).__name__}"] += 1
            continue
        if response.status_code == 200:
            seen[response.headers.get("X-Instance", "?")] += 1
        else:
            seen[f"HTTP {response.status_code}"] += 1
    return seen


@dataclass
class VrrpView:
    """One LB of several, as its keepalived records itself (/_lab/vrrp.json) and, where
    labctl can ask its kernel, whether it holds the shared address."""

    host: str
    address: str
    state: str  # MASTER, BACKUP, FAULT, STOP; or why it could not be read
    priority: int | None
    since: float | None
    # Its kernel holds the shared address (True/False); None: not asked or no answer.
    holds: bool | None = None


def vrrp_record(client: httpx.Client, address: str) -> dict:
    """The keepalived record an LB publishes (templates/keepalived/vrrp-notify)."""
    response = client.get(f"http://{address}{VRRP_RECORD_PATH}")
    response.raise_for_status()
    return response.json()


def holds_address(ssh: SshData, address: str) -> bool:
    """Whether the host's kernel holds `address` on an interface of the network (a fact
    no stale file can fake): not the host-scoped copy every LB of a pair keeps on its
    loopback (templates/keepalived/start.sh)."""
    code, output = remote.run(ssh, f"ip -o -4 addr show scope global to {address}/32")
    if code != 0:
        raise RemoteError(remote.address(ssh), f"`ip addr` failed: {output.strip()}")
    return bool(output.strip())


def vrrp_views(
    client: httpx.Client, spec: LabSpec, connections: dict[str, SshData] | None = None
) -> list[VrrpView]:
    """Every LB of a lab with several, in priority order (empty with one LB)."""
    if not spec.lb_pair:
        return []
    views = []
    for host in spec.lb_hosts:
        try:
            record = vrrp_record(client, str(host.address))
            view = VrrpView(host.name, str(host.address), record["state"],
                            record.get("priority"), record.get("since"))  # fmt: skip
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            view = VrrpView(host.name, str(host.address), f"no answer ({type(exc).__name__})",
                            None, None)  # fmt: skip
        ssh = (connections or {}).get(host.name)
        if ssh is not None:
            try:
                view.holds = holds_address(ssh, spec.lb_address)
            except RemoteError:
                view.holds = None
        views.append(view)
    return views


def holders(views: list[VrrpView]) -> list[str]:
    """The LBs holding the address: by their kernels where asked, else by their records."""
    if any(v.holds is not None for v in views):
        return [v.host for v in views if v.holds]
    return [v.host for v in views if v.state == "MASTER"]


def describe_pair(spec: LabSpec, views: list[VrrpView]) -> str:
    """One line: who holds the shared address, and every LB's state."""
    held = holders(views)
    lbs = ", ".join(
        f"{v.host} {v.state}" + (f" (priority {v.priority})" if v.priority is not None else "")
        for v in views
    )
    who = " and ".join(held) if held else "no LB"
    return f"LB address {spec.lb_address}: held by {who}; {lbs}"


def split_brain(spec: LabSpec, held: list[str]) -> str:
    """The sentence for two or more holders."""
    return (
        f"split brain: {' and '.join(held)} {'both' if len(held) == 2 else 'all'} hold "
        f"{spec.lb_address}, so their keepalived do "
        "not hear each other; check that VRRP (IP protocol 112) passes between them, or set "
        "network.lb_unicast: true where the network drops its multicast."
    )
