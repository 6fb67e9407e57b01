"""How the dynamic LB rides out events, under steady load; prints JSON and a table.

    .venv/bin/python bench/lb_events.py [--workers 2] [--outage 900 | --quick]
                                        [--time-limit 3600] [--phase-limit 300]
                                        [--events NAME,...] [--plot FILE.png]
                                        [--lb-pair | --side-by-side] [--keep] [--skip-up]

Uses a lab of its own (name labbench, docker provider, 192.168.62.0/24; LAB_BENCH_NAME and
LAB_BENCH_SUBNET, its first three octets, move it): three hosts, each a Consul server, so
that losing one host keeps the quorum; the LB on node3 (192.168.62.4); one demo instance
per host. Consul and consul-template are the e2e suite's stand-ins, built
with testbed.standin_build.standin_images. The lab is removed (`labctl down`) first, in case an
earlier run left it, then brought up, and removed again at the end, also on Ctrl-C or
SIGTERM (unless --keep).

With --lb-pair, node2 is an LB too and the two share 192.168.62.10 (network.lb_address,
docs/lb-pair.md): node3 holds it while it serves, node2 is the backup, and the clients and
the watcher use the shared address. --side-by-side runs the single-LB lab, then the pair
(named <name>-pair, on the same subnet once the first is down), the same events under the
same load, and prints a table of both after their own.

While it measures, --workers clients of each kind GET http://192.168.62.4/zhibo_service in a
loop (testbed/traffic.py): "fresh" opens a connection per request; "keep-alive" reuses
one and retries, once, a GET whose reused connection nginx closed before answering (RFC 9112
section 9.3.1, as browsers and curl do; such retries are counted). A watcher reads the LB's
/_lab/ state (the upstream nginx runs, the reload counter) and Consul's checks (node1:8500)
every 100 ms and logs every change.

Events, in order, each timed from just before its trigger:

  scale_up             labctl scale zhibo_service=5    two instances added
  scale_down           labctl scale zhibo_service=3    the two removed again (graceful)
  instance_crash       labctl fail zhibo-2             docker kill of one instance
  instance_recover     labctl recover zhibo-2
  lb_restart           docker restart lb               on the LB host
  lb_restart_verb      labctl restart-lb               every LB, one at a time (a pair hands
                                                       the address over first)
  lb_host_reboot       docker restart labbench-node3   a clean reboot of the LB host
  lb_kill              docker kill lb on node3         started again 10 s later
  lb_host_kill         labctl fail node3               the LB host's plug pulled; `labctl
                                                       recover node3` 10 s later
                       (these three end when node3's own LB serves again: with a pair the
                       shared address answers long before)
  consul_outage        docker stop consul on node3     for --outage seconds, then start
                       (and node2 with --lb-pair)      (every LB's own agent away)
  crash_after_outage   labctl fail zhibo-1             the LB follows the next change
  recover_after_outage labctl recover zhibo-1
  quorum_loss          docker stop consul on node1, node2
                                                   for --outage seconds: no leader, the
                                                   LB host's agent up; then start
  crash_after_quorum   labctl fail zhibo-3         the LB follows the next change
  recover_after_quorum labctl recover zhibo-3
  rolling_apply        pyinfra ... --data ...          every instance, agent and LB replaced
  rolling_back         pyinfra inventory.py deploy.py  and back to the spec
  service_add          labctl apply, a second service  danmu_service on node1 and node2
  service_remove       labctl apply, the spec again    and gone again
  host_loss            labctl fail node2               the host container killed
  host_recover         labctl recover node2

With --registration registrator the service is registrator's (docs/registrator.md), and
after instance_recover come:

  hand_start           docker run by-hand on node1     a container with the service's
                                                       labels, as a person starts one
  hand_kill            docker kill by-hand; docker rm
  registrator_restart  docker restart registrator      on every host; catalog_identical:
                                                       seconds until Consul holds exactly
                                                       the registrations of before

--events runs only the named ones, in this order. --plot FILE.png draws requests per
instance over time, every event marked and every failed request highlighted (lb_plot.py).
From service_add to the end of service_remove a probe GETs the second service every 0.1 s:
service_add's first_answer is the time from its `apply` to the new service's first answer
through the LB; service_remove's location_gone when its location left nginx (the probe's
502s or errors, were there any, are failed requests).

Per event (bench/lb_figures.py): command seconds; to_upstream (until nginx's upstream has
the added and lacks the removed instances); traffic_shifted; to_critical / to_node_failed;
serving_gap (the longest time no client got an answer: how long the LB stopped serving);
per client kind the requests, failed GETs and RFC 9112 retries; reloads, and failures near
a reload; for the outages, consul-template's CPU share and the LB's log growth on each LB
host (each LB runs its own consul-template). A phase ends
when the lab settled (upstream as expected and unchanged for 3 s) or at --phase-limit.
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
from pathlib import Path

import docker
import httpx
import yaml
from rich.console import Console
from rich.markup import escape

from labctl import lb_client, operate, security
from labctl.connections import connection_data
from labctl.paths import host_container_name
from labctl.remote import RemoteError, run
from labctl.spec import LabSpec, load_spec
from roles.contract import CONSUL_HTTP_PORT

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testbed/ is not an installed package: take it from the checkout
from lb_figures import (  # noqa: E402  (bench/, beside this file)
    Log,
    is_answer,
    measure,
    side_by_side,
    since,
    table,
)
from lb_plot import Mark, plot  # noqa: E402

from testbed.standin_build import standin_images  # noqa: E402
from testbed.traffic import RequestLoop  # noqa: E402

PREFIX = os.environ.get("LAB_BENCH_SUBNET", "192.168.62")
SUBNET = ipaddress.ip_network(f"{PREFIX}.0/24")
LB_ADDRESS = f"{PREFIX}.4"  # what clients use; --lb-pair: the shared address
# The LB hosts, the master first: the one the LB events hit.
LB_HOSTS = ["node3"]
CONSUL_ADDRESS = f"{PREFIX}.2"  # node1: never failed here
SERVICE = "zhibo_service"
SECOND = "danmu_service"  # service_add / service_remove
BY_HAND, BY_HAND_PORT = "by-hand", 8090  # hand_start / hand_kill (--registration registrator)
OUTAGES = {"consul_outage", "quorum_loss"}  # events that last --outage seconds more
SPEC = {
    "name": os.environ.get("LAB_BENCH_NAME", "labbench"),
    "provider": "docker",
    "network": {"subnet": str(SUBNET)},
    "hosts": [
        {"name": "node1", "address": f"{PREFIX}.2", "consul": "server", "bootstrap": True,
         "demo": 1},
        {"name": "node2", "address": f"{PREFIX}.3", "consul": "server", "demo": 1},
        {"name": "node3", "address": f"{PREFIX}.4", "consul": "server", "lb": True, "demo": 1},
    ],
}  # fmt: skip
SECOND_SERVICES = [
    {"name": SERVICE},
    {"name": SECOND, "port": 9080, "instances": {"node1": 1, "node2": 1}},
]


def use_lb_pair() -> None:
    """--lb-pair: node3 and node2 share {PREFIX}.10 (docs/lb-pair.md), node3 listed first,
    so it holds the address while it serves (the single LB's host, hit by the same events);
    node2 is the backup. Everything else as the single-LB lab."""
    global LB_ADDRESS, LB_HOSTS
    LB_ADDRESS, LB_HOSTS = f"{PREFIX}.10", ["node3", "node2"]
    hosts = {host["name"]: host for host in SPEC["hosts"]}
    hosts["node2"] = hosts["node2"] | {"lb": True}
    SPEC["hosts"] = [hosts["node1"], hosts["node3"], hosts["node2"]]
    SPEC["network"] = SPEC["network"] | {"lb_address": LB_ADDRESS}


# pyinfra host data every instance's and agent's container is made from: a rolling apply.
ROLLED = (
    "--data", "demo_environment=" + json.dumps({"LAB_ROLLED": "1"}),
    "--data", "consul_log_level=DEBUG",
    "--data", "lb_wait=2s:9s",
)  # fmt: skip

POLL_INTERVAL = 0.1
POLL_TIMEOUT = 1.0
REQUEST_TIMEOUT = 5.0
SETTLE_QUIET = 3.0  # seconds without an upstream change before the next event
DOWNTIME = 10.0  # lb_kill, lb_host_kill: how long the LB (its host) stays down
UP_TIMEOUT = 1500.0
DOWN_TIMEOUT = 600.0
USER_HZ = 100  # clock ticks per second in /proc/<pid>/stat on Linux

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


def command(args: list[str], timeout: float, env: dict | None = None):
    """Run a command of the lab's (labctl, pyinfra) as a user would, in a process group of
    its own, so a timeout or Ctrl-C stops it with its children instead of leaving them."""
    process = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=os.environ | {"COLUMNS": "200"} | (env or {}),
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        stop_group(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def labctl(spec: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return command([sys.executable, "-m", "labctl", "--spec", str(spec), *args], timeout)


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


def build_spec(workdir: Path, registration: str = "lab") -> Path:
    """Write the bench's spec, with the stand-in images the e2e suite builds, its service
    registered by `registration` (lab or registrator), and beside it the same spec with a
    second service (second_spec_file)."""
    path = workdir / "lab.yaml"
    first = {"name": SERVICE, "registration": registration}
    data = SPEC | {"images": standin_images(), "services": [first]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    second = data | {"services": [first, *SECOND_SERVICES[1:]]}
    second_spec_file(path).write_text(yaml.safe_dump(second, sort_keys=False, allow_unicode=True))
    return path


def second_spec_file(spec_file: Path) -> Path:
    return spec_file.with_name("two-services.yaml")


def instances(spec: LabSpec, total: int) -> dict[str, str]:
    """Instance ID -> address:port with `total` instances, spread as `labctl scale` does."""
    scaled = spec.with_counts(SERVICE, operate.spread(spec, SERVICE, total))
    return {i.id: f"{i.address}:{i.port}" for i in scaled.instances() if i.service == SERVICE}


# --- load and watcher ----------------------------------------------------------------------


class Load:
    """`workers` clients of each kind (fresh, keep-alive), each logging every request."""

    def __init__(self, workers: int, seconds: float) -> None:
        url = lab_url(LB_ADDRESS, f"/{SERVICE}")
        self.logs: dict[str, list[Log]] = {"fresh": [], "keep-alive": []}
        self.loops = []
        for kind, logs in self.logs.items():
            for _ in range(workers):
                logs.append([])
                self.loops.append(
                    RequestLoop(url, keepalive=kind == "keep-alive", seconds=seconds,
                                timeout=REQUEST_TIMEOUT, log=logs[-1])
                )  # fmt: skip

    def __enter__(self) -> Load:
        for loop in self.loops:
            loop.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for loop in self.loops:
            loop.__exit__()

    def by_kind(self) -> dict[str, Log]:
        """Every request so far of each kind, in time order."""
        return {
            kind: sorted(entry for log in logs for entry in list(log))
            for kind, logs in self.logs.items()
        }


@dataclass
class Watcher:
    """Polls the LB's /_lab/ state and Consul's checks every 100 ms; logs changes only."""

    stop: threading.Event = field(default_factory=threading.Event)
    upstreams: list[tuple[float, frozenset[str]]] = field(default_factory=list)
    reloads: list[tuple[float, int]] = field(default_factory=list)
    checks: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    last_lb_read: float = 0.0
    # The lab's read token (`labctl token read`), when it has ACLs.
    consul_headers: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        lab_url(LB_ADDRESS, "/_lab/")  # read_lb_record builds its own URLs: check the address
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
        state = lb_client.read_lb_record(http, LB_ADDRESS)
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
        params = {"stale": ""}  # any server answers, also while there is no leader
        api = f":{CONSUL_HTTP_PORT}/v1/health"
        service = http.get(lab_url(CONSUL_ADDRESS, f"{api}/checks/{SERVICE}"),
                           params=params, headers=self.consul_headers)  # fmt: skip
        critical = http.get(lab_url(CONSUL_ADDRESS, f"{api}/state/critical"),
                            params=params, headers=self.consul_headers)  # fmt: skip
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


def settle(watcher: Watcher, expected: frozenset[str], deadline: float, after: float = 0.0) -> bool:
    """Wait until the upstream is `expected` and has not changed for SETTLE_QUIET seconds,
    as read from the LB after `after` (an LB that restarts answers again only later than
    its `docker restart` returns: until then the event is not over)."""
    while time.monotonic() < deadline:
        current = watcher.upstream()
        if (
            current
            and current[1] == expected
            and time.monotonic() - current[0] >= SETTLE_QUIET
            and watcher.last_lb_read > after
        ):
            return True
        time.sleep(POLL_INTERVAL)
    return False


class Probe:
    """GETs the LB's /<service> every 0.1 s in a thread. Answers (X-Instance) and failures
    go to `log` as the load logs them; a 404 (no location for the service: not yet, or no
    longer) is counted apart, in `outcomes` with the rest."""

    def __init__(self, service: str) -> None:
        self.url = lab_url(LB_ADDRESS, f"/{service}")
        self.log: Log = []
        self.outcomes: Counter = Counter()
        self.absent: list[float] = []  # when the LB had no location for it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with client(POLL_TIMEOUT) as http:
            while not self._stop.wait(POLL_INTERVAL):
                try:
                    response = http.get(self.url)
                except httpx.HTTPError as exc:
                    self.outcomes[type(exc).__name__] += 1
                    self.log.append((time.monotonic(), f"error {type(exc).__name__}"))
                    continue
                self.outcomes[response.status_code] += 1
                if response.status_code == 404:
                    self.absent.append(time.monotonic())
                elif response.status_code == 200:
                    self.log.append((time.monotonic(), response.headers.get("X-Instance", "?")))
                else:
                    self.log.append((time.monotonic(), f"HTTP {response.status_code}"))

    def first_answer(self, after: float, deadline: float) -> float | None:
        """When an instance first answered after `after`, waiting until `deadline`."""
        return self._first(lambda: [t for t, o in list(self.log) if is_answer(o)], after, deadline)

    def gone(self, after: float, deadline: float) -> float | None:
        """When the location was first missing after `after`, waiting until `deadline`."""
        return self._first(lambda: list(self.absent), after, deadline)

    @staticmethod
    def _first(moments: Callable[[], list[float]], after: float, deadline: float) -> float | None:
        while True:
            found = [t for t in moments() if t >= after]
            if found or time.monotonic() >= deadline:
                return found[0] if found else None
            time.sleep(POLL_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- events ------------------------------------------------------------------------------

# A trigger does the event and returns (error or None, extra figures).
Trigger = Callable[[float], tuple[str | None, dict]]


@dataclass
class Event:
    name: str
    what: str  # the command, for the progress line
    trigger: Trigger
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
    extra: dict = field(default_factory=dict)


def finished(result: subprocess.CompletedProcess, what: str) -> str | None:
    """None when the command succeeded, else the error for the figures (output on stderr)."""
    if result.returncode == 0:
        return None
    console.print(f"[bold red]{what} failed:[/]")
    console.print(result.stderr.rstrip(), markup=False)
    lines = [line.strip(" │╭╮╰╯─") for line in result.stderr.splitlines()]
    return f"exit {result.returncode}: " + " | ".join([line for line in lines if line][-2:])


class Triggers:
    """The ways the bench changes or breaks the lab: labctl verbs, commands on the LB host,
    a reboot of its host container, an outage of its agent, pyinfra with overridden data."""

    def __init__(self, spec_file: Path, spec: LabSpec, outage: float) -> None:
        self.spec_file, self.spec, self.outage_seconds = spec_file, spec, outage
        self.probe: Probe | None = None  # the second service's, from service_add on

    def service_add(self, limit: float) -> tuple[str | None, dict]:
        """Apply the spec with a second service; wait for its first answer through the LB."""
        self.probe = self.probe or Probe(SECOND)
        started = time.monotonic()
        error = finished(labctl(second_spec_file(self.spec_file), "apply", timeout=limit),
                         f"labctl apply (with {SECOND})")  # fmt: skip
        applied = time.monotonic() - started
        if error:
            return error, {}
        first = self.probe.first_answer(started, started + limit)
        figures = {"apply_seconds": round(applied, 1), "first_answer": since(started, first)}
        return (None if first else f"{SECOND} never answered through the LB"), figures

    def service_remove(self, limit: float) -> tuple[str | None, dict]:
        """Apply the bench's own spec again: the second service goes (deregistered first)."""
        started = time.monotonic()
        error = finished(labctl(self.spec_file, "apply", timeout=limit),
                         f"labctl apply (without {SECOND})")  # fmt: skip
        probe = self.probe
        if probe is None:
            return error, {}
        gone = probe.gone(started, started + limit)
        self.stop_probe()
        outcomes = {str(k): v for k, v in probe.outcomes.items()}
        return error, {"location_gone": since(started, gone), "second_service": outcomes}

    def stop_probe(self) -> None:
        if self.probe is not None:
            self.probe.stop()

    def labctl(self, *args: str) -> Trigger:
        return lambda limit: (finished(labctl(self.spec_file, *args, timeout=limit),
                                       f"labctl {' '.join(args)}"), {})  # fmt: skip

    def pyinfra(self, *data: str) -> Trigger:
        def trigger(limit: float) -> tuple[str | None, dict]:
            args = [sys.executable, "-m", "pyinfra", "inventory.py", "deploy.py", "--yes", *data]
            result = command(args, limit, env={"LAB_SPEC": str(self.spec_file)})
            return finished(result, "pyinfra"), {}

        return trigger

    def on_lb_host(self, what: str) -> Trigger:
        return lambda limit: (self._on_host(LB_HOSTS[0], what, limit), {})

    def lb_kill(self, limit: float) -> tuple[str | None, dict]:
        """The (master) LB container killed; started again DOWNTIME s later by hand."""
        error = self._on_host(LB_HOSTS[0], "docker kill lb", limit)
        if error:
            return error, {}
        time.sleep(DOWNTIME)  # the LB stays dead this long, as nobody is awake to start it
        return self._on_host(LB_HOSTS[0], "docker start lb", limit) or self._lb_back(limit), {}

    def lb_host_kill(self, limit: float) -> tuple[str | None, dict]:
        """The (master) LB's host container killed (`labctl fail`: the plug pulled), and
        powered on again (`labctl recover`) DOWNTIME s later."""
        error = finished(labctl(self.spec_file, "fail", LB_HOSTS[0], timeout=limit),
                         f"labctl fail {LB_HOSTS[0]}")  # fmt: skip
        if error:
            return error, {}
        time.sleep(DOWNTIME)  # the host stays off this long
        return finished(labctl(self.spec_file, "recover", LB_HOSTS[0], timeout=limit),
                        f"labctl recover {LB_HOSTS[0]}") or self._lb_back(limit), {}  # fmt: skip

    def _lb_back(self, limit: float) -> str | None:
        """Wait until the (master) LB host's own LB serves again, asked by its own address:
        with a pair the shared address answers long before (the backup holds it), and the
        next event must not meet a host still booting. None, or what did not come back."""
        address = str(next(h.address for h in self.spec.hosts if h.name == LB_HOSTS[0]))
        deadline = time.monotonic() + limit
        with client(POLL_TIMEOUT) as http:
            while time.monotonic() < deadline:
                try:
                    if http.get(lab_url(address, "/_lab/lb.json")).status_code == 200:
                        return None
                except httpx.HTTPError:
                    pass
                time.sleep(POLL_INTERVAL)
        return f"the LB on {LB_HOSTS[0]} did not serve again within {limit:.0f} s"

    def _on_host(self, name: str, what: str, timeout: float = 60) -> str | None:
        """Run `what` as root on host `name`; None, or what went wrong."""
        try:
            code, output = run(connection_data(self.spec)[name], what, timeout, sudo=True)
        except RemoteError as exc:
            return f"`{what}` on {name}: {exc}"
        return None if code == 0 else f"`{what}` on {name} exited {code}: {output.strip()[-200:]}"

    def reboot_lb_host(self, limit: float) -> tuple[str | None, dict]:
        name = host_container_name(self.spec, LB_HOSTS[0])
        docker.from_env().containers.get(name).restart(timeout=30)
        return self._lb_back(limit), {}

    def _consul_template_usage(self) -> dict[str, tuple[float, int]]:
        """Each LB's consul-template CPU seconds and its LB container's log bytes."""
        return {host: self._usage_on(host) for host in LB_HOSTS}

    def _usage_on(self, host: str) -> tuple[float, int]:
        """consul-template's CPU seconds (utime + stime) and the LB container's log bytes."""
        ssh = connection_data(self.spec)[host]
        pid = "$(cat /run/lb/consul-template.pid)"
        _, stat = run(ssh, f"docker exec lb sh -c 'cat /proc/{pid}/stat'", sudo=True)
        fields = stat.rsplit(")", 1)[1].split()
        _, size = run(ssh, "docker logs lb 2>&1 | wc -c", sudo=True)
        return (int(fields[11]) + int(fields[12])) / USER_HZ, int(size)

    def consul_outage(self, limit: float) -> tuple[str | None, dict]:
        """Every LB host's own agent away: no consul-template can reach Consul at all."""
        return self._outage(LB_HOSTS)

    def quorum_loss(self, limit: float) -> tuple[str | None, dict]:
        """Two of the three servers away: the LB host's agent answers, with no leader."""
        return self._outage(["node1", "node2"])

    def _outage(self, hosts: list[str]) -> tuple[str | None, dict]:
        """`docker stop consul` on `hosts` for outage_seconds while the load runs on, then
        start again; consul-template's CPU share and the LB's log growth meanwhile."""
        stopped = []
        try:
            for name in hosts:
                error = self._on_host(name, "docker stop consul")
                if error:
                    return error, {}
                stopped.append(name)
            before = self._consul_template_usage()
            time.sleep(self.outage_seconds)  # the outage: the agents stay away, load runs on
            after = self._consul_template_usage()
        finally:
            errors = [e for e in (self._on_host(n, "docker start consul") for n in stopped) if e]
        if errors:
            return "; ".join(errors), {}
        cpu = {lb: after[lb][0] - before[lb][0] for lb in LB_HOSTS}
        return None, {
            "outage_seconds": self.outage_seconds,
            # Per LB host: each LB runs its own consul-template.
            "consul_template_cpu_seconds": {lb: round(cpu[lb], 2) for lb in LB_HOSTS},
            "consul_template_cpu_share": {
                lb: round(cpu[lb] / self.outage_seconds, 4) for lb in LB_HOSTS},
            "lb_log_bytes": {lb: after[lb][1] - before[lb][1] for lb in LB_HOSTS},
        }  # fmt: skip


    # --- registrator mode (--registration registrator) ------------------------------

    def hand_start(self, limit: float) -> tuple[str | None, dict]:
        """`docker run` of a container with the service's labels on node1, as a person
        would: registrator registers it, the LB follows."""
        image = run(connection_data(self.spec)["node1"],
                    "docker inspect -f '{{.Config.Image}}' zhibo-1", sudo=True)[1].strip()
        return self._on_host("node1", (
            f"docker run -d --name {BY_HAND} --net=host --expose {BY_HAND_PORT} "
            f"-e DEMO_ID={BY_HAND} -e DEMO_TITLE={BY_HAND} -e DEMO_ADDRESS={PREFIX}.2 "
            f"-e DEMO_PORT={BY_HAND_PORT} -l SERVICE_NAME={SERVICE} -l SERVICE_CHECK_HTTP=/health "
            f"-l SERVICE_CHECK_INTERVAL=10s -l SERVICE_CHECK_TIMEOUT=5s {image}"
        ), limit), {}  # fmt: skip

    def hand_kill(self, limit: float) -> tuple[str | None, dict]:
        """`docker kill` of the hand-started container, then `docker rm`."""
        return self._on_host("node1", f"docker kill {BY_HAND} && docker rm {BY_HAND}", limit), {}

    def registrator_restart(self, limit: float) -> tuple[str | None, dict]:
        """`docker restart registrator` on every host; the seconds until Consul's catalog
        holds exactly the registrations it held before (no duplicate, none lost)."""
        before = self._catalog()
        started = time.monotonic()
        for name in ("node1", "node2", "node3"):
            error = self._on_host(name, "docker restart registrator", limit)
            if error:
                return error, {}
        while self._catalog() != before:
            if time.monotonic() - started > limit:
                return f"the catalog differs from before after {limit:.0f} s", {}
            time.sleep(POLL_INTERVAL)
        return None, {"catalog_identical": round(time.monotonic() - started, 1),
                      "registrations": len(before)}  # fmt: skip

    def _catalog(self) -> list[str]:
        """The service's registration IDs, sorted (duplicates kept)."""
        token = security.token(self.spec, "read")
        url = lab_url(CONSUL_ADDRESS, f":{CONSUL_HTTP_PORT}/v1/health/service/{SERVICE}")
        headers = {"X-Consul-Token": token} if token else {}
        response = httpx.get(url, timeout=POLL_TIMEOUT, headers=headers)
        response.raise_for_status()
        return sorted(entry["Service"]["ID"] for entry in response.json())


def events(spec: LabSpec, triggers: Triggers) -> list[Event]:
    three, five = instances(spec, 3), instances(spec, 5)
    lost = {i: a for i, a in three.items() if a.startswith(f"{PREFIX}.3:")}
    t = triggers

    def crash(name: str, instance: str) -> Event:
        """`labctl fail` of one instance: the others keep answering."""
        fail = t.labctl("fail", instance)
        return Event(name, f"labctl fail {instance}", fail, _without(three, instance), (instance,))

    def recover(name: str, instance: str) -> Event:
        return Event(name, f"labctl recover {instance}", t.labctl("recover", instance), three)

    return [
        Event("scale_up", "labctl scale zhibo_service=5", t.labctl("scale", f"{SERVICE}=5"), five),
        Event("scale_down", "labctl scale zhibo_service=3", t.labctl("scale", f"{SERVICE}=3"),
              three),
        crash("instance_crash", "zhibo-2"),
        recover("instance_recover", "zhibo-2"),
        *(registrator_events(t, three) if spec.registrator_services() else []),
        Event("lb_restart", "docker restart lb", t.on_lb_host("docker restart lb"), three),
        Event("lb_restart_verb", "labctl restart-lb", t.labctl("restart-lb"), three),
        Event("lb_host_reboot", f"docker restart {SPEC['name']}-{LB_HOSTS[0]}", t.reboot_lb_host,
              three),
        Event("lb_kill", f"docker kill lb on {LB_HOSTS[0]}, started {DOWNTIME:.0f} s later",
              t.lb_kill, three),
        Event("lb_host_kill", f"labctl fail {LB_HOSTS[0]}, recovered {DOWNTIME:.0f} s later",
              t.lb_host_kill, three),
        Event("consul_outage",
              f"docker stop consul on {', '.join(LB_HOSTS)} for {t.outage_seconds:.0f} s",
              t.consul_outage, three),
        crash("crash_after_outage", "zhibo-1"),
        recover("recover_after_outage", "zhibo-1"),
        Event("quorum_loss", f"docker stop consul on node1, node2 for {t.outage_seconds:.0f} s",
              t.quorum_loss, three),
        crash("crash_after_quorum", "zhibo-3"),
        recover("recover_after_quorum", "zhibo-3"),
        Event("rolling_apply", "pyinfra inventory.py deploy.py " + " ".join(ROLLED),
              t.pyinfra(*ROLLED), three),
        Event("rolling_back", "pyinfra inventory.py deploy.py", t.pyinfra(), three),
        Event("service_add", f"labctl apply with {SECOND} added", t.service_add, three),
        Event("service_remove", f"labctl apply with {SECOND} gone", t.service_remove, three),
        Event("host_loss", "labctl fail node2", t.labctl("fail", "node2"),
              {i: a for i, a in three.items() if i not in lost}, (*lost, "node:node2")),
        Event("host_recover", "labctl recover node2", t.labctl("recover", "node2"), three),
    ]  # fmt: skip


def registrator_events(t: Triggers, three: dict[str, str]) -> list[Event]:
    """With the service registrator's: a container started and killed by hand, and
    registrator restarted on every host."""
    by_hand = three | {BY_HAND: f"{PREFIX}.2:{BY_HAND_PORT}"}
    return [
        Event("hand_start", f"docker run {BY_HAND} on node1", t.hand_start, by_hand),
        Event("hand_kill", f"docker kill {BY_HAND} on node1", t.hand_kill, three),
        Event("registrator_restart", "docker restart registrator on every host",
              t.registrator_restart, three),
    ]  # fmt: skip


def _without(upstream: dict[str, str], instance: str) -> dict[str, str]:
    return {i: a for i, a in upstream.items() if i != instance}


def run_event(event: Event, before: dict[str, str], watcher: Watcher, limit: float) -> Phase:
    """Trigger the event, then wait for the lab to settle; a failed trigger ends the phase
    at once (what the lab does next is no longer the event's doing)."""
    started = time.monotonic()
    try:
        error, extra = event.trigger(limit)
    except subprocess.TimeoutExpired:
        error, extra = f"did not finish within {limit:.0f} s", {}
    command_done = time.monotonic()
    expected = frozenset(event.expected.values())
    settled = not error and settle(watcher, expected, started + limit, after=command_done)
    return Phase(event, before, started, command_done, time.monotonic(), settled, error, extra)


# --- main --------------------------------------------------------------------------------


def choose(all_events: list[Event], names: str | None) -> list[Event]:
    """The events named (comma-separated), in the bench's order; every one without names."""
    if not names:
        return all_events
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {e.name for e in all_events})
    if unknown:
        raise BenchError(
            f"--events: no event named {', '.join(unknown)}; choose from "
            f"{', '.join(e.name for e in all_events)}."
        )
    return [e for e in all_events if e.name in wanted]


@dataclass
class Timeline:
    """What --plot draws: every request (the load's and the probe's), and the events."""

    requests: Log
    marks: list[Mark]


def measure_lab(
    spec: LabSpec, triggers: Triggers, all_events: list[Event], args: argparse.Namespace
) -> tuple[dict, Timeline]:
    """Load, watch, run the events; return the figures (also when cut short)."""
    deadline = time.monotonic() + args.time_limit
    read_token = security.token(spec, "read")
    watcher = Watcher(consul_headers={"X-Consul-Token": read_token} if read_token else {})
    phases: dict[str, Phase] = {}
    skipped: dict[str, str] = {}
    aborted = None
    watcher.start()
    with Load(args.workers, args.time_limit) as load:
        try:
            aborted = run_events(spec, watcher, all_events, args, deadline, phases, skipped)
        except BenchError as exc:
            aborted = str(exc)
        except KeyboardInterrupt:
            aborted = "interrupted"  # still report what was measured; the caller tears down
        finally:
            triggers.stop_probe()
        measured = time.monotonic() - (deadline - args.time_limit)
    watcher.finish()
    clients = load.by_kind()
    results = {
        e.name: measure(phases[e.name], clients, watcher.upstreams, watcher.reloads,
                        watcher.checks)
        if e.name in phases
        else {"skipped": skipped.get(e.name, "not reached")}
        for e in all_events
    }  # fmt: skip
    load_figures = {kind: request_counts(log) for kind, log in clients.items()}
    figures: dict = {
        "events": results,
        "load": load_figures | {"workers_per_kind": args.workers, "seconds": round(measured, 1),
                                "watcher_errors": dict(watcher.errors)},
    }  # fmt: skip
    if aborted:
        figures["aborted"] = aborted
    probed = triggers.probe.log if triggers.probe else []
    marks = [Mark(p.event.name, p.started, p.command_done, p.ended) for p in phases.values()]
    return figures, Timeline(sorted([*(e for log in clients.values() for e in log), *probed]),
                             marks)  # fmt: skip


def run_events(
    spec: LabSpec,
    watcher: Watcher,
    all_events: list[Event],
    args: argparse.Namespace,
    deadline: float,
    phases: dict[str, Phase],
    skipped: dict[str, str],
) -> str | None:
    """Once the LB routes to the three initial instances, run each event in turn while
    time is left, into `phases` (or `skipped`, with why); what cut the run short, if
    anything did."""
    before = instances(spec, 3)
    settled = settle(watcher, frozenset(before.values()),
                     min(deadline, time.monotonic() + 60))  # fmt: skip
    if not settled:
        raise BenchError(
            f"the LB does not route to the three initial instances "
            f"{sorted(before.values())}; with --skip-up, bring the lab back first "
            "(labctl scale/recover)."
        )
    for event in all_events:
        limit = min(args.phase_limit + args.outage * (event.name in OUTAGES),
                    deadline - time.monotonic())  # fmt: skip
        if limit < 10:
            skipped[event.name] = "time limit"
            continue
        console.print(f"[bold]{event.name}[/]: {event.what}")
        skipped[event.name] = "interrupted"  # until it ran
        phase = run_event(event, before, watcher, limit)
        phases[event.name] = phase
        if phase.error or not phase.settled:
            return f"{event.name}: {phase.error or 'did not settle'}"
        before = event.expected
    return None


def request_counts(log: list) -> dict[str, int]:
    """Requests (retries aside), failures and RFC 9112 retries in one kind's client log."""
    return {
        "requests": sum(o != "retry" for _, o in log),
        "failures": sum(not is_answer(o) and o != "retry" for _, o in log),
        "retries": sum(o == "retry" for _, o in log),
    }


def emit(figures: dict) -> None:
    print(json.dumps(figures, ensure_ascii=False))
    out = Console(stderr=True)
    if not out.is_terminal:
        out = Console(stderr=True, width=160)  # rich's 80 columns would wrap every row
    shape = "LBs on node3 (master) and node2" if len(LB_HOSTS) > 1 else "LB on node3"
    out.print(table(figures["events"], f"dynamic LB under load ({SPEC['name']}: 3 Consul servers, "
                                        f"{shape}, clients on {LB_ADDRESS})"))  # fmt: skip


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM takes the Ctrl-C path, so the lab is torn down.
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2,
                        help="clients of each kind, fresh and keep-alive (default 2)")
    parser.add_argument("--outage", type=float, default=900,
                        help="seconds the LB host's agent stays away (default 900)")
    parser.add_argument("--quick", action="store_const", dest="outage", const=90,
                        help="a 90 s outage instead")
    parser.add_argument("--time-limit", type=float, default=3600,
                        help="seconds for the measurement (default 3600)")
    parser.add_argument("--phase-limit", type=float, default=300,
                        help="seconds per event at most, besides the outage (default 300)")
    parser.add_argument("--events", metavar="NAME,...",
                        help="run only these events, in the bench's order (default: all)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="draw requests per instance over time, events and failures marked")
    parser.add_argument("--registration", choices=("lab", "registrator"), default="lab",
                        help="who registers the service (registrator adds hand_start, "
                             "hand_kill and registrator_restart)")
    parser.add_argument("--lb-pair", action="store_true",
                        help="two LBs sharing an address (node3 the master, node2 the backup)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="the single-LB lab, then the two-LB lab (<name>-pair), in one run; "
                             "both tables and one comparing them")
    parser.add_argument("--keep", action="store_true", help="do not tear the lab down")
    parser.add_argument("--skip-up", action="store_true", help="reuse a running labbench lab")
    args = parser.parse_args()  # fmt: skip
    signal.signal(signal.SIGTERM, _terminate)
    if args.side_by_side and (args.lb_pair or args.keep or args.skip_up):
        parser.error("--side-by-side makes and removes both labs itself: without --lb-pair, "
                     "--keep or --skip-up")  # fmt: skip
    started = time.monotonic()
    runs: dict[str, dict | None] = {}
    shapes = ("single", "pair") if args.side_by_side else ("pair" if args.lb_pair else "single",)
    for shape in shapes:
        if shape == "pair":
            use_lb_pair()
            if args.side_by_side:
                SPEC["name"] = f"{SPEC['name']}-pair"  # the single LB's lab is down by now
        runs[shape] = run_lab(parser, args)
        if runs[shape] is not None:
            emit(runs[shape])
    console.print(f"wall time {time.monotonic() - started:.0f} s")
    if args.side_by_side and all(runs.values()):
        Console(stderr=True, width=160).print(side_by_side(runs["single"]["events"],
                                                           runs["pair"]["events"]))  # fmt: skip
    if any(figures is None for figures in runs.values()):
        sys.exit(1)
    aborted = [figures["aborted"] for figures in runs.values() if "aborted" in figures]
    if aborted:
        sys.exit(130 if "interrupted" in aborted else 1)


def run_lab(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict | None:
    """Make the lab (SPEC), measure every chosen event, remove it; the figures, or None."""
    figures = None
    with tempfile.TemporaryDirectory(prefix="lb-events-") as tmp:
        console.print(f"{SPEC['name']}: building the stand-in images")
        spec_file = build_spec(Path(tmp), args.registration)
        spec, _ = load_spec(spec_file)
        triggers = Triggers(spec_file, spec, args.outage)
        try:
            chosen = choose(events(spec, triggers), args.events)
        except BenchError as exc:
            parser.error(str(exc))
        try:
            if not args.skip_up:
                labctl(spec_file, "down", timeout=DOWN_TIMEOUT)  # leftovers of an earlier run
                console.print(f"labctl up ({SPEC['name']})")
                require(labctl(spec_file, "up", timeout=UP_TIMEOUT), "labctl up")
            figures, timeline = measure_lab(spec, triggers, chosen, args)
            if args.plot and timeline.marks:
                plot(args.plot, timeline.requests, timeline.marks,
                     f"{spec.name}: requests per instance through the LB")  # fmt: skip
                console.print(f"plot: {args.plot}")
        except BenchError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
        except KeyboardInterrupt:
            console.print("interrupted")
        finally:
            if not args.keep:
                tear_down(spec_file)
    return figures


def tear_down(spec_file: Path) -> None:
    console.print("labctl down")
    down = labctl(spec_file, "down", timeout=DOWN_TIMEOUT)
    if down.returncode != 0:
        console.print(f"[bold red]labctl down failed:[/] {escape(down.stderr.strip())}")


if __name__ == "__main__":
    main()
