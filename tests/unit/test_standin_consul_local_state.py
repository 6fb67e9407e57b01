"""The Consul stand-in's local state: check results, deferral, restarts, reaping (in-process)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.consul_standin import checks, local_state, util, wait_for


class Syncs:
    """Counts sync triggers, as the anti-entropy syncer would receive them."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.times.append(time.monotonic())

    def count(self) -> int:
        with self.lock:
            return len(self.times)


def make_state(
    tmp_path: Path, update_interval: float = 300.0
) -> tuple[local_state.LocalState, Syncs]:
    syncs = Syncs()
    state = local_state.LocalState(
        "node1", str(tmp_path), update_interval, False, util.Logger("ERROR"), syncs
    )
    return state, syncs


def ttl_service(**check: object) -> dict:
    return {"ID": "web-1", "Name": "web", "Port": 80, "Check": {"TTL": "30s", **check}}


@pytest.fixture
def states() -> list[local_state.LocalState]:
    made: list[local_state.LocalState] = []
    yield made
    for state in made:
        with state.lock:
            for cs in state.checks.values():
                state._stop(cs)


def test_output_only_change_waits_for_check_update_interval(tmp_path: Path, states) -> None:
    """local/state.go UpdateCheck: with the same status, a new output is kept locally and
    synced check_update_interval/2 + RandomStagger(check_update_interval) later (Consul's
    default is 5m); a status change is synced at once."""
    state, syncs = make_state(tmp_path, update_interval=0.6)
    states.append(state)
    state.add_service(ttl_service(Status="passing"), "", False, persist=False)
    cs = state.checks["service:web-1"]
    cs.in_sync = True
    before = syncs.count()
    changed = time.monotonic()
    state.update_check("service:web-1", "passing", "new output")
    assert syncs.count() == before
    assert cs.in_sync
    assert cs.check["Output"] == "new output"  # the agent's own view has it already
    wait_for(lambda: syncs.count() > before, 3, "the deferred output sync")
    assert 0.3 - 0.05 <= syncs.times[before] - changed <= 0.9 + 0.2
    assert not cs.in_sync

    cs.in_sync = True
    before = syncs.count()
    state.update_check("service:web-1", "critical", "down")
    assert syncs.count() == before + 1 and not cs.in_sync


def test_reregistering_a_check_keeps_its_status(tmp_path: Path, states) -> None:
    """agent.go addCheckLocked: "snapshot the current state of the health check to avoid
    potential flapping" - the new definition starts from the old status and output."""
    state, _ = make_state(tmp_path)
    states.append(state)
    state.add_service(ttl_service(), "", False, persist=True)
    state.update_check("service:web-1", "passing", "fine")
    state.add_service(ttl_service(Notes="v2"), "", False, persist=True)
    check = state.checks["service:web-1"].check
    assert (check["Status"], check["Output"], check["Notes"]) == ("passing", "fine", "v2")


def test_restored_checks_start_critical(tmp_path: Path, states) -> None:
    """agent.go loadChecks: a check restored from data_dir is set critical ("Default check
    to critical to avoid placing potentially unhealthy services into the active pool")."""
    state, _ = make_state(tmp_path)
    states.append(state)
    state.add_service(
        {
            "ID": "api-1",
            "Name": "api",
            "Port": 9000,
            "Check": {"HTTP": "http://127.0.0.1:9/", "Interval": "1h", "Status": "passing"},
        },
        "secret-token",
        False,
        persist=True,
    )
    assert state.checks["service:api-1"].check["Status"] == "passing"
    restarted, _ = make_state(tmp_path)
    states.append(restarted)
    restarted.restore([], [])
    check = restarted.checks["service:api-1"].check
    assert check["Status"] == "critical"
    assert restarted.services["api-1"].token == "secret-token"


def test_ttl_state_survives_a_restart_while_the_ttl_lasts(tmp_path: Path, states) -> None:
    """agent.go loadCheckState: a TTL check's last update is restored unless it expired."""
    state, _ = make_state(tmp_path)
    states.append(state)
    state.add_service(ttl_service(), "", False, persist=True)
    state.update_ttl("service:web-1", "passing", "heartbeat")
    restarted, _ = make_state(tmp_path)
    states.append(restarted)
    restarted.restore([], [])
    check = restarted.checks["service:web-1"].check
    assert (check["Status"], check["Output"]) == ("passing", "heartbeat")


def test_deregister_critical_after_is_at_least_a_minute_and_reaped_every_30s(
    tmp_path: Path, states
) -> None:
    """agent.go addCheck raises DeregisterCriticalServiceAfter to check_deregister_interval_min
    (1m) with a warning; reapServices runs every check_reap_interval (30s); criticality is
    timed from the first critical result (local/state.go CriticalTime)."""
    assert (local_state.DEREGISTER_INTERVAL_MIN, local_state.REAP_INTERVAL) == (60.0, 30.0)
    state, _ = make_state(tmp_path)
    states.append(state)
    state.add_service(ttl_service(DeregisterCriticalServiceAfter="2s"), "", False, True)
    cs = state.checks["service:web-1"]
    assert cs.reap_after == 60.0
    cs.critical_since = time.monotonic() - 59
    assert state.reap() == []
    cs.critical_since = time.monotonic() - 61
    assert state.reap() == [("web-1", "service:web-1")]
    state.update_check("service:web-1", "passing", "")
    assert state.reap() == []


def test_first_run_of_an_interval_check_waits_a_random_stagger(monkeypatch) -> None:
    """agent/checks/check.go run(): initialPauseTime := lib.RandomStagger(c.Interval) before
    the first check, so a new instance can take up to one interval to pass."""
    asked: list[float] = []

    def stagger(seconds: float) -> float:
        asked.append(seconds)
        return 0.6

    monkeypatch.setattr(checks, "random_stagger", stagger)
    results: list[float] = []
    runner = checks.CheckRunner(
        "c",
        "tcp",
        {"TCP": "127.0.0.1:9"},
        3.0,
        lambda *_: results.append(time.monotonic()),
        util.Logger("ERROR"),
    )
    started = time.monotonic()
    runner.start()
    try:
        wait_for(lambda: results, 5, "the first check result")
    finally:
        runner.stop()
    assert asked == [3.0]
    assert results[0] - started >= 0.6
