"""`labctl verify`: the lab is what the spec says, seen from the outside.

Every Consul member alive with the role the spec gives it, a leader elected,
every declared demo instance registered and passing, each instance answering
its own `<h1>` line on its address, requests through the LB reaching every
passing instance and no other, and the LB's configuration passing `nginx -t`.
Queries go from the control machine to the hosts' private addresses (httpx);
`nginx -t` runs over SSH.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from labctl import lb, security
from labctl.inventory import SshData
from labctl.remote import RemoteError, run
from labctl.spec import CONSUL_HTTP_PORT, LabSpec
from roles.demo_service import DEFAULTS as DEMO_DEFAULTS
from roles.lb import DEFAULTS as LB_DEFAULTS

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


def consul_get(client: httpx.Client, spec: LabSpec, path: str, **params: str) -> httpx.Response:
    """GET `path` (with query `params`) from the first agent that answers, with the lab's
    read token when it has ACLs; raise the last error when none does. Give the query as
    params, never in `path`: httpx rebuilds the URL from `params` and would drop it."""
    error: Exception = RuntimeError("the spec has no Consul agent")
    read_token = security.token(spec, "read")
    headers = {"X-Consul-Token": read_token} if read_token else None
    for host in spec.hosts:
        if host.consul == "none":
            continue
        try:
            url = f"http://{host.address}:{CONSUL_HTTP_PORT}{path}"
            response = client.get(url, params=params or None, headers=headers)
            response.raise_for_status()
            return response
        except httpx.HTTPError as exc:
            error = exc
    raise error


def service_health(client: httpx.Client, spec: LabSpec, service: str) -> list[dict]:
    """Every registered instance of `service` with its checks (/v1/health/service).
    `stale`: any server answers, so the view holds while the cluster has no leader."""
    return consul_get(client, spec, f"/v1/health/service/{service}", stale="").json()


def instance_status(entry: dict) -> str:
    """An instance's worst check status, as Consul aggregates it."""
    statuses = {check["Status"] for check in entry["Checks"]}
    return next((s for s in ("critical", "maintenance", "warning") if s in statuses), "passing")


def _no_leader(spec: LabSpec, members: dict[str, dict]) -> str:
    """Why there is no leader, in one sentence, from the members' view."""
    servers = [h.name for h in spec.consul_servers]
    down = [n for n in servers if members.get(n, {}).get("Status") != 1]
    quorum = len(servers) // 2 + 1
    if not down:
        return "no leader elected yet (every server is alive; an election is under way)"
    return (
        f"no leader: {len(servers) - len(down)} of {len(servers)} Consul servers alive, a "
        f"quorum needs {quorum}, so nothing in Consul can change (the LB keeps serving its last "
        f"configuration) until {' and '.join(down)} {'returns' if len(down) == 1 else 'return'}"
    )


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
        checks.append(Check("leader", "raft", False, f"cannot ask: {exc}"))
    else:
        checks.append(Check("leader", "raft", bool(leader), leader or _no_leader(spec, members)))
    return checks


def instance_checks(client: httpx.Client, spec: LabSpec, entries: list[dict]) -> list[Check]:
    checks = []
    registered = {entry["Service"]["ID"]: entry for entry in entries}
    for instance in spec.demo_instances():
        entry = registered.get(instance.id)
        if entry is None:
            checks.append(Check("registered", instance.id, False, "not in the catalog"))
        else:
            service = entry["Service"]
            where = f"{service['Address']}:{service['Port']}"
            status = instance_status(entry)
            ok = where == f"{instance.address}:{instance.port}" and status == "passing"
            checks.append(Check("registered", instance.id, ok, f"{where} {status}"))
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
    client: httpx.Client,
    spec: LabSpec,
    entries: list[dict],
    connections: dict[str, SshData] | None,
) -> list[Check]:
    """Requests through the LB reach every passing instance and no other: an instance
    that is registered but not passing must get no traffic (it is rightly out)."""
    address = lb.lb_address(spec)
    if address is None:
        return []
    checks = []
    status = {entry["Service"]["ID"]: instance_status(entry) for entry in entries}
    seen = lb.sample(client, address, SERVICE_NAME, LB_SAMPLE)
    for instance, state in sorted(status.items()):
        count = seen.pop(instance, 0)
        if state == "passing":
            checks.append(Check("via LB", instance, count > 0, f"{count}/{LB_SAMPLE} requests"))
        elif count:
            detail = f"{count}/{LB_SAMPLE} requests reached it although it is {state}"
            checks.append(Check("via LB", instance, False, detail))
        else:
            detail = f"no traffic: {state}, rightly out of the LB"
            checks.append(Check("via LB", instance, True, detail))
    if seen or "passing" not in status.values():
        detail = ", ".join(f"{k}: {v}" for k, v in seen.items()) or "no passing instance"
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
        checks = consul_checks(client, spec)
        try:
            entries = service_health(client, spec, SERVICE_NAME)
        except (httpx.HTTPError, RuntimeError) as exc:
            unlisted = Check("service", SERVICE_NAME, False, f"cannot list instances: {exc}")
            return [*checks, unlisted]
        return (
            checks
            + instance_checks(client, spec, entries)
            + lb_checks(client, spec, entries, connections)
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
