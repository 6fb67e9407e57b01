"""Operating a running lab: scale any of its services, fail and recover instances or hosts.

`scale` records the new per-host counts of one service in the lab's state
(.lab/<name>/state.json); they override the spec's counts of that service for `apply`,
`verify` and `status` until the next `scale` of it or `down`. A graceful scale-down takes
instances out of Consul first, waits until the LB no longer routes to them, and only then
stops them (role demo_service).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx

from labctl import connections, lb_client, system, vagrant
from labctl import services as lab_services
from labctl.converge import ConvergeResult
from labctl.lifecycle import LifecycleError, apply
from labctl.paths import (
    host_container_name,
    read_state,
    record_counts,
    with_state,
)
from labctl.remote import RemoteError, run
from labctl.services import Service
from labctl.spec import LabSpec, SpecError, validate
from roles.contract import (
    LAB_LABEL,
    LB_CONTAINER,
    VRRP_HANDOVER_SECONDS,
    VRRP_READY_COMMAND,
    VRRP_UNDRAIN_COMMAND,
    lb_serves_again_command,
    vrrp_drain_command,
    vrrp_outranked_command,
)

Report = Callable[[str], None]
LB_FOLLOW_DEADLINE = 60.0


# `scale SERVICE=N`: N in ASCII digits (int() would also take '٣' and fail on '²').
SCALE_RE = re.compile(r"^([^=]+)=([0-9]+)$")


def spread(spec: LabSpec, service: str, total: int) -> dict[str, int]:
    """`total` instances of `service` over the hosts the spec runs it on (round-robin, spec
    order); over every Consul agent host when the spec runs it nowhere."""
    hosts = _spread_over(spec, service)
    counts = dict.fromkeys((h.name for h in spec.hosts), 0)
    each, extra = divmod(total, len(hosts)) if hosts else (0, 0)
    for i, host in enumerate(hosts):
        counts[host] = each + (i < extra)
    return counts


def _spread_over(spec: LabSpec, service: str) -> list[str]:
    declared = spec.service_counts(service)
    return [h.name for h in spec.hosts if declared[h.name] > 0] or [
        h.name for h in spec.hosts if h.consul != "none"
    ]


def _known_service(spec: LabSpec, service: str) -> Service:
    for known in spec.services:
        if known.name == service:
            return known
    names = ", ".join(s.name for s in spec.services) or "no service (its spec lists none)"
    raise SpecError([f"unknown service {service!r}; the lab runs {names}."])


def scale_request(spec: LabSpec, assignment: str) -> tuple[str, int]:
    """The service and count of `scale SERVICE=N`, checked against the spec before anything
    is done: a known service, and a count whose instances fit the hosts' ports (the
    count is compared as written, so no number is too large to be refused at once)."""
    match = SCALE_RE.match(assignment)
    if match is None:
        raise SpecError([f"{assignment!r} is not SERVICE=N with N a whole number; write e.g. "
                         "zhibo_service=5."])  # fmt: skip
    service, count = match.groups()
    port = _known_service(spec, service).port
    hosts = len(_spread_over(spec, service))
    most = max(lab_services.HIGHEST_PORT - port + 1, 0) * hosts
    if len(count.lstrip("0")) > len(str(most)) or int(count) > most:
        raise SpecError([
            f"{service}={count}: at most {most} instances fit on its {hosts} hosts (one port "
            f"each, from {port} to {lab_services.HIGHEST_PORT}); ask for fewer."
        ])  # fmt: skip
    return service, int(count)


def wait_for_lb(spec: LabSpec, service: str, expected: set[str], report: Report) -> float:
    """Wait until the LB's upstream for `service` is exactly `expected` (address:port)."""
    address = lb_client.lb_address(spec)
    if address is None:
        return 0.0
    started = time.monotonic()
    with httpx.Client(timeout=5) as client:
        while time.monotonic() - started < LB_FOLLOW_DEADLINE:
            try:
                servers = set(lb_client.read_lb_record(client, address).upstreams.get(service, []))
            except httpx.HTTPError:
                servers = set()
            if servers == expected:
                return time.monotonic() - started
            report(f"LB upstream {len(servers)} servers, waiting for {len(expected)}")
            time.sleep(0.5)
    raise LifecycleError(
        f"the LB did not follow within {LB_FOLLOW_DEADLINE:.0f} s (upstream {sorted(servers)}, "
        f"expected {sorted(expected)}); check `labctl watch` and the lb container's log."
    )


def scale(spec: LabSpec, service: str, total: int, report: Report) -> ConvergeResult:
    """Record the new counts of `service` and converge. Removal is graceful in the role
    itself (out of Consul, out of the LB, then stopped); this waits until the LB runs
    exactly the new set."""
    _known_service(spec, service)
    if total < 0:
        raise SpecError([f"{service}={total}: the count must be 0 or more."])
    counts = spread(spec, service, total)
    scaled = with_state(spec).with_counts(service, counts)
    # The new counts must fit like the spec's: no port past 65535 or on Consul's own.
    problems = validate(scaled, f"scale {service}={total}")
    if problems:
        raise SpecError(problems)
    record_counts(spec, service, counts)
    result = apply(scaled, report)
    wanted = {f"{i.address}:{i.port}" for i in scaled.instances() if i.service == service}
    wait_for_lb(spec, service, wanted, report)
    return result


def _instance(spec: LabSpec, target: str):
    return next((i for i in with_state(spec).instances() if i.id == target), None)


def _remote(spec: LabSpec, host: str, command: str) -> str:
    """Run a Docker command on one of the lab's hosts (sudo where needed); its output."""
    provider = read_state(spec).get("provider") or spec.provider
    (answer,) = connections.run_on_hosts(
        spec, provider, [host], lambda ssh: run(ssh, command, sudo=True)
    ).values()
    if answer is None:
        raise LifecycleError(f"host {host} is not running; `labctl recover {host}` first.")
    if isinstance(answer, RemoteError):
        raise LifecycleError(f"cannot reach {host} ({answer}); check `labctl status`.")
    code, output = answer
    if code != 0:
        raise LifecycleError(f"`{command}` on {host} failed: {output.strip()}")
    return output


def _address_to_the_first_lb(spec: LabSpec) -> None:
    """Once every LB the verb stopped serves again (still drained), the address goes to
    the first LB that serves as at the end of `apply` (roles/lb.py): its holder drained
    towards it, a planned move, then every drain lifted in priority order, which moves
    nothing."""
    lbs = spec.lb_hosts
    for position, lb in enumerate(lbs):
        others = [str(h.address) for h in lbs if h.name != lb.name]
        higher = [str(h.address) for h in lbs[:position]]
        outranked = vrrp_outranked_command(spec.lb_address, higher)
        if higher and _remote(spec, lb.name, outranked).strip():
            drain = vrrp_drain_command(lb.name, spec.lb_address, others, VRRP_HANDOVER_SECONDS)
            _remote(spec, lb.name, drain)
    for lb in lbs:
        _remote(spec, lb.name, VRRP_UNDRAIN_COMMAND)


def _handed_over_and_stopped(spec: LabSpec, target: str) -> None:
    """The LB on `target` stopped once the shared address is with another LB and it has
    finished what it serves (nginx's graceful quit): a planned move."""
    peers = [str(h.address) for h in spec.lb_hosts if h.name != target]
    drain = vrrp_drain_command(target, spec.lb_address, peers, VRRP_HANDOVER_SECONDS)
    _remote(spec, target, f"{drain} && docker stop {LB_CONTAINER}")


def lb_targets(spec: LabSpec, names: list[str]) -> list[str]:
    """The LB hosts `names` asks for (every one when empty), in priority order; SpecError
    for a name that is not an LB host of the lab."""
    lbs = [h.name for h in spec.lb_hosts]
    unknown = list(dict.fromkeys(name for name in names if name not in lbs))
    if unknown:
        named = ", ".join(map(repr, unknown))
        runs = "runs" if len(unknown) == 1 else "run"
        raise SpecError([f"{named} {runs} no LB; use one of {', '.join(lbs)}."])
    return [name for name in lbs if name in names] if names else lbs


def restart_lbs(spec: LabSpec, targets: list[str], report: Report) -> str:
    """Restart the LB container on the LB hosts `targets` (lb_targets), one at a time.
    With one LB that is `docker restart` (nginx away for a moment: nobody to hand over
    to); with several, each hands the shared address over first and gets it back once
    it serves, planned moves both (docs/lb-pair.md)."""
    for target in targets:
        report(f"restart the LB on {target}")
        if spec.lb_pair:
            _handed_over_and_stopped(spec, target)
            _remote(spec, target, f"docker start {LB_CONTAINER} && {VRRP_READY_COMMAND}")
        else:
            _remote(spec, target, f"docker restart {LB_CONTAINER} && {lb_serves_again_command()}")
    if spec.lb_pair:
        _address_to_the_first_lb(spec)
    return f"LB restarted on {', '.join(targets)}"


def _machine_action(spec: LabSpec, target: str, failing: bool) -> str:
    """A machine the lab does not own is not powered off: its lab containers are killed
    (no shutdown, no goodbye from the agents: the host is gone for the others) or started.
    An LB sharing the lab's address hands it over first, and gets it back once it serves
    again, both planned moves (templates/keepalived/vrrp-handover)."""
    listing = "ps -q" if failing else "ps -aq"
    label = f"{LAB_LABEL}={spec.name}"
    verb = "kill" if failing else "start"
    command = f"docker {listing} --filter label={label} | xargs -r docker {verb}"
    pair_lb = spec.lb_pair and target in {h.name for h in spec.lb_hosts}
    if failing and pair_lb:
        # A planned event: the address moves to another LB before this one stops, and the
        # LB finishes what it serves (nginx's graceful quit) before the rest is killed.
        _handed_over_and_stopped(spec, target)
    output = _remote(spec, target, command)
    if not failing and pair_lb:
        _remote(spec, target, VRRP_READY_COMMAND)
        _address_to_the_first_lb(spec)
    count = len(output.split())
    if failing:
        return (
            f"host {target}: {count} lab containers killed (an existing machine is not "
            f"powered off; `labctl recover {target}` starts them)"
        )
    return f"host {target}: {count} lab containers started"


def _host_action(spec: LabSpec, target: str, failing: bool, report: Report) -> str:
    provider = read_state(spec).get("provider")
    if provider == "ssh":
        return _machine_action(spec, target, failing)
    if provider not in vagrant.VAGRANT_PROVIDERS:
        raise LifecycleError(f"lab {spec.name} is not up; run `labctl up` first.")
    v = vagrant.client(spec, provider)
    connections.forget(spec)  # the machine changes: Vagrant is asked after it
    if failing:
        if provider == "docker":
            # Pull the plug: no shutdown, no goodbye from the agents on it.
            engine = system.engine()
            if engine is None:
                raise LifecycleError("no Docker engine answers; start it and retry.")
            engine.containers.get(host_container_name(spec, target)).kill()
        else:
            v.halt(vm_name=vagrant.machine_name(spec, target), force=True)
        connections.refresh(spec, provider)
        return f"host {target} is down"
    report(f"vagrant up {target}")
    v.up(vm_name=vagrant.machine_name(spec, target))
    connections.refresh(spec, provider)
    return f"host {target} is up (its containers restart with it)"


def check_target(spec: LabSpec, target: str) -> None:
    """Raise SpecError unless `target` is an instance or a host of the lab."""
    if _instance(spec, target) is None and target not in {h.name for h in spec.hosts}:
        names = [i.id for i in with_state(spec).instances()] + [h.name for h in spec.hosts]
        raise SpecError([f"unknown target {target!r}; use one of {', '.join(names)}."])


def fail_or_recover(spec: LabSpec, target: str, failing: bool, report: Report) -> str:
    """Crash (or restart) one demo instance, or a whole host: Vagrant's machines are
    powered off (or on), existing machines have their lab containers killed (or started)."""
    check_target(spec, target)
    instance = _instance(spec, target)
    if instance is None:
        return _host_action(spec, target, failing, report)
    _remote(spec, instance.host, f"docker {'kill' if failing else 'start'} {instance.id}")
    return f"instance {instance.id} {'killed' if failing else 'started'} on {instance.host}"
