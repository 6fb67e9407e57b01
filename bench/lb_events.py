"""How fast the dynamic LB follows events, under steady load; prints JSON and a table.

    .venv/bin/python bench/lb_events.py [--workers 4] [--time-limit 600] [--phase-limit 180]
                                        [--keep] [--skip-up]

Uses a lab of its own (name labbench, docker provider, 192.168.62.0/24): three hosts, each a
Consul server, so that losing one host keeps the quorum; the LB on node3 (192.168.62.4); one
demo instance per host. Consul and consul-template are the e2e suite's stand-ins, built
with tests.e2e.conftest.standin_images. The lab is removed (`labctl down`) first, in case an
earlier run left it, then brought up, and removed again at the end, also on Ctrl-C or
SIGTERM (unless --keep).

While it measures, --workers threads GET http://192.168.62.4/zhibo_service in a loop (one
keep-alive client each, 5 s timeout) and log every answer: when it came, which instance
served it (X-Instance) or how it failed (HTTP status other than 200, or the exception).
A watcher reads the LB's /_lab/ state (the upstream nginx runs, the reload counter) and
Consul's checks (node1:8500) every 100 ms and logs every change.

Events, in order, each timed from just before its labctl command starts:

  scale_up          labctl scale zhibo_service=5    two instances added
  scale_down        labctl scale zhibo_service=3    the two removed again (graceful)
  instance_crash    labctl fail zhibo-2             docker kill of one instance
  instance_recover  labctl recover zhibo-2
  host_loss         labctl fail node2               the host container killed: its Consul
                                                    server and zhibo-2 go with it
  host_recover      labctl recover node2

Per event:
  command          seconds the labctl command took
  to_upstream      until nginx's upstream has the added and lacks the removed instances
  traffic_shifted  until the first answer from every added instance, or the last answer
                   from every removed one (first_response / last_response per instance)
  to_critical      until Consul reports the instance's check critical (crash, host loss)
  to_node_failed   until Consul reports the lost host's serfHealth critical (host loss)
  failed_requests  GETs of the phase that failed (failure_kinds: how)
  reloads          nginx reloads during the phase (the LB's counter)
  failed_at, reloaded_at, failed_near_reload   when; failures within 1 s of a reload
                   are most likely a keep-alive connection nginx closed at the reload
  lb_restarts      only when the LB container restarted (its reload counter reset)
A phase ends when the lab settled (upstream as expected and unchanged for 3 s) or at
--phase-limit; the whole measurement ends at --time-limit (lab up and down not included),
later events are then skipped. Times are seconds, rounded to 0.1; null: never seen;
a last_response of 0.0: no answer from that instance after the trigger. After a failed
GET a worker pauses 10 ms, so an LB refusing at once does not become a hot loop.

Traffic goes only to the lab's addresses (192.168.62.x). Not part of the test suite: it
measures, it neither passes nor fails.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from labctl import lb, operate
from labctl.spec import LabSpec, load_spec

ROOT = Path(__file__).resolve().parent.parent
SUBNET = ipaddress.ip_network("192.168.62.0/24")
LB_ADDRESS = "192.168.62.4"
CONSUL_ADDRESS = "192.168.62.2"  # node1: never failed here, and the stand-in's leader
SERVICE = "zhibo_service"
SPEC = {
    "name": "labbench",
    "provider": "docker",
    "network": {"subnet": str(SUBNET)},
    "hosts": [
        {"name": "node1", "address": "192.168.62.2", "consul": "server", "bootstrap": True,
         "demo": 1},
        {"name": "node2", "address": "192.168.62.3", "consul": "server", "demo": 1},
        {"name": "node3", "address": "192.168.62.4", "consul": "server", "lb": True, "demo": 1},
    ],
}  # fmt: skip

POLL_INTERVAL = 0.1
POLL_TIMEOUT = 1.0
REQUEST_TIMEOUT = 5.0
SETTLE_QUIET = 3.0  # seconds without an upstream change before the next event
FAILURE_PAUSE = 0.01  # after a failed GET, so an LB refusing at once is not a hot loop
MAX_LISTED = 20  # failure times listed per event
RELOAD_MARGIN = 1.0  # a failure this close to a seen reload counts as "near" it
UP_TIMEOUT = 1500.0
DOWN_TIMEOUT = 600.0

console = Console(stderr=True, highlight=False)


class BenchError(Exception):
    """The bench cannot go on; the message says why."""


def lab_url(address: str, path: str) -> str:
    """A URL on the lab network; anything else is refused (the bench talks to the lab only)."""
    if ipaddress.ip_address(address) not in SUBNET:
        raise BenchError(f"{address} is outside the lab's {SUBNET}")
    return f"http://{address}{path}"


def client(timeout: float = REQUEST_TIMEOUT) -> httpx.Client:
    # trust_env=False: no proxy from the environment may carry the lab's traffic elsewhere.
    return httpx.Client(timeout=timeout, trust_env=False)


# --- the lab -----------------------------------------------------------------------------


def labctl(spec: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run the real CLI, as a user would, in a process group of its own, so that a timeout
    or Ctrl-C stops it with its children (pyinfra, Vagrant) instead of leaving them behind."""
    process = subprocess.Popen(
        [sys.executable, "-m", "labctl", "--spec", str(spec), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=os.environ | {"COLUMNS": "200"},
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        stop_group(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group we started, SIGKILL it when it does not go within 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.communicate(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def require(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise BenchError(f"`{what}` exited {result.returncode}:\n{result.stderr.strip()}")


def build_spec(workdir: Path) -> Path:
    """Write the bench's spec, with the stand-in images the e2e suite builds."""
    # tests/ is not an installed package: import it from the checkout.
    sys.path.insert(0, str(ROOT))
    from tests.e2e.conftest import standin_images

    path = workdir / "lab.yaml"
    data = SPEC | {"images": standin_images()}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def instances(spec: LabSpec, total: int) -> dict[str, str]:
    """Instance ID -> address:port with `total` instances, spread as `labctl scale` does."""
    counts = operate.spread(spec, total)
    scaled = spec.model_copy(
        update={"hosts": [h.model_copy(update={"demo": counts[h.name]}) for h in spec.hosts]}
    )
    return {i.id: f"{i.address}:{i.port}" for i in scaled.demo_instances()}


# --- load and watcher ----------------------------------------------------------------------


class Load:
    """Worker threads GETting through the LB until stopped or the deadline, logging
    (monotonic time of the answer, instance ID or failure) per request."""

    def __init__(self, workers: int, deadline: float) -> None:
        self.url = lab_url(LB_ADDRESS, f"/{SERVICE}")
        self.deadline = deadline
        self.stop = threading.Event()
        self.logs: list[list[tuple[float, str]]] = [[] for _ in range(workers)]
        self.threads = [
            threading.Thread(target=self._run, args=(log,), daemon=True) for log in self.logs
        ]

    def _run(self, log: list[tuple[float, str]]) -> None:
        with client() as http:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                try:
                    response = http.get(self.url)
                    outcome = (
                        response.headers.get("X-Instance", "?")
                        if response.status_code == 200
                        else f"HTTP {response.status_code}"
                    )
                except httpx.HTTPError as exc:
                    outcome = f"error {type(exc).__name__}"
                # Interned: hundreds of thousands of entries share a handful of strings.
                log.append((time.monotonic(), sys.intern(outcome)))
                if not is_answer(outcome):
                    time.sleep(FAILURE_PAUSE)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT + 1)

    def requests(self) -> list[tuple[float, str]]:
        """Every request so far, in time order."""
        return sorted(entry for log in self.logs for entry in list(log))


def is_answer(outcome: str) -> bool:
    return not outcome.startswith(("HTTP ", "error "))


@dataclass
class Watcher:
    """Polls the LB's /_lab/ state and Consul's checks every 100 ms; logs changes only."""

    stop: threading.Event = field(default_factory=threading.Event)
    upstreams: list[tuple[float, frozenset[str]]] = field(default_factory=list)
    reloads: list[tuple[float, int]] = field(default_factory=list)
    checks: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    last_lb_read: float = 0.0

    def start(self) -> None:
        lab_url(LB_ADDRESS, "/_lab/")  # lb.read_state builds its own URLs: check the address
        for poll in (self._poll_lb, self._poll_consul):
            threading.Thread(target=self._loop, args=(poll,), daemon=True).start()

    def finish(self) -> None:
        self.stop.set()

    def _loop(self, poll: Callable[[httpx.Client], None]) -> None:
        # A short timeout: a stuck read would otherwise blind the watcher for 5 s.
        with client(POLL_TIMEOUT) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    poll(http)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self.errors[f"{poll.__name__.removeprefix('_poll_')} {type(exc).__name__}"] += 1
                self.stop.wait(max(0.0, POLL_INTERVAL - (time.monotonic() - started)))

    def _poll_lb(self, http: httpx.Client) -> None:
        state = lb.read_state(http, LB_ADDRESS)
        now = time.monotonic()
        upstream = frozenset(state.upstreams.get(SERVICE, []))
        if not self.upstreams or self.upstreams[-1][1] != upstream:
            self.upstreams.append((now, upstream))
        if not self.reloads or self.reloads[-1][1] != state.reloads:
            self.reloads.append((now, state.reloads))
        self.last_lb_read = now

    def _poll_consul(self, http: httpx.Client) -> None:
        """Service checks by instance ID, plus `node:<name>` for each node's serfHealth
        that is critical (a lost host: its own agent can no longer update its checks)."""
        service = http.get(lab_url(CONSUL_ADDRESS, f":8500/v1/health/checks/{SERVICE}"))
        critical = http.get(lab_url(CONSUL_ADDRESS, ":8500/v1/health/state/critical"))
        service.raise_for_status()
        critical.raise_for_status()
        now = time.monotonic()
        status = {c["ServiceID"]: c["Status"] for c in service.json()}
        status |= {
            f"node:{c['Node']}": c["Status"]
            for c in critical.json()
            if c["CheckID"] == "serfHealth"
        }
        if not self.checks or self.checks[-1][1] != status:
            self.checks.append((now, status))

    def upstream(self) -> tuple[float, frozenset[str]] | None:
        """(when it last changed, the upstream), if the LB answered in the last second."""
        if not self.upstreams or time.monotonic() - self.last_lb_read > 1.0:
            return None
        return self.upstreams[-1]


def settle(watcher: Watcher, expected: frozenset[str], deadline: float) -> bool:
    """Wait until the upstream is `expected` and has not changed for SETTLE_QUIET seconds."""
    while time.monotonic() < deadline:
        current = watcher.upstream()
        if current and current[1] == expected and time.monotonic() - current[0] >= SETTLE_QUIET:
            return True
        time.sleep(POLL_INTERVAL)
    return False


# --- events ------------------------------------------------------------------------------


@dataclass
class Event:
    name: str
    args: tuple[str, ...]  # the labctl verb and its arguments
    expected: dict[str, str]  # instance ID -> address:port the LB routes to once settled
    critical: tuple[str, ...] = ()  # Consul check keys expected to go critical


@dataclass
class Phase:
    """One event as it ran: monotonic times of trigger, command end and settling."""

    event: Event
    before: dict[str, str]
    started: float
    command_done: float
    ended: float
    settled: bool
    error: str | None = None


def events(spec: LabSpec) -> list[Event]:
    three, five = instances(spec, 3), instances(spec, 5)
    lost = {i: a for i, a in three.items() if a.startswith("192.168.62.3:")}
    return [
        Event("scale_up", ("scale", f"{SERVICE}=5"), five),
        Event("scale_down", ("scale", f"{SERVICE}=3"), three),
        Event("instance_crash", ("fail", "zhibo-2"), _without(three, "zhibo-2"), ("zhibo-2",)),
        Event("instance_recover", ("recover", "zhibo-2"), three),
        Event(
            "host_loss",
            ("fail", "node2"),
            {i: a for i, a in three.items() if i not in lost},
            (*lost, "node:node2"),
        ),
        Event("host_recover", ("recover", "node2"), three),
    ]


def _without(upstream: dict[str, str], instance: str) -> dict[str, str]:
    return {i: a for i, a in upstream.items() if i != instance}


def run_event(
    spec_file: Path, event: Event, before: dict[str, str], watcher: Watcher, limit: float
) -> Phase:
    """Trigger the event, then wait for the lab to settle; a failed command ends the phase
    at once (what the lab does next is no longer the event's doing)."""
    started = time.monotonic()
    error = None
    try:
        result = labctl(spec_file, *event.args, timeout=limit)
        if result.returncode != 0:
            # The whole output on stderr; its last lines (the error, not the traceback) in JSON.
            console.print(f"[bold red]labctl {' '.join(event.args)} failed:[/]")
            console.print(result.stderr.rstrip(), markup=False)
            error = f"exit {result.returncode}: " + " | ".join(last_lines(result.stderr))
    except subprocess.TimeoutExpired:
        error = f"did not finish within {limit:.0f} s"
    command_done = time.monotonic()
    settled = not error and settle(watcher, frozenset(event.expected.values()), started + limit)
    return Phase(event, before, started, command_done, time.monotonic(), settled, error)


def last_lines(text: str, count: int = 2) -> list[str]:
    """The last non-blank lines, without rich's box drawing around a traceback."""
    lines = [line.strip(" │╭╮╰╯─") for line in text.splitlines()]
    return [line for line in lines if line][-count:]


# --- figures -----------------------------------------------------------------------------


def since(start: float, when: float | None) -> float | None:
    return None if when is None else round(when - start, 1)


def first_change(
    log: list[tuple[float, object]], start: float, end: float, holds: Callable[[object], bool]
) -> float | None:
    """When the logged value first satisfies `holds` within [start, end]; the value current
    at `start` counts (as of `start`)."""
    current = [(t, v) for t, v in log if t <= start][-1:]
    for t, value in current + [(t, v) for t, v in log if start < t <= end]:
        if holds(value):
            return max(t, start)
    return None


def reloads_between(log: list[tuple[float, int]], start: float, end: float) -> tuple[int, int]:
    """(reloads, LB restarts) in (start, end]. The LB's counter starts at 0 with its
    container, so a drop is a restart, after which the new value counts whole."""
    values = [v for t, v in log if t <= start][-1:] + [v for t, v in log if start < t <= end]
    reloads = restarts = 0
    for previous, value in pairwise(values):
        if value < previous:
            restarts += 1
            reloads += value
        else:
            reloads += value - previous
    return reloads, restarts


def near(when: float, moments: list[float], margin: float = RELOAD_MARGIN) -> bool:
    return any(abs(when - m) <= margin for m in moments)


def measure(phase: Phase, requests: list[tuple[float, str]], watcher: Watcher) -> dict:
    start, end = phase.started, phase.ended
    added = {i: a for i, a in phase.event.expected.items() if i not in phase.before}
    removed = {i: a for i, a in phase.before.items() if i not in phase.event.expected}
    window = [(t, o) for t, o in requests if start <= t <= end]
    failures = Counter(o for _, o in window if not is_answer(o))
    failed_at = [t for t, o in window if not is_answer(o)]
    reloaded_at = [t for t, _ in watcher.reloads if start < t <= end]
    reloads, restarts = reloads_between(watcher.reloads, start, end)
    figures: dict = {
        "command": round(phase.command_done - start, 1),
        "to_upstream": since(
            start,
            first_change(
                watcher.upstreams,
                start,
                end,
                lambda up: set(added.values()) <= up and not set(removed.values()) & up,
            ),
        ),
    }
    if added:
        first = {i: next((t for t, o in window if o == i), None) for i in added}
        figures["first_response"] = {i: since(start, t) for i, t in first.items()}
        figures["traffic_shifted"] = _latest(first, start)
    if removed:
        last = {i: max((t for t, o in window if o == i), default=start) for i in removed}
        figures["last_response"] = {i: since(start, t) for i, t in last.items()}
        figures["traffic_shifted"] = _latest(last, start)
    for key in phase.event.critical:
        name = "to_node_failed" if key.startswith("node:") else "to_critical"
        figures[name] = since(
            start,
            first_change(watcher.checks, start, end, lambda s, k=key: s.get(k) == "critical"),
        )
    figures |= {
        "requests": len(window),
        "failed_requests": sum(failures.values()),
        "failure_kinds": dict(failures),
        "reloads": reloads,
        # When, to line failures up with reloads: nginx closes idle keep-alive client
        # connections at a reload, and a GET sent on one just then fails (httpx does not
        # retry it, a browser would).
        "failed_at": [since(start, t) for t in failed_at][:MAX_LISTED],
        "reloaded_at": [since(start, t) for t in reloaded_at],
        "failed_near_reload": sum(near(t, reloaded_at) for t in failed_at),
        "phase": round(end - start, 1),
        "settled": phase.settled,
    }
    if restarts:
        figures["lb_restarts"] = restarts  # the LB container restarted: its state was lost
    if phase.error:
        figures["error"] = phase.error
    return figures


def _latest(times: dict[str, float | None], start: float) -> float | None:
    """The time by which every instance had shifted; None if one never did."""
    if any(t is None for t in times.values()):
        return None
    return since(start, max(times.values()))


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def critical(figures: dict) -> str:
    """The instance's check; for a lost host, whose agent cannot report it, the node's."""
    if figures.get("to_critical") is None and "to_node_failed" in figures:
        return f"{secs(figures['to_node_failed'])} (node)"
    return secs(figures.get("to_critical"))


def table(results: dict[str, dict]) -> Table:
    out = Table(title="dynamic LB under load (labbench: 3 Consul servers, LB on node3)")
    out.add_column("event")
    for column in ("to upstream change", "traffic shifted", "to critical (crash)"):
        out.add_column(column, justify="right")
    out.add_column("failed requests", justify="right")
    out.add_column("reloads", justify="right")

    for name, figures in results.items():
        if "skipped" in figures:
            out.add_row(name, f"[dim]skipped: {figures['skipped']}[/]", "", "", "", "")
            continue
        failed = figures["failed_requests"]
        kinds = ", ".join(
            f"{k.removeprefix('error ')} ×{n}" for k, n in figures["failure_kinds"].items()
        )
        out.add_row(
            name + ("" if figures["settled"] else " [red](not settled)[/]"),
            secs(figures["to_upstream"]),
            secs(figures.get("traffic_shifted")),
            critical(figures),
            f"{failed}/{figures['requests']}" + (f" ({kinds})" if kinds else ""),
            str(figures["reloads"]),
        )
    return out


# --- main --------------------------------------------------------------------------------


def measure_lab(spec_file: Path, args: argparse.Namespace) -> dict:
    """Load, watch, run every event; return the figures (also when cut short)."""
    spec, _ = load_spec(spec_file)
    deadline = time.monotonic() + args.time_limit
    load, watcher = Load(args.workers, deadline), Watcher()
    phases: dict[str, Phase] = {}
    skipped: dict[str, str] = {}
    aborted = None
    watcher.start()
    load.start()
    try:
        before = instances(spec, 3)
        if not settle(watcher, frozenset(before.values()), min(deadline, time.monotonic() + 60)):
            raise BenchError(
                f"the LB does not route to the three initial instances {sorted(before.values())};"
                " with --skip-up, bring the lab back first (labctl scale/recover)."
            )
        for event in events(spec):
            limit = min(args.phase_limit, deadline - time.monotonic())
            if limit < 10:
                skipped[event.name] = "time limit"
                continue
            console.print(f"[bold]{event.name}[/]: labctl {' '.join(event.args)}")
            skipped[event.name] = "interrupted"  # until it ran
            phase = run_event(spec_file, event, before, watcher, limit)
            phases[event.name] = phase
            if phase.error or not phase.settled:
                aborted = f"{event.name}: {phase.error or 'did not settle'}"
                break
            before = event.expected
    except BenchError as exc:
        aborted = str(exc)
    except KeyboardInterrupt:
        # Still report what was measured; the caller tears the lab down.
        aborted = "interrupted"
    measured = time.monotonic() - (deadline - args.time_limit)
    load.finish()
    watcher.finish()
    requests = load.requests()
    results = {
        e.name: measure(phases[e.name], requests, watcher)
        if e.name in phases
        else {"skipped": skipped.get(e.name, "not reached")}
        for e in events(spec)
    }
    return summary(results, requests, args.workers, measured, watcher, aborted)


def summary(
    results: dict[str, dict],
    requests: list[tuple[float, str]],
    workers: int,
    measured: float,
    watcher: Watcher,
    aborted: str | None,
) -> dict:
    failures = Counter(o for _, o in requests if not is_answer(o))
    figures: dict = {
        "events": results,
        "load": {
            "requests": len(requests),
            "failures": sum(failures.values()),
            "failure_kinds": dict(failures),
            "workers": workers,
            "seconds": round(measured, 1),
            "watcher_errors": dict(watcher.errors),
        },
    }
    if aborted:
        figures["aborted"] = aborted
    return figures


def emit(figures: dict) -> None:
    print(json.dumps(figures, ensure_ascii=False))
    out = Console(stderr=True)
    if not out.is_terminal:
        out = Console(stderr=True, width=120)  # rich's 80 columns would wrap every row
    out.print(table(figures["events"]))


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM takes the Ctrl-C path, so the lab is torn down.
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="load threads (default 4)")
    parser.add_argument(
        "--time-limit", type=float, default=600, help="seconds for the measurement (default 600)"
    )
    parser.add_argument(
        "--phase-limit", type=float, default=180, help="seconds per event at most (default 180)"
    )
    parser.add_argument("--keep", action="store_true", help="do not tear the lab down")
    parser.add_argument("--skip-up", action="store_true", help="reuse a running labbench lab")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    figures = None
    with tempfile.TemporaryDirectory(prefix="lb-events-") as tmp:
        console.print("building the stand-in images")
        spec_file = build_spec(Path(tmp))
        try:
            if not args.skip_up:
                labctl(spec_file, "down", timeout=DOWN_TIMEOUT)  # leftovers of an earlier run
                console.print("labctl up")
                require(labctl(spec_file, "up", timeout=UP_TIMEOUT), "labctl up")
            figures = measure_lab(spec_file, args)
        except BenchError as exc:
            console.print(f"[bold red]error:[/] {exc}")
        except KeyboardInterrupt:
            console.print("interrupted")
        finally:
            if not args.keep:
                tear_down(spec_file)
    console.print(f"wall time {time.monotonic() - started:.0f} s")
    if figures is None:
        sys.exit(1)
    emit(figures)
    if "aborted" in figures:
        sys.exit(130 if figures["aborted"] == "interrupted" else 1)


def tear_down(spec_file: Path) -> None:
    console.print("labctl down")
    down = labctl(spec_file, "down", timeout=DOWN_TIMEOUT)
    if down.returncode != 0:
        console.print(f"[bold red]labctl down failed:[/] {down.stderr.strip()}")


if __name__ == "__main__":
    main()
