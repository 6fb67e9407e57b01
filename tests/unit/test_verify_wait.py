"""`verify --wait` (labctl.verify.verify_until): while all that fails is instances whose
checks do not pass yet, the next round starts when Consul's view of the checks changes
(a blocking query), not on a timer; anything else failing is asked again on the timer.
The rounds are scripted; the blocking query itself runs against the Consul stand-in on
127.0.0.62:8500 (the port labctl uses), registered a service with a TTL check."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from labctl import verify
from labctl.spec import parse_spec
from labctl.verify import Check
from roles.contract import CONSUL_HTTP_PORT
from tests.support.consul_standin import FAST_RAFT, AgentProc, call, free_port, wait_for

ADDRESS = "127.0.0.62"
BASE = f"http://{ADDRESS}:{CONSUL_HTTP_PORT}"
SPEC = parse_spec({"name": "labverifywait", "provider": "ssh", "security": {"acl": False},
                   "hosts": [{"name": "node1", "address": ADDRESS, "consul": "server",
                              "lb": True, "demo": 1}]})[0]  # fmt: skip

CRITICAL = Check("registered", "zhibo-2", False, "192.168.56.2:8080 critical", "zhibo")
PASSING = Check("registered", "zhibo-2", True, "192.168.56.2:8080 passing", "zhibo")
NOT_ANSWERING = Check("answers", "zhibo-2", False, "ConnectError", "zhibo")
NOTHING_TO_ROUTE = Check("via LB", "other answers", False,
                         f"{verify.NO_PASSING_INSTANCE}; HTTP 502: 30", "zhibo")  # fmt: skip
STRAY_ANSWER = Check("via LB", "other answers", False, "HTTP 502: 3", "zhibo")


@pytest.fixture
def scripted(monkeypatch):
    """verify_until over scripted rounds; what it waited with, in order."""
    waits: list[tuple] = []

    def run(*rounds: list[Check]) -> list[Check]:
        answers = iter(rounds)
        monkeypatch.setattr(verify, "verify", lambda spec, connections: next(answers))
        monkeypatch.setattr(verify, "health_index", lambda client, spec, after=None, wait=0: (
            waits.append(("blocking", after)) if after else None) or "41")  # fmt: skip
        monkeypatch.setattr(verify.time, "sleep", lambda seconds: waits.append(("timer",)))
        return verify.verify_until(SPEC, 60)

    run.waits = waits
    return run


def test_a_round_waiting_only_for_checks_to_pass_waits_for_consuls_view_to_change(scripted):
    assert scripted([CRITICAL, NOTHING_TO_ROUTE], [PASSING]) == [PASSING]
    assert scripted.waits == [("blocking", "41")]


@pytest.mark.parametrize("other", [NOT_ANSWERING, STRAY_ANSWER])
def test_a_round_with_anything_else_failing_waits_on_the_timer(other, scripted):
    assert scripted([CRITICAL, other], [PASSING]) == [PASSING]
    assert scripted.waits == [("timer",)]


def test_only_checks_not_passing_and_what_follows_from_them_await_health():
    assert verify.awaits_health(CRITICAL) and verify.awaits_health(NOTHING_TO_ROUTE)
    assert not any(verify.awaits_health(c) for c in (PASSING, NOT_ANSWERING, STRAY_ANSWER))


@pytest.fixture(scope="module")
def consul(tmp_path_factory) -> Iterator[AgentProc]:
    agent = AgentProc(tmp_path_factory.mktemp("verifywait"), "node1", ADDRESS, CONSUL_HTTP_PORT,
                      free_port([ADDRESS]), dict(FAST_RAFT))  # fmt: skip
    try:
        agent.start("-server", "-bootstrap-expect=1")
        wait_for(lambda: call("GET", f"{BASE}/v1/status/leader")[2] not in (b'""', b""), 30,
                 "a leader")  # fmt: skip
        yield agent
    finally:
        agent.kill()


def test_the_blocking_query_returns_when_a_check_changes(consul):
    service = {"ID": "zhibo-2", "Name": "zhibo", "Port": 18080,
               "Check": {"CheckID": "zhibo-2-ttl", "TTL": "60s"}}  # fmt: skip
    assert call("PUT", f"{BASE}/v1/agent/service/register", service)[0] == 200
    with httpx.Client(timeout=20) as client:
        wait_for(lambda: any(c["CheckID"] == "zhibo-2-ttl" for c in
                             client.get(f"{BASE}/v1/health/state/any").json()), 30,
                 "the check in the catalog")  # fmt: skip
        index = verify.health_index(client, SPEC)
        assert index is not None
        answered: dict = {}

        def block() -> None:
            answered["index"] = verify.health_index(client, SPEC, after=index, wait=15)
            answered["at"] = time.monotonic()

        waiter = threading.Thread(target=block)
        waiter.start()
        time.sleep(1)  # the query is blocking by now: nothing changed yet
        assert "index" not in answered
        passed_at = time.monotonic()
        assert call("PUT", f"{BASE}/v1/agent/check/pass/zhibo-2-ttl")[0] == 200
        waiter.join(20)
    assert int(answered["index"]) > int(index)
    assert answered["at"] - passed_at < 10  # woken by the change, not by the 15 s wait


def test_the_lbs_502s_for_a_service_with_no_passing_instance_await_health():
    """Before any instance passes, the LB's upstream is its placeholder (a 502 each)."""
    entries = [{"Node": {"Node": "node1"}, "Checks": [{"Status": "critical"}],
                "Service": {"ID": "zhibo-1", "Service": "zhibo_service",
                            "Address": ADDRESS, "Port": 8080}}]  # fmt: skip
    lb = httpx.MockTransport(lambda request: httpx.Response(502, text="Bad Gateway"))
    with httpx.Client(transport=lb) as client:
        checks = verify.lb_checks(client, SPEC, "zhibo_service", entries)
    failing = [c for c in checks if not c.ok]
    assert [(c.what, c.target) for c in failing] == [("via LB", "other answers")]
    assert failing[0].detail == f"{verify.NO_PASSING_INSTANCE}; HTTP 502: {verify.LB_SAMPLE}"
    assert verify.awaits_health(failing[0])
