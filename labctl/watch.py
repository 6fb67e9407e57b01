"""`labctl watch`: the LB's upstreams as nginx runs them, next to Consul's view.

Each refresh reads the LB's installed configuration and counters (/_lab/) and
Consul's health of every instance, and shows one row per instance: whether
nginx routes to it, its check status, and the LB's reload count.
"""

from __future__ import annotations

import time

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from labctl import lb, standins
from labctl.spec import LabSpec
from labctl.verify import SERVICE_NAME, instance_status, service_health


def _consul_health(client: httpx.Client, spec: LabSpec) -> dict[str, tuple[str, str]]:
    """address:port -> (instance ID, worst check status), from any agent that answers."""
    try:
        entries = service_health(client, spec, SERVICE_NAME)
    except (httpx.HTTPError, RuntimeError, ValueError):
        return {}
    health = {}
    for entry in entries:
        service = entry["Service"]
        health[f"{service['Address']}:{service['Port']}"] = (service["ID"], instance_status(entry))
    return health


def snapshot(client: httpx.Client, spec: LabSpec, address: str) -> Table:
    try:
        state = lb.read_state(client, address)
        routed = set(state.upstreams.get(SERVICE_NAME, []))
        title = f"LB {address}: {state.reloads} reloads, {state.rejected} rejected renders"
    except httpx.HTTPError as exc:
        routed, title = set(), f"LB {address}: not answering ({type(exc).__name__})"
    health = _consul_health(client, spec)
    table = Table(title=f"{title}  [dim]{time.strftime('%H:%M:%S')}[/]")
    consul = "consul (stand-in)" if standins.in_use(spec) else "consul"
    for column in ("instance", "address", consul, "in nginx upstream"):
        table.add_column(column)
    for where in sorted(set(health) | routed):
        instance, status = health.get(where, ("?", "not registered"))
        colour = "green" if status == "passing" else "red"
        table.add_row(
            instance, where, f"[{colour}]{status}[/]", "[green]yes[/]" if where in routed else "no"
        )
    captions = [f"[yellow]{standins.NOTE}[/]"] if standins.in_use(spec) else []
    if not routed:
        captions.append("no healthy instance: nginx answers 502 from the fallback server")
    table.caption = "\n".join(captions) or None
    return table


def watch_lb(spec: LabSpec, interval: float, count: int) -> None:
    address = lb.lb_address(spec)
    if address is None:
        Console(stderr=True).print("this lab has no LB host (no host has lb: true)")
        return
    with httpx.Client(timeout=3) as client, Live(snapshot(client, spec, address)) as live:
        shown = 1
        while count == 0 or shown < count:
            time.sleep(interval)
            live.update(snapshot(client, spec, address))
            shown += 1
