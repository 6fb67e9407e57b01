"""The lab's services: the spec's `services` section, the instances it declares, and
the checks that keep a service from being one Consul, consul-template or nginx refuses.

Every service gets its own upstream and `location /<name>` on the LB with no nginx edit:
the LB's template ranges over Consul's services (templates/lb/service.ctmpl). A service
runs `instances` demo containers per host, instance k on a host listening on
`port + k - 1`. The first service also takes the hosts' `demo` counts, so a spec without
a `services` section is the seed's: one service, zhibo_service, on 8080.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from pydantic import Field, model_validator

from labctl.spec_types import HIGHEST_PORT, Host, StrictModel
from roles.contract import CONSUL_HTTP_PORT, ServiceInstance

# The seed's service. A service of this name keeps the seed's tags, and its instances
# keep the seed's IDs (zhibo-n, zhibo-n-k) and titles (直播服务API{n}): the seed and the
# lab's tests rely on them.
SEED_SERVICE = "zhibo_service"
SEED_TAGS = ("primary", "v2")
SEED_ID_PREFIX = "zhibo"
SEED_TITLE = "直播服务API"
# The seed's live-stream API listens on 8080; more instances on one host take the next ports.
DEFAULT_BASE_PORT = 8080

# Consul's own ports on every agent host (server RPC, serf LAN and WAN, HTTP, DNS).
CONSUL_PORTS = {8300: "server RPC", 8301: "serf LAN", 8302: "serf WAN",
                CONSUL_HTTP_PORT: "HTTP", 8600: "DNS"}  # fmt: skip
# Instances run as an unprivileged user on the host's network (--net=host), where ports
# below 1024 need root; the LB's own 80 is among them.
LOWEST_PORT = 1024

# Consul accepts almost any service name (it warns when DNS cannot serve it); what binds
# the lab is the rest of the road: consul-template reads `.` in `service "tag.name"` as a
# tag separator (hashicorp/consul-template#1205) and `@`, `~`, `|` as datacenter, near and
# filter; nginx takes the name as an upstream (case-insensitive) and as `location /<name>`
# and `proxy_pass http://<name>`. Lowercase, digits, `-` and `_` pass all of them.
SERVICE_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
# Names the LB already uses: Consul's own service (left out of the LB), the stub_status page.
RESERVED_NAMES = {
    "consul": "Consul's own service, which the LB leaves out",
    "stub_status": "the LB's own location /stub_status",
}
# Go's time.ParseDuration, which Consul's check definitions go through (agent/structs
# check_type.go, CheckType.UnmarshalJSON): `[-+]` then one or more `<decimal><unit>`, or
# a bare "0"; more than int64 nanoseconds is an error ("invalid duration").
DURATION_UNITS_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6,
                     "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}  # fmt: skip
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
GO_DURATION_MAX_NS = 2**63 - 1
# Consul runs an HTTP check at most once a second: a shorter interval is raised to it with
# only a warning in the agent's log (agent/checks/check.go MinInterval; agent/agent.go
# addCheck), and an interval of 0 is refused ("Interval must be > 0 for Script, HTTP, ...
# checks", agent/structs/check_type.go CheckType.Validate).
CHECK_MIN_INTERVAL_NS = 10**9
# Consul deregisters a critical service no sooner than a minute: a shorter
# DeregisterCriticalServiceAfter is raised to it with a warning in the agent's log
# (check_deregister_interval_min = "1m", agent/config/default.go; agent/agent.go addCheck);
# 0 turns deregistration off.
CHECK_MIN_DEREGISTER_NS = 60 * 10**9
# The check's target is `http://<address>:<port><path>`: an RFC 3986 path (and query),
# which Go's url.Parse takes as written (no space, no control character, no fragment).
CHECK_PATH_RE = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*$")


def go_duration_ns(text: str) -> int | None:
    """`text` in nanoseconds as Go's time.ParseDuration reads it; None where Go refuses it."""
    sign, rest = (-1, text[1:]) if text[:1] == "-" else (1, text.removeprefix("+"))
    if rest == "0":
        return 0
    total, pos = 0, 0
    while pos < len(rest):
        part = _DURATION_PART.match(rest, pos)
        if part is None:
            return None
        number, unit = part.groups()
        whole, _, fraction = number.partition(".")
        scale = DURATION_UNITS_NS[unit]
        total += int(whole or 0) * scale + int(fraction or 0) * scale // 10 ** len(fraction)
        pos = part.end()
    if not rest or total > GO_DURATION_MAX_NS:
        return None
    return sign * total


class ServiceCheck(StrictModel):
    """The HTTP health check every instance is registered with (the seed's settings)."""

    path: str = "/health"
    interval: str = "10s"
    timeout: str = "5s"
    # Consul removes an instance whose check stays critical this long (0s: never).
    deregister_critical_after: str = "90m"


class Service(StrictModel):
    name: str
    tags: list[str] = Field(default_factory=list)
    # Instance k on a host listens on port + k - 1.
    port: int = DEFAULT_BASE_PORT
    # Host name -> instances there. Unset on the first service: the hosts' `demo` counts.
    instances: dict[str, int] | None = None
    check: ServiceCheck = ServiceCheck()

    @model_validator(mode="before")
    @classmethod
    def _seed_tags(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("name") == SEED_SERVICE:
            return {"tags": list(SEED_TAGS)} | data
        return data

    @property
    def id_prefix(self) -> str:
        """Instance IDs (and container names) are `<prefix>-<n>[-<k>]`."""
        return SEED_ID_PREFIX if self.name == SEED_SERVICE else self.name.replace("_", "-")

    @property
    def title(self) -> str:
        """What instance n[-k] calls itself in its `<h1>` line: the seed's 直播服务API{n},
        or the service's own name."""
        return SEED_TITLE if self.name == SEED_SERVICE else f"{self.name} "


def counts(services: Sequence[Service], hosts: Sequence[Host], index: int) -> dict[str, int]:
    """Host name -> instances of services[index]: its `instances`, or for the first
    service without them, the hosts' `demo` counts."""
    service = services[index]
    if service.instances is not None:
        return dict(service.instances)
    if index == 0:
        return {h.name: h.first_service_count for h in hosts}
    return {}


def instances(services: Sequence[Service], hosts: Sequence[Host]) -> list[ServiceInstance]:
    """Every instance the services declare, service by service in spec order. IDs and
    ports depend only on the host's position and the instance's index on it, so changing
    one host's count leaves every other instance as it is."""
    found = []
    for index, service in enumerate(services):
        per_host = counts(services, hosts, index)
        for n, host in enumerate(hosts, start=1):
            for k in range(1, per_host.get(host.name, 0) + 1):
                suffix = "" if k == 1 else f"-{k}"
                found.append(
                    ServiceInstance(
                        service=service.name,
                        host=host.name,
                        address=str(host.address),
                        id=f"{service.id_prefix}-{n}{suffix}",
                        title=f"{service.title}{n}{suffix}",
                        port=service.port + k - 1,
                    )
                )
    return found


# --- validation ----------------------------------------------------------------------


def problems(services: Sequence[Service], hosts: Sequence[Host], source: str) -> list[str]:
    """One sentence per way the services would fail on these hosts."""
    found = list(_naming_problems(services, source))
    found += _count_problems(services, hosts, source)
    found += _check_problems(services, source)
    if not found:  # port ranges need valid counts
        found += _port_problems(services, hosts, source)
    return found


def _naming_problems(services: Sequence[Service], source: str) -> Iterator[str]:
    seen: dict[str, int] = {}
    for i, service in enumerate(services):
        where, name = f"{source}: services[{i}].name", service.name
        if not SERVICE_NAME_RE.match(name):
            yield (
                f"{where} = {name!r} must be 1-63 lowercase letters, digits, '-' or '_', "
                "starting with a letter and ending with a letter or digit: Consul, "
                "consul-template (which reads '.' as a tag separator) and nginx (an upstream "
                "and location /<name>) all take it."
            )
        elif name in RESERVED_NAMES:
            yield f"{where} {name!r} is {RESERVED_NAMES[name]}; pick another name."
        if name in seen:
            yield (
                f"{where} {name!r} is already used by services[{seen[name]}]; "
                "give every service its own name."
            )
        seen.setdefault(name, i)
    for i, a in enumerate(services):
        for j in range(i + 1, len(services)):
            b = services[j]
            if a.name != b.name and _ids_can_clash(a.id_prefix, b.id_prefix):
                yield (
                    f"{source}: services[{i}] ({a.name}) and services[{j}] ({b.name}) would "
                    f"give their instances the same IDs ({a.id_prefix}-… and {b.id_prefix}-…); "
                    "rename one."
                )


def _ids_can_clash(a: str, b: str) -> bool:
    """Whether `<a>-n[-k]` and `<b>-n[-k]` can be equal: a == b, or one is the other
    followed by `-<n>` (a-1-2 is instance 2 on host 1 of `a`, and host 2 of `a-1`)."""
    return a == b or any(re.fullmatch(re.escape(y) + r"-\d+", x) for x, y in ((a, b), (b, a)))


def _count_problems(
    services: Sequence[Service], hosts: Sequence[Host], source: str
) -> Iterator[str]:
    by_name = {h.name: h for h in hosts}
    demo_hosts = [h.name for h in hosts if h.first_service_count]
    if not services:
        if demo_hosts:
            yield (
                f"{source}: hosts {', '.join(demo_hosts)} have demo counts but services is "
                "empty; demo counts are the first service's instances: add a service or set "
                "demo: 0."
            )
        return
    if services[0].instances is not None and demo_hosts:
        yield (
            f"{source}: services[0] ({services[0].name}) has instances and hosts "
            f"{', '.join(demo_hosts)} have demo counts, which are that service's too; keep "
            "one of the two."
        )
    for i, service in enumerate(services):
        for host, count in (service.instances or {}).items():
            where = f"{source}: services[{i}].instances.{host}"
            if host not in by_name:
                yield (
                    f"{where} names a host that is not in hosts; use one of "
                    f"{', '.join(by_name)}."
                )
            elif count < 0:
                yield f"{where} = {count} is below zero; use 0 for no instance there."
            elif count > 0 and by_name[host].consul == "none":
                yield (
                    f"{where} is {count} but that host's consul is 'none'; instances register "
                    "with their own host's Consul agent, so set consul: client there or drop it."
                )


def _check_problems(services: Sequence[Service], source: str) -> Iterator[str]:
    for i, service in enumerate(services):
        check, where = service.check, f"{source}: services[{i}].check"
        if not check.path.startswith("/"):
            yield f"{where}.path = {check.path!r} must start with '/'."
        elif not CHECK_PATH_RE.match(check.path):
            yield (
                f"{where}.path = {check.path!r} is not a URL path; write it with letters, "
                "digits and /-._~!$&'()*+,;=:@%? only (percent-encode anything else)."
            )
        durations = {}
        for field in ("interval", "timeout", "deregister_critical_after"):
            value = getattr(check, field)
            durations[field] = go_duration_ns(value)
            if durations[field] is None:
                yield (
                    f"{where}.{field} = {value!r} is not a duration; write it as Consul does, "
                    "e.g. 10s, 1m30s or 90m (a number and a unit: ns, us, ms, s, m or h)."
                )
            elif durations[field] < 0:
                yield f"{where}.{field} = {value!r} is negative; write a positive duration."
        interval, timeout, deregister = durations.values()
        if interval is not None and 0 <= interval < CHECK_MIN_INTERVAL_NS:
            yield (
                f"{where}.interval = {check.interval!r}: Consul "
                + ("refuses an HTTP check with no interval" if interval == 0 else
                   "runs an HTTP check at most once a second and would silently use 1s")
                + "; write 1s or more."
            )  # fmt: skip
        if timeout == 0:
            yield (
                f"{where}.timeout = {check.timeout!r}: Consul reads a timeout of 0 as its "
                "default of 10s; write the timeout you mean, e.g. 5s."
            )
        if deregister is not None and 0 < deregister < CHECK_MIN_DEREGISTER_NS:
            yield (
                f"{where}.deregister_critical_after = {check.deregister_critical_after!r}: "
                "Consul deregisters a critical instance no sooner than a minute and would "
                "silently use 1m; write 1m or more (or 0s to never deregister)."
            )


def _port_problems(
    services: Sequence[Service], hosts: Sequence[Host], source: str
) -> Iterator[str]:
    """Ports out of range, on Consul's own, or shared by two services on one host; each
    reported once (for the first host where it happens)."""
    ranges: dict[str, list[tuple[int, int, int]]] = {}  # host -> (service index, first, last)
    reported: set[tuple] = set()
    for i, service in enumerate(services):
        where = f"{source}: services[{i}] ({service.name})"
        if service.port < LOWEST_PORT:
            yield (
                f"{where}.port = {service.port} is below {LOWEST_PORT}: its instances run "
                "unprivileged on the host's network and cannot listen there (80 is the LB's); "
                f"use {LOWEST_PORT}-{HIGHEST_PORT}."
            )
            continue
        if service.port > HIGHEST_PORT:
            yield (
                f"{where}.port = {service.port} is past {HIGHEST_PORT}; "
                f"use {LOWEST_PORT}-{HIGHEST_PORT}."
            )
            continue
        for host, count in counts(services, hosts, i).items():
            if count <= 0:
                continue
            first, last = service.port, service.port + count - 1
            taken = f"its {count} instances on {host} take ports {first}-{last}"
            consul = [p for p in CONSUL_PORTS if first <= p <= last]
            if last > HIGHEST_PORT:
                if (i, "high") not in reported:
                    reported.add((i, "high"))
                    yield f"{where}: {taken}, past {HIGHEST_PORT}; lower its port or the count."
            elif consul and (i, "consul") not in reported:
                reported.add((i, "consul"))
                yield (
                    f"{where}: {taken}, which include Consul's {CONSUL_PORTS[consul[0]]} port "
                    f"{consul[0]}; lower the count or move the service's port."
                )
            for j, other_first, other_last in ranges.get(host, []):
                if first <= other_last and other_first <= last and (j, i) not in reported:
                    reported.add((j, i))
                    yield (
                        f"{where}: {taken}, and services[{j}] ({services[j].name}) listens on "
                        f"{other_first}-{other_last} there; give one of them another port."
                    )
            ranges.setdefault(host, []).append((i, first, last))
