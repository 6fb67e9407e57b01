"""`labctl watch`: the LB's upstreams as nginx runs them, next to Consul's view.

Each refresh reads the LB's published record (/_lab/lb.json: upstreams, counters) and
Consul's health of every instance of every service, and shows one row per
instance: its service, whether nginx routes to it, its check status, and the
LB's reload count. With several LBs, a line says which one holds the shared address
and what every LB's keepalived says.
"""

from __future__ import annotations

import time

import httpx
from rich.live import Live
from rich.table import Table
from rich.text import Text

from labctl import lb_client, output
from labctl.images import standins
from labctl.spec import LabSpec
from labctl.verify import REGISTRATOR_ID_RE, instance_status, registration_mode, service_health
from roles.contract import REGISTRATOR_REGISTRATION


def _consul_health(client: httpx.Client, spec: LabSpec, service: str) -> dict[str, tuple]:
    """address:port -> (instance ID, worst check status) of `service`, from any agent."""
    try:
        entries = service_health(client, spec, service)
    except (httpx.HTTPError, RuntimeError, ValueError):
        return {}
    health = {}
    for entry in entries:
        registered = entry["Service"]
        where = f"{registered['Address']}:{registered['Port']}"
        health[where] = (registered["ID"], instance_status(entry))
    return health


def _registered_by(mode: str, instance: str, instance_ids: set[str]) -> str:
    """The service's registration mode; for registrator's, whether the spec has it."""
    if mode != REGISTRATOR_REGISTRATION:
        return mode or "not in the spec"
    match = REGISTRATOR_ID_RE.match(instance)
    return mode if match and match.group(2) in instance_ids else f"{mode}, not in the spec"


def snapshot(client: httpx.Client, spec: LabSpec, address: str) -> Table:
    try:
        state = lb_client.read_lb_record(client, address)
        upstreams = state.upstreams
        title = f"LB {address}: {state.reloads} reloads, {state.rejected} rejected renders"
    except httpx.HTTPError as exc:
        upstreams, title = {}, f"LB {address}: not answering ({type(exc).__name__})"
    table = Table(title=Text.assemble(f"{title}  ", (time.strftime("%H:%M:%S"), "dim")))
    consul = "consul (stand-in)" if standins.in_use(spec) else "consul"
    for column in ("service", "registered by", "instance", "address", consul,
                   "in nginx upstream"):  # fmt: skip
        table.add_column(column)
    # The spec's services, then any other the LB routes (registered by hand).
    declared = [s.name for s in spec.services]
    names = declared + sorted(set(upstreams) - set(declared))
    instance_ids = {i.id for i in spec.instances()}
    empty = []
    for name in names:
        health = _consul_health(client, spec, name)
        routed = set(upstreams.get(name, []))
        mode = registration_mode(spec, name)
        if not routed:
            empty.append(name)
        for where in sorted(set(health) | routed):
            instance, status = health.get(where, ("?", "not registered"))
            by = _registered_by(mode, instance, instance_ids)
            colour = "green" if status == "passing" else "red"
            in_upstream = output.styled("yes", "green") if where in routed else "no"
            table.add_row(name, by, instance, where, output.styled(status, colour), in_upstream)
        table.add_section()
    captions = [output.styled(standins.NOTE, "yellow")] if standins.in_use(spec) else []
    if empty:
        captions.append(Text(
            f"no healthy instance of {', '.join(empty)}: no location, or nginx answers 502 "
            "from the fallback server"
        ))  # fmt: skip
    if spec.lb_pair:
        captions.insert(0, Text(lb_client.describe_pair(spec, lb_client.vrrp_views(client, spec))))
    table.caption = Text("\n").join(captions) if captions else None
    return table


def watch_lb(spec: LabSpec, interval: float, count: int) -> None:
    address = lb_client.lb_address(spec)
    if address is None:
        output.err.print("this lab has no LB host (no host has lb: true)")
        return
    with (
        httpx.Client(timeout=3) as client,
        Live(snapshot(client, spec, address), console=output.out) as live,
    ):
        shown = 1
        while count == 0 or shown < count:
            time.sleep(interval)
            live.update(snapshot(client, spec, address))
            shown += 1
