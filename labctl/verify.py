"""`labctl verify`: the lab is what the spec says, seen from the outside.

Every Consul member alive with the role the spec gives it, a leader elected; for
every service of the spec, every declared instance registered and passing, each
instance answering its own `<h1>` line on its address, requests through the LB's
`/<service>` reaching every passing instance and no other; no instance the lab
registered that the spec no longer has; and the LB's configuration passing
`nginx -t`, with a failing row when nginx did not take the latest render (its
reload failed: lb-health says why). With several LBs sharing an address: exactly one
holds it (two is split brain, named in one sentence), each keepalived is MASTER or
BACKUP, and every LB runs the same upstreams. Queries go from the control machine to the
hosts' private addresses (httpx); `nginx -t` and lb-health run over SSH.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from labctl import lb_client, security
from labctl.remote import RemoteError, SshData, run
from labctl.spec import LabSpec
from roles.contract import (
    CONSUL_HTTP_PORT,
    DEMO_SERVICE_ROLE,
    LB_CONTAINER,
    MANAGED_BY_META,
    REGISTRATOR_REGISTRATION,
)

# The service IDs registrator gives (`<hostname>:<container>:<port>`), as its -cleanup
# reads them (bridge.go's pattern): the container's name is what the lab knows it by.
REGISTRATOR_ID_RE = re.compile(r"^(.+?):([a-zA-Z0-9][a-zA-Z0-9_.-]+):[0-9]+(?::udp)?$")
BY_REGISTRATOR = "not in the spec, registered by registrator"

# Consul's serf member status codes.
MEMBER_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}
LB_SAMPLE = 30
# Consul's check statuses but passing, the worst first (how Consul aggregates them).
NOT_PASSING = ("critical", "maintenance", "warning")
# The LB row of a service none of whose instances passes (lb_checks).
NO_PASSING_INSTANCE = "no passing instance"
# Between two rounds of `verify --wait`: a round is a few dozen local requests, and
# what it waits for (a check's first pass, a render) lands at any moment.
VERIFY_INTERVAL = 0.5
# The longest one wait of `verify --wait` for Consul's view of the checks to change,
# when that is all a round waits for (a blocking query: the change ends it at once).
HEALTH_CHANGE_WAIT = 10.0


@dataclass
class Check:
    what: str
    target: str
    ok: bool
    detail: str
    service: str = ""  # the service it is about; "" for the lab's own parts


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
    return next((s for s in NOT_PASSING if s in statuses), "passing")


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


def registration_mode(spec: LabSpec, service: str) -> str:
    """Who registers `service`'s instances: the spec's registration, or for a service
    the spec does not have, nobody it names ("")."""
    return next((s.registration for s in spec.services if s.name == service), "")


def instance_name(entry: dict, mode: str) -> str:
    """What the lab calls a registered instance: its ID, or for registrator's, the
    container's name (the instance ID, the DEMO_ID it answers with)."""
    sid = entry["Service"]["ID"]
    match = REGISTRATOR_ID_RE.match(sid) if mode == REGISTRATOR_REGISTRATION else None
    return match.group(2) if match else sid


def by_registrator(spec: LabSpec, name: str, entries: list[dict]) -> list[dict]:
    """The instances of the service `name` that registrator registered and the spec does
    not declare (started by hand): a person's, not the lab's to judge or remove."""
    if registration_mode(spec, name) != REGISTRATOR_REGISTRATION:
        return []
    declared = {i.id for i in spec.instances() if i.service == name}
    return [
        entry
        for entry in entries
        if REGISTRATOR_ID_RE.match(entry["Service"]["ID"])
        and instance_name(entry, REGISTRATOR_REGISTRATION) not in declared
    ]


def registrator_instances(spec: LabSpec) -> list[dict]:
    """Every instance of the spec's registrator-mode services that registrator registered
    and the spec does not declare: {"service", "id", "address", "status"}. Asks Consul
    only when the spec has such a service; an agent that cannot say raises."""
    found = []
    with httpx.Client(timeout=5.0) as client:
        for name in spec.registrator_services():
            for entry in by_registrator(spec, name, service_health(client, spec, name)):
                registered = entry["Service"]
                found.append({
                    "service": name,
                    "id": registered["ID"],
                    "address": f"{registered['Address']}:{registered['Port']}",
                    "status": instance_status(entry),
                })  # fmt: skip
    return found


def instance_checks(
    client: httpx.Client, spec: LabSpec, name: str, entries: list[dict]
) -> list[Check]:
    """Each instance of the service `name` the spec declares is registered where it runs,
    passes, and answers its own line; no other instance of it is registered, but those
    registrator registered from a container someone started, which are listed."""
    checks = []
    mode = registration_mode(spec, name)
    registered = {instance_name(entry, mode): entry for entry in entries}
    declared = [i for i in spec.instances() if i.service == name]
    for instance in declared:
        entry = registered.get(instance.id)
        if entry is None:
            checks.append(Check("registered", instance.id, False, "not in the catalog", name))
        else:
            where = f"{entry['Service']['Address']}:{entry['Service']['Port']}"
            status = instance_status(entry)
            ok = where == f"{instance.address}:{instance.port}" and status == "passing"
            checks.append(Check("registered", instance.id, ok, f"{where} {status}", name))
        expected = f"<h1>{instance.title} #IP:{instance.address}</h1>"
        try:
            body = client.get(f"http://{instance.address}:{instance.port}/").text
        except httpx.HTTPError as exc:
            error = str(exc) or type(exc).__name__
            checks.append(Check("answers", instance.id, False, error, name))
        else:
            checks.append(Check("answers", instance.id, body.strip() == expected, body.strip(),
                                name))  # fmt: skip
    hand_started = {e["Service"]["ID"] for e in by_registrator(spec, name, entries)}
    if hand_started:
        detail = f"{BY_REGISTRATOR}: {', '.join(sorted(hand_started))}"
        checks.append(Check("registered", "by registrator", True, detail, name))
    extra = sorted(
        key
        for key, entry in registered.items()
        if key not in {i.id for i in declared} and entry["Service"]["ID"] not in hand_started
    )
    if extra:
        detail = f"not in the spec: {', '.join(extra)}"
        checks.append(Check("registered", "extra", False, detail, name))
    return checks


def lb_checks(
    client: httpx.Client, spec: LabSpec, service: str, entries: list[dict]
) -> list[Check]:
    """Requests through the LB's /<service> reach every passing instance and no other: an
    instance that is registered but not passing must get no traffic (it is rightly out)."""
    address = lb_client.lb_address(spec)
    if address is None or not (entries or any(spec.service_counts(service).values())):
        return []  # no instance declared or registered: no upstream, no location
    checks = []
    mode = registration_mode(spec, service)
    status = {instance_name(entry, mode): instance_status(entry) for entry in entries}
    seen = lb_client.sample(client, address, service, LB_SAMPLE)
    for instance, state in sorted(status.items()):
        count = seen.pop(instance, 0)
        if state == "passing":
            detail = f"{count}/{LB_SAMPLE} requests"
            checks.append(Check("via LB", instance, count > 0, detail, service))
        elif count:
            detail = f"{count}/{LB_SAMPLE} requests reached it although it is {state}"
            checks.append(Check("via LB", instance, False, detail, service))
        else:
            detail = f"no traffic: {state}, rightly out of the LB"
            checks.append(Check("via LB", instance, True, detail, service))
    if seen or "passing" not in status.values():
        detail = ", ".join(f"{k}: {v}" for k, v in seen.items())
        if "passing" not in status.values():  # the LB answers from its placeholder alone
            detail = f"{NO_PASSING_INSTANCE}; {detail}" if detail else NO_PASSING_INSTANCE
        checks.append(Check("via LB", "other answers", False, detail, service))
    return checks


def removed_service_checks(client: httpx.Client, spec: LabSpec) -> list[Check]:
    """Services the lab registered (Meta.lab_managed) that the spec no longer has."""
    declared = {s.name for s in spec.services}
    try:
        names = consul_get(client, spec, "/v1/catalog/services", stale="").json()
    except (httpx.HTTPError, RuntimeError) as exc:
        return [Check("services", "catalog", False, f"cannot list services: {exc}")]
    checks = []
    for name in sorted(set(names) - declared - {"consul"}):
        try:
            entries = service_health(client, spec, name)
        except (httpx.HTTPError, RuntimeError) as exc:
            checks.append(Check("service", name, False, f"cannot list instances: {exc}", name))
            continue
        ids = [
            e["Service"]["ID"]
            for e in entries
            if e["Service"].get("Meta", {}).get(MANAGED_BY_META) == DEMO_SERVICE_ROLE
        ]
        if ids:
            detail = f"not in the spec, still registered: {', '.join(sorted(ids))}"
            checks.append(Check("registered", "removed service", False, detail, name))
    return checks


def pair_checks(
    client: httpx.Client, spec: LabSpec, connections: dict[str, SshData] | None
) -> list[Check]:
    """With several LBs: exactly one holds the shared address (asked of every LB host's
    kernel where labctl reaches them, else of their keepalived records), every LB's
    keepalived is MASTER or BACKUP (FAULT: its nginx does not serve), and every LB runs
    the same upstreams as the holder."""
    views = lb_client.vrrp_views(client, spec, connections)
    if not views:
        return []
    checks = []
    for view in views:
        ok = view.state in ("MASTER", "BACKUP")
        detail = view.state + (f", priority {view.priority}" if view.priority is not None else "")
        if view.holds is not None:
            detail += ", holds the address" if view.holds else ", does not hold the address"
        if view.state == "FAULT":
            detail += " (its nginx does not serve: keepalived gave the address up)"
        checks.append(Check("keepalived", view.host, ok, detail))
    held = lb_client.holders(views)
    if len(held) > 1:
        checks.append(
            Check("LB address", spec.lb_address, False, lb_client.split_brain(spec, held))
        )
    elif held:
        checks.append(Check("LB address", spec.lb_address, True, f"held by {held[0]}"))
    else:
        detail = "no LB holds it; see `labctl status` and each LB's keepalived log"
        checks.append(Check("LB address", spec.lb_address, False, detail))
    reference = None
    for host in spec.lb_hosts:
        try:
            upstreams = lb_client.read_lb_record(client, str(host.address)).upstreams
        except httpx.HTTPError as exc:
            checks.append(Check("LB upstreams", host.name, False, f"no answer: {exc}"))
            continue
        if reference is None:
            reference = (host.name, upstreams)
            detail = f"{sum(map(len, upstreams.values()))} servers"
            checks.append(Check("LB upstreams", host.name, True, detail))
        else:
            same = upstreams == reference[1]
            detail = f"the same as {reference[0]}'s" if same else (
                f"differ from {reference[0]}'s: {upstreams} against {reference[1]}")  # fmt: skip
            checks.append(Check("LB upstreams", host.name, same, detail))
    return checks


def nginx_checks(spec: LabSpec, connections: dict[str, SshData] | None) -> list[Check]:
    """On every LB host: the configuration the LB runs passes `nginx -t`, and nginx took
    the latest render (templates/lb/lb-health's reload_failed; a row only when it did not)."""
    return [
        check
        for host in spec.lb_hosts
        if connections and host.name in connections
        for check in _nginx_checks_on(host.name, connections[host.name])
    ]


def _nginx_checks_on(lb_host: str, connection: SshData) -> list[Check]:
    container = LB_CONTAINER
    try:
        code, output = run(connection, f"docker exec {container} nginx -t", sudo=True)
        _, health = run(connection, f"docker exec {container} lb-health", sudo=True)
    except RemoteError as exc:
        return [Check("nginx -t", lb_host, False, str(exc))]
    last = output.strip().splitlines()[-1:] or [""]
    checks = [Check("nginx -t", lb_host, code == 0, last[0])]
    try:
        reload_failed = json.loads(health).get("reload_failed")
    except (ValueError, AttributeError):
        reload_failed = None  # no LB container answering: the LB checks above say so
    if reload_failed:
        detail = f"nginx did not take the latest render ({reload_failed}); `labctl apply`"
        checks.append(Check("nginx reload", lb_host, False, detail))
    return checks


def verify(spec: LabSpec, connections: dict[str, SshData] | None = None) -> list[Check]:
    with httpx.Client(timeout=5.0) as client:
        checks = consul_checks(client, spec)
        for service in spec.services:
            try:
                entries = service_health(client, spec, service.name)
            except (httpx.HTTPError, RuntimeError) as exc:
                detail = f"cannot list instances: {exc}"
                checks.append(Check("service", service.name, False, detail, service.name))
                continue
            checks += instance_checks(client, spec, service.name, entries)
            checks += lb_checks(client, spec, service.name, entries)
        checks += removed_service_checks(client, spec)
        checks += pair_checks(client, spec, connections)
    return checks + nginx_checks(spec, connections)


def verify_until(
    spec: LabSpec,
    deadline_s: float,
    on_attempt: Callable[[list[Check]], None] = lambda c: None,
    connections: dict[str, SshData] | None = None,
) -> list[Check]:
    """Verify, again and again until everything passes or the deadline passes.

    A fresh lab needs a few check intervals before every instance passes: while that is
    all that fails, the next round starts when Consul's view of the checks changes (a
    blocking query on the index read before this round), not on a timer.
    """
    deadline = time.monotonic() + deadline_s
    with httpx.Client(timeout=HEALTH_CHANGE_WAIT + 5) as client:
        while True:
            index = health_index(client, spec)
            checks = verify(spec, connections)
            on_attempt(checks)
            left = deadline - time.monotonic()
            if all(c.ok for c in checks) or left <= 0:
                return checks
            if index and all(awaits_health(c) for c in checks if not c.ok):
                health_index(client, spec, after=index, wait=min(left, HEALTH_CHANGE_WAIT))
            else:
                time.sleep(VERIFY_INTERVAL)


def awaits_health(check: Check) -> bool:
    """A registered instance whose checks do not pass (instance_checks' row, detail
    "<address>:<port> <status>"), or a service with no passing instance to route to (the
    LB's row): only Consul's view of the checks can change that."""
    if check.what == "via LB":
        return check.detail.startswith(NO_PASSING_INSTANCE)
    return check.what == "registered" and check.detail.rsplit(" ", 1)[-1] in NOT_PASSING


def health_index(
    client: httpx.Client, spec: LabSpec, after: str | None = None, wait: float = 0
) -> str | None:
    """Consul's index of the checks' state; with `after`, once it moved past that or
    `wait` seconds passed (a blocking query, as consul-template waits). None when no
    agent answers: the rounds then go on a timer."""
    params = {"index": after, "wait": f"{max(1, round(wait))}s"} if after else {}
    try:
        response = consul_get(client, spec, "/v1/health/state/any", stale="", **params)
    except (httpx.HTTPError, RuntimeError):
        return None
    return response.headers.get("X-Consul-Index")
