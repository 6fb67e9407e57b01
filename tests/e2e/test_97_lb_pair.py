"""Two LBs, one address (docs/lb-pair.md), live on the docker road: a lab of its own with
three Consul servers, two of them LBs sharing network.lb_address by VRRP (keepalived
beside each LB, the host containers on the lab's Docker bridge).

In order: `up` verified, the address held by the first LB; every LB serving the same
upstreams after a scale; a rolling apply that replaces both LBs under a fresh and a
keep-alive request loop through the shared address, with no failed GET (each LB hands
the address over before it stops, and still answers what it owes from the address on its
loopback); `labctl restart-lb` under the same loops, none failing either; a hand-over
refused in one sentence when the other LB does not serve, nothing
stopped; a drain an interrupted run left, lifted by the next `apply`; the master's host
powered off (`labctl fail`),
failures only inside the failover window, which the lab's own records (Docker's kill
event, the backup keepalived's vrrp.json) measure (bench/vrrp_pair.py prints its length,
issue 19's goal being 1 s); a partition between the
LBs (VRRP dropped on one), which `verify` names as split brain in one sentence, and
which heals; `down` leaving nothing.

The lab has a name of the suite's own (`<base>-pair`) on the offline road's subnet,
which runs on the same pytest-xdist worker before this module and leaves nothing.
"""

from __future__ import annotations

import json
import threading
import time

import docker
import httpx
import pytest

from labctl import lb_client, security
from labctl.connections import connection_data
from labctl.converge import ConvergeError
from labctl.lifecycle import converge_lab
from labctl.paths import docker_network_name, host_container_name, with_state
from roles.contract import (
    KEEPALIVED_CONTAINER,
    KEEPALIVED_DRAIN_FILE,
    LAB_LABEL,
    VRRP_RECORD_PATH,
    vrrp_drain_command,
)
from testbed.traffic import RequestLoop, assert_served_throughout, calm_rates, wall
from tests.e2e.conftest import finish_lab, lab_up, labctl, refresh_connections, wait_for
from tests.e2e.conftest import write_spec as write_spec_file
from tests.e2e.probes import on_host
from tests.support.suite_labs import BASE_NAME, LABS, SuiteLab

PAIR = SuiteLab(f"{BASE_NAME}-pair", LABS.offline.prefix)
ADDRESS = PAIR.address(10)
MASTER, BACKUP = "node2", "node3"
SERVICE = "zhibo_service"
# A request in flight on a connection the dead host had accepted is retransmitted
# (0.2, 0.4, 0.8 s) until the new holder resets it: it may fail that long after the
# address moved (docs/lb-pair.md, "What the window is made of").
IN_FLIGHT_GRACE = 1.5
# The request loops' timeout: above nginx's 1 s connect timeout to a vanished instance plus
# a SYN retransmission (1 s), under the loops' longest allowed silence (4 s).
LOOP_TIMEOUT = 3.0


def spec_data(images: dict) -> dict:
    return {
        "name": PAIR.name,
        "provider": "docker",
        "images": images,
        "network": {"subnet": str(PAIR.subnet), "allow_any_subnet": True,
                    "lb_address": ADDRESS},
        "hosts": [
            {"name": "node1", "address": PAIR.address(2), "consul": "server",
             "bootstrap": True, "demo": 1},
            {"name": MASTER, "address": PAIR.address(3), "consul": "server", "lb": True,
             "demo": 1},
            {"name": BACKUP, "address": PAIR.address(4), "consul": "server", "lb": True,
             "demo": 1},
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def pair_spec(tmp_path_factory, e2e_images):
    return write_spec_file(tmp_path_factory.mktemp("pair") / "lab.yaml", spec_data(e2e_images))


@pytest.fixture(scope="module")
def pair(pair_spec):
    with lab_up(pair_spec) as (spec, result):
        yield spec, connection_data(spec), result


def record(address: str) -> dict:
    with httpx.Client(timeout=2, trust_env=False) as client:
        return lb_client.vrrp_record(client, address)


def state_of(address: str) -> str | None:
    """The keepalived state an LB publishes (None: its nginx does not answer yet)."""
    try:
        return record(address)["state"]
    except httpx.HTTPError:
        return None


def answering() -> str | None:
    """The LB that answers on the shared address (None: none does, e.g. mid-move)."""
    try:
        return record(ADDRESS)["host"]
    except httpx.HTTPError:
        return None


def holders(connections) -> list[str]:
    """The LB hosts whose kernel holds the address."""
    return [h for h in (MASTER, BACKUP) if lb_client.holds_address(connections[h], ADDRESS)]


def address_rows(verify) -> list[tuple[bool, str]]:
    """`verify --json`'s rows about who holds the shared address: (ok, detail)."""
    checks = json.loads(verify.stdout)["checks"]
    return [(c["ok"], c["detail"]) for c in checks if c["what"] == "LB address"]


def status_json(pair_spec) -> dict:
    result = labctl(pair_spec, "status", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class HolderWatch:
    """Who answers on the shared address, every 0.1 s, in a thread: (monotonic, host)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=1, trust_env=False) as client:
            while not self._halt.is_set():
                try:
                    host = client.get(f"http://{ADDRESS}{VRRP_RECORD_PATH}").json()["host"]
                except (httpx.HTTPError, ValueError, KeyError):
                    host = "-"
                self.seen.append((time.monotonic(), host))
                time.sleep(0.1)

    def __enter__(self) -> HolderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self._thread.join()

    def hosts(self) -> list[str]:
        """The hosts seen answering, in order, each run of answers once."""
        runs: list[str] = []
        for _, host in self.seen:
            if host != "-" and (not runs or runs[-1] != host):
                runs.append(host)
        return runs


def in_window(loop: RequestLoop, at: float, outcome: str, lost: float, taken: float) -> bool:
    """Whether a failed request (recorded at monotonic `at`) was in flight inside the
    window: from the master's loss (`lost`, Unix time) to the backup's taking over
    (`taken`) plus IN_FLIGHT_GRACE. A timeout is recorded when it expires: its request
    went out `loop.timeout` earlier (an answer the dead host had acknowledged and never
    sent is waited for until then)."""
    end = wall(at)
    start = end - loop.timeout if "Timeout" in str(outcome) else end
    return end >= lost and start <= taken + IN_FLIGHT_GRACE


def loops() -> tuple[RequestLoop, RequestLoop]:
    """A fresh and a keep-alive loop through the shared address, each giving a request
    LOOP_TIMEOUT: a request lost in flight at a move then stays inside the loops' longest
    allowed silence (testbed/traffic.py: MAX_SILENCE)."""
    url = f"http://{ADDRESS}/{SERVICE}"
    return RequestLoop(url, timeout=LOOP_TIMEOUT), RequestLoop(
        url, keepalive=True, timeout=LOOP_TIMEOUT
    )


def test_up_verifies_with_the_first_lb_holding_the_address(pair, pair_spec):
    spec, connections, result = pair
    assert "checks failed" not in result.stderr
    verify = labctl(pair_spec, "verify", "--wait", "60", "--json", timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert address_rows(verify) == [(True, f"held by {MASTER}")]
    assert holders(connections) == [MASTER]
    assert record(PAIR.address(3))["state"] == "MASTER"
    assert record(PAIR.address(4))["state"] == "BACKUP"
    status = status_json(pair_spec)
    assert status["lb_address"]["holders"] == [MASTER]
    assert [v["host"] for v in status["lb_address"]["lbs"]] == [MASTER, BACKUP]
    # keepalived beside each LB, on the LB hosts only; each LB its own token.
    for host in ("node1", MASTER, BACKUP):
        names = on_host(connections, host, "docker ps --format '{{.Names}}'").split()
        assert (KEEPALIVED_CONTAINER in names) == (host != "node1"), (host, names)
    tokens = security.saved_tokens(spec)
    assert {f"consul-template-{MASTER}", f"consul-template-{BACKUP}"} <= set(tokens)
    assert "consul-template" not in tokens


def test_every_lb_serves_the_same_upstreams_after_a_scale(pair, pair_spec):
    result = labctl(pair_spec, "scale", f"{SERVICE}=5", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    wanted = {f"{PAIR.address(2 + n % 3)}:{8080 + n // 3}" for n in range(5)}

    def every_lb_runs_them():
        with httpx.Client(timeout=3, trust_env=False) as client:
            records = [lb_client.read_lb_record(client, PAIR.address(n)) for n in (3, 4)]
        runs = [set(record.upstreams.get(SERVICE, [])) for record in records]
        return all(r == wanted for r in runs)

    wait_for(every_lb_runs_them, 60, f"both LBs running {sorted(wanted)}")
    verify = labctl(pair_spec, "verify", "--wait", "60", timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_rolling_apply_replacing_both_lbs_hands_the_address_over_without_a_failed_request(
    pair, pair_spec
):
    """`lb_wait` is part of the LB container's spec: an apply with another value replaces
    both LBs, one at a time, each handing the address over first; an apply without it
    replaces them back. Four moves of the address under both loops, every one planned
    (the master's drain, then the backup's towards the drained master), none failing a
    GET: new connections wait at the old holder while the address moves, the LB that
    just lost it still sends the answers it owes from its loopback copy, and finishes
    what it serves before it is stopped (docs/lb-pair.md)."""
    spec, connections, _ = pair
    fresh, kept = loops()
    with fresh, kept, HolderWatch() as watch:
        rates = calm_rates(fresh, kept)
        start = time.monotonic()
        converge_lab(with_state(spec), lambda line: None, ("--data", "lb_wait=2s:9s"))
        back = labctl(pair_spec, "apply", timeout=900)
        assert back.returncode == 0, back.stdout + back.stderr
        wait_for(lambda: holders(connections) == [MASTER], 30, f"{MASTER} holding the address")
        wait_for(lambda: answering() == MASTER, 10, f"{MASTER} answering on the address")
        end = time.monotonic()
    for loop in (fresh, kept):
        failed_at = [(f"{wall(t):.3f}", outcome) for t, outcome in loop.refusals]
        print(f"rolling LB replacement: {dict(loop.outcomes)}, {loop.retried} retries, "
              f"failures at (Unix time, outcome) {failed_at}")  # fmt: skip
    # Each replacement of the master's LB moved the address away and back, twice.
    assert watch.hosts() == [MASTER, BACKUP, MASTER, BACKUP, MASTER], watch.hosts()
    for loop, rate in ((fresh, rates[0]), (kept, rates[1])):
        assert loop.failures == {}, f"failed GETs: {dict(loop.outcomes)}"
        assert_served_throughout(loop, rate, start, end, "rolling LB replacement")


def test_restart_lb_restarts_every_lb_without_a_failed_request(pair, pair_spec):
    """`labctl restart-lb`: each LB in turn hands the address over, finishes what it
    serves, is started again and serves; the address ends with the first LB. Every move
    planned, none failing a GET of either loop."""
    _, connections, _ = pair
    before = {h: on_host(connections, h, "docker inspect -f '{{.State.StartedAt}}' lb")
              for h in (MASTER, BACKUP)}  # fmt: skip
    fresh, kept = loops()
    with fresh, kept, HolderWatch() as watch:
        rates = calm_rates(fresh, kept)
        start = time.monotonic()
        result = labctl(pair_spec, "restart-lb", timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        wait_for(lambda: answering() == MASTER, 10, f"{MASTER} answering on the address")
        end = time.monotonic()
    print(f"restart-lb: fresh {dict(fresh.outcomes)}, keep-alive {dict(kept.outcomes)} "
          f"({kept.retried} retries)")  # fmt: skip
    assert f"LB restarted on {MASTER}, {BACKUP}" in result.stderr
    for host in (MASTER, BACKUP):
        started = on_host(connections, host, "docker inspect -f '{{.State.StartedAt}}' lb")
        assert started != before[host], f"{host}'s LB was not restarted"
        assert on_host(connections, host, f"cat {KEEPALIVED_DRAIN_FILE}").strip() == "0", host
    assert holders(connections) == [MASTER]
    assert watch.hosts() == [MASTER, BACKUP, MASTER], watch.hosts()
    for loop, rate in ((fresh, rates[0]), (kept, rates[1])):
        assert loop.failures == {}, f"failed GETs: {dict(loop.outcomes)}"
        assert_served_throughout(loop, rate, start, end, "restart-lb")


def test_a_hand_over_with_no_other_lb_serving_is_refused_in_one_sentence_and_stops_nothing(
    pair, pair_spec
):
    """The backup's LB stopped: a replacement of the master's LB (its host alone) finds
    nobody to take the address within lb_handover_timeout, says so, and leaves the
    master's LB running and holding the address."""
    spec, connections, _ = pair
    lb_id = on_host(connections, MASTER, "docker inspect -f '{{.Id}}' lb").strip()
    on_host(connections, BACKUP, "docker stop lb")
    try:
        # Its nginx gone, its keepalived gives up (FAULT): read beside it, nginx is away.
        wait_for(lambda: '"state": "FAULT"' in on_host(
            connections, BACKUP, f"docker exec {KEEPALIVED_CONTAINER} cat /var/lib/lb/vrrp.json"),
            10, f"{BACKUP}'s keepalived in FAULT")  # fmt: skip
        others = [flag for h in spec.hosts if h.name != MASTER for flag in ("--exclude", h.name)]
        with pytest.raises(ConvergeError) as refused:
            converge_lab(with_state(spec), lambda line: None,
                         ("--data", "lb_wait=2s:8s", *others))  # fmt: skip
        assert (
            f"no other LB took {ADDRESS} from {MASTER} within 10 s (is every other LB host "
            f"down or not serving?); {MASTER} keeps it and its LB was not stopped"
        ) in str(refused.value)
        assert on_host(connections, MASTER, "docker inspect -f '{{.Id}} {{.State.Running}}' lb"
                       ).split() == [lb_id, "true"]  # fmt: skip
        assert holders(connections) == [MASTER]
        assert answering() == MASTER
    finally:
        on_host(connections, BACKUP, "docker start lb")
    wait_for(lambda: state_of(PAIR.address(4)) == "BACKUP", 30,
             f"{BACKUP} serving again, its keepalived BACKUP")  # fmt: skip


def test_an_lb_left_drained_by_an_interrupted_run_gets_the_address_back_at_the_next_apply(
    pair, pair_spec
):
    """What a run stopped between a hand-over and its undrain leaves: the master drained,
    the address with the backup. The next `apply` drains the backup towards the master
    (a planned move), then lifts both drains; the one after changes nothing."""
    _, connections, _ = pair
    drain = vrrp_drain_command(MASTER, ADDRESS, [PAIR.address(4)], 10)
    on_host(connections, MASTER, drain)
    wait_for(lambda: holders(connections) == [BACKUP], 10, f"{BACKUP} holding the address")
    result = labctl(pair_spec, "apply", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: holders(connections) == [MASTER], 30, f"{MASTER} holding it again")
    for host in (MASTER, BACKUP):
        assert on_host(connections, host, f"cat {KEEPALIVED_DRAIN_FILE}").strip() == "0", host
    changes = result.stdout + result.stderr
    assert f"Hand the shared address to the first LB that serves on {BACKUP}" in changes
    # With the address where the spec puts it and no drain left, neither step acts.
    again = labctl(pair_spec, "apply", timeout=900)
    assert again.returncode == 0 and "no changes" in again.stderr, again.stdout + again.stderr


def test_the_master_host_failing_costs_failures_only_inside_the_failover_window(pair, pair_spec):
    spec, connections, _ = pair
    engine = docker.from_env()
    fresh, kept = loops()
    with fresh, kept:
        rates = calm_rates(fresh, kept)
        start = time.monotonic()
        since = time.time()
        result = labctl(pair_spec, "fail", MASTER, timeout=300)
        assert result.returncode == 0, result.stderr
        wait_for(lambda: answering() == BACKUP, 10, f"{BACKUP} answering on the address")
        time.sleep(3)  # the loops run on past the move, so that late failures would show
        end = time.monotonic()
    # Docker's own record of the kill (whole seconds here; the event carries nanoseconds).
    kills = engine.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True, filters={
        "container": host_container_name(spec, MASTER), "event": "kill"})  # fmt: skip
    killed = min(event["timeNano"] / 1e9 for event in kills)
    backup = record(PAIR.address(4))
    window = backup["since"] - killed
    print(
        f"master's host killed: {BACKUP} MASTER {window:.2f} s later; fresh "
        f"{dict(fresh.outcomes)}, keep-alive {dict(kept.outcomes)} ({kept.retried} retries)"
    )
    assert backup["state"] == "MASTER"
    # How long the window is, is the bench's figure (bench/vrrp_pair.py): held to 1 s
    # here, a busy machine would fail the test, not the lab.
    assert window > 0, f"the address moved {window:.2f} s after the kill"
    for loop in (fresh, kept):
        late = [(round(wall(t) - killed, 2), outcome) for t, outcome in loop.refusals
                if not in_window(loop, t, outcome, killed, backup["since"])]  # fmt: skip
        assert late == [], f"failures outside the window (s after the kill, outcome): {late}"
    # Issue 19 hoped a keep-alive client would lose only the request it had in flight; once
    # its connection is gone its reconnections fail inside the window like fresh ones
    # (docs/lb-pair.md): only where they fail is held here.
    for loop, rate in ((fresh, rates[0]), (kept, rates[1])):
        assert_served_throughout(loop, rate, start, end, "master's host failing")

    recovered = labctl(pair_spec, "recover", MASTER, timeout=600)
    assert recovered.returncode == 0, recovered.stderr
    refresh_connections(spec, connections)
    wait_for(lambda: holders(connections) == [MASTER], 120, f"{MASTER} holding it again")
    verify = labctl(pair_spec, "verify", "--wait", "120", timeout=400)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_partition_between_the_lbs_is_named_by_verify_and_heals(pair, pair_spec):
    _, connections, _ = pair
    drop = "iptables -w -{} INPUT -p 112 -j DROP"  # VRRP's IP protocol number
    on_host(connections, BACKUP, drop.format("I"))
    try:
        wait_for(lambda: holders(connections) == [MASTER, BACKUP], 10, "both LBs holding it")
        verify = labctl(pair_spec, "verify", "--json", timeout=300)
        assert verify.returncode != 0
        assert address_rows(verify) == [(False, (
            f"split brain: {MASTER} and {BACKUP} both hold {ADDRESS}, so their keepalived do "
            "not hear each other; check that VRRP (IP protocol 112) passes between them, or "
            "set network.lb_unicast: true where the network drops its multicast."
        ))]  # fmt: skip
    finally:
        on_host(connections, BACKUP, drop.format("D"))
    wait_for(lambda: holders(connections) == [MASTER], 10, f"only {MASTER} holding it")
    verify = labctl(pair_spec, "verify", "--wait", "30", timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_down_leaves_nothing(pair, pair_spec):
    spec, _, _ = pair
    finish_lab(pair_spec)
    engine = docker.from_env()
    label = {"label": f"{LAB_LABEL}={spec.name}"}
    assert engine.containers.list(all=True, filters=label) == []
    assert engine.volumes.list(filters=label) == []
    assert engine.networks.list(names=[docker_network_name(spec)]) == []
