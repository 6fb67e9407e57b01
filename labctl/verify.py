"""`labctl verify`: the lab is what the spec says, seen from the outside.

Every Consul member alive with the role the spec gives it, a leader elected,
every declared demo instance registered and passing, each instance answering
its own `<h1>` line on its address, requests through the LB reaching every
passing instance, and the LB's configuration passing `nginx -t`. Queries go
from the control machine to the hosts' private addresses (httpx); `nginx -t`
runs over SSH.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from labctl import lb
from labctl.inventory import SshData
from labctl.remote import RemoteError, run
from labctl.spec import LabSpec
from roles.demo_service import DEFAULTS as DEMO_DEFAULTS
from roles.lb import DEFAULTS as LB_DEFAULTS

CONSUL_HTTP_PORT = 8500
SERVICE_NAME = DEMO_DEFAULTS["demo_service_name"]
# Consul's serf member status codes.
MEMBER_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}
LB_SAMPLE = 30


@dataclass
class Check:
    what: str
    target: str
    ok: bool
    detail: str


def consul_get(client: httpx.Client, spec: LabSpec, path: str, **params) -> httpx.Response:
    """GET from the first agent that answers; raise the last error when none does."""
    error: Exception = RuntimeError("the spec has no Consul agent")
    for host in spec.hosts:
        if host.consul == "none":
            continue
        try:
            response = client.get(f"http://{host.address}:{CONSUL_HTTP_PORT}{path}", params=params)
            response.raise_for_status()
            return response
        except httpx.HTTPError as exc:
            error = exc
    raise error


def consul_checks(client: httpx.Client, spec: LabSpec) -> list[Check]:
    checks = []
    try:
        members = {m["Name"]: m for m in consul_get(client, spec, "/v1/agent/members").json()}
    except (httpx.HTTPError, RuntimeError) as exc:
        return [Check("consul", "agents", False, f"no agent answers: {exc}")]
    for host in spec.hosts:
        if host.consul == "none":
            continue
        member = members.get(host.name)
        if member is None:
            checks.append(Check("member", host.name, False, "not in the cluster"))
            continue
        status = MEMBER_STATUS.get(member["Status"], str(member["Status"]))
        role = "server" if member.get("Tags", {}).get("role") == "consul" else "client"
        ok = status == "alive" and role == host.consul
        checks.append(Check("member", host.name, ok, f"{status}, {role}"))
    try:
        leader = consul_get(client, spec, "/v1/status/leader").json()
    except httpx.HTTPError as exc:
        leader = ""
        checks.append(Check("leader", "raft", False, f"cannot ask: {exc}"))
    else:
        checks.append(Check("leader", "raft", bool(leader), leader or "no leader elected"))
    return checks


def instance_checks(client: httpx.Client, spec: LabSpec) -> list[Check]:
    checks = []
    try:
        entries = consul_get(client, spec, f"/v1/health/service/{SERVICE_NAME}").json()
    except (httpx.HTTPError, RuntimeError) as exc:
        return [Check("service", SERVICE_NAME, False, f"cannot list instances: {exc}")]
    registered = {entry["Service"]["ID"]: entry for entry in entries}
    for instance in spec.demo_instances():
        entry = registered.get(instance.id)
        if entry is None:
            checks.append(Check("registered", instance.id, False, "not in the catalog"))
        else:
            service = entry["Service"]
            where = f"{service['Address']}:{service['Port']}"
            states = sorted({c["Status"] for c in entry["Checks"]})
            ok = where == f"{instance.address}:{instance.port}" and states == ["passing"]
            checks.append(Check("registered", instance.id, ok, f"{where} {'/'.join(states)}"))
        expected = f"<h1>{instance.title} #IP:{instance.address}</h1>"
        try:
            body = client.get(f"http://{instance.address}:{instance.port}/").text
        except httpx.HTTPError as exc:
            checks.append(Check("answers", instance.id, False, str(exc) or type(exc).__name__))
        else:
            checks.append(Check("answers", instance.id, body.strip() == expected, body.strip()))
    extra = sorted(set(registered) - {i.id for i in spec.demo_instances()})
    if extra:
        checks.append(Check("registered", "extra", False, f"not in the spec: {', '.join(extra)}"))
    return checks


def lb_checks(
    client: httpx.Client, spec: LabSpec, connections: dict[str, SshData] | None
) -> list[Check]:
    address = lb.lb_address(spec)
    if address is None:
        return []
    checks = []
    try:
        entries = consul_get(client, spec, f"/v1/health/service/{SERVICE_NAME}?passing").json()
        passing = sorted(e["Service"]["ID"] for e in entries)
    except (httpx.HTTPError, RuntimeError):
        passing = []
    seen = lb.sample(client, address, SERVICE_NAME, LB_SAMPLE)
    for instance in passing:
        checks.append(
            Check("via LB", instance, seen[instance] > 0, f"{seen[instance]}/{LB_SAMPLE} requests")
        )
    failures = {k: v for k, v in seen.items() if k not in passing}
    if failures or not passing:
        detail = ", ".join(f"{k}: {v}" for k, v in failures.items()) or "no passing instance"
        checks.append(Check("via LB", "other answers", False, detail))
    lb_host = next(h.name for h in spec.hosts if h.lb)
    if connections and lb_host in connections:
        command = f"docker exec {LB_DEFAULTS['lb_container_name']} nginx -t"
        try:
            code, output = run(connections[lb_host], command, sudo=True)
            last = output.strip().splitlines()[-1:] or [""]
            checks.append(Check("nginx -t", lb_host, code == 0, last[0]))
        except RemoteError as exc:
            checks.append(Check("nginx -t", lb_host, False, str(exc)))
    return checks


def verify(spec: LabSpec, connections: dict[str, SshData] | None = None) -> list[Check]:
    with httpx.Client(timeout=5.0) as client:
        return (
            consul_checks(client, spec)
            + instance_checks(client, spec)
            + lb_checks(client, spec, connections)
        )


def verify_until(
    spec: LabSpec,
    deadline_s: float,
    on_attempt: Callable[[list[Check]], None] = lambda c: None,
    connections: dict[str, SshData] | None = None,
) -> list[Check]:
    """Verify, again and again until everything passes or the deadline passes.

    A fresh lab needs a few check intervals before every instance passes.
    """
    deadline = time.monotonic() + deadline_s
    while True:
        checks = verify(spec, connections)
        on_attempt(checks)
        if all(c.ok for c in checks) or time.monotonic() >= deadline:
            return checks
        time.sleep(2)
