"""Registrator mode, end to end (docs/registrator.md): the suite's lab with the seed's
service registered by the lab and a second one, `api`, registered by registrator (the
stand-in, tests/standins/registrator, unless LAB_E2E_IMAGES=real). It comes up and
verifies; scales up and down under the request loops with no failed GET, and each instance
that goes leaves the LB before its container stops (the LB's and Docker's own records); a
container started by hand with the service's labels is served through the LB, told apart
by verify and status, left alone by apply, and leaves the upstream when killed and Consul
when removed; registrator restarted, or away while containers come and go, leaves no
duplicate, loses none and leaves none behind, and so does its host's Consul agent
restarted; and `down` leaves nothing, hand-started containers included.

It runs after test_90, which ends with the shared lab's `down`: it brings the lab up again
with its own spec, and ends with the lab's `down`; no later module uses that lab.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import pytest

from labctl import security
from tests.e2e.conftest import (
    E2E_SUBNET,
    assert_nothing_left,
    e2e_spec_data,
    labctl,
    refresh_connections,
    wait_for,
    write_spec,
)
from tests.e2e.events import LbTimeline, assert_left_the_lb_before_it_stopped, container_events
from tests.e2e.probes import FOLLOW_DEADLINE, LB, SERVICE, Traffic, consul, lb_state, on_host

API = "api"
# Registrator's -resync: what repairs a lost event or a change made while it was away.
RESYNC = 10
# A registrator change reaches the LB within a resync, a check and the LB's deadline.
REPAIR_DEADLINE = RESYNC + FOLLOW_DEADLINE
ADDRESSES = {"node1": f"{E2E_SUBNET}.2", "node2": f"{E2E_SUBNET}.3", "node3": f"{E2E_SUBNET}.4"}


def with_registrator(images: dict) -> dict:
    data = e2e_spec_data(images)
    data["services"] = [
        {"name": SERVICE},
        {"name": API, "registration": "registrator", "port": 9080,
         "instances": {"node1": 1, "node2": 1},
         "check": {"interval": "2s", "timeout": "1s", "deregister_critical_after": "1m"}},
    ]  # fmt: skip
    return data


@pytest.fixture(scope="module")
def reg(lab, e2e_images, tmp_path_factory):
    """The shared lab with the registrator-mode service; (spec file, spec, connections).
    `up`, not `apply`: test_90, before this module, ends with the shared lab's `down`."""
    spec, connections, _ = lab
    spec_file = write_spec(tmp_path_factory.mktemp("registrator") / "lab.yaml",
                           with_registrator(e2e_images))  # fmt: skip
    applied = labctl(spec_file, "up", timeout=900)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    refresh_connections(spec, connections)
    verified = labctl(spec_file, "verify", "--wait", "180", timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return spec_file, spec, connections


def api_entries(spec) -> list[dict]:
    return consul(spec, f"/v1/health/service/{API}")


def api_ids(spec) -> list[str]:
    return sorted(e["Service"]["ID"] for e in api_entries(spec))


def containers_registered(spec) -> Counter:
    """How many registrations each container has (registrator's IDs host:container:port)."""
    return Counter(sid.split(":")[1] for sid in api_ids(spec))


def api_upstream() -> set[str]:
    return set(lb_state().upstreams.get(API, []))


def answered_by(name: str) -> bool:
    with httpx.Client(timeout=5) as client:
        return any(
            client.get(f"http://{LB}/{API}").headers.get("X-Instance") == name for _ in range(10)
        )


def demo_image(connections) -> str:
    """The lab's demo-service image, as a person would find it on a host."""
    return on_host(connections, "node3", "docker inspect -f '{{.Config.Image}}' zhibo-3").strip()


def start_by_hand(connections, host: str, name: str, port: int) -> None:
    """`docker run` as a person would: the service's labels, no label of the lab's."""
    address = ADDRESSES[host]
    on_host(connections, host, (
        f"docker run -d --name {name} --net=host --expose {port} "
        f"-e DEMO_ID={name} -e DEMO_TITLE={name} -e DEMO_ADDRESS={address} -e DEMO_PORT={port} "
        f"-l SERVICE_NAME={API} -l SERVICE_CHECK_HTTP=/health -l SERVICE_CHECK_INTERVAL=2s "
        f"-l SERVICE_CHECK_TIMEOUT=1s {demo_image(connections)}"
    ))  # fmt: skip


def test_up_and_verified_with_registrators_own_registrations(reg):
    spec_file, spec, connections = reg
    report = json.loads(labctl(spec_file, "verify", "--json", timeout=120).stdout)
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    assert report["registration"] == {SERVICE: "lab", API: "registrator"}
    entries = api_entries(spec)
    assert sorted(e["Service"]["ID"].split(":", 1)[1] for e in entries) == [
        "api-1:9080", "api-2:9080",
    ]  # fmt: skip
    # Registered by registrator (its Meta holds the labels), never by the lab.
    for entry in entries:
        meta = entry["Service"]["Meta"] or {}
        assert "lab_managed" not in meta and meta.get("check_http") == "/health", meta
    assert {e["Service"]["Address"] for e in entries} == {ADDRESSES["node1"], ADDRESSES["node2"]}
    # Registrator on every agent host: the socket read-only, its token in no argument and
    # no variable, only in the file it names.
    for host in ("node1", "node2", "node3"):
        shown = on_host(connections, host, "docker inspect registrator")
        inspected = json.loads(shown)[0]
        assert inspected["State"]["Running"], host
        socket = next(m for m in inspected["Mounts"] if m["Destination"] == "/tmp/docker.sock")
        assert socket["RW"] is False, socket
        secret = security.token(spec, f"registrator-{host}")
        assert secret and secret not in shown, host
        assert "CONSUL_HTTP_TOKEN_FILE=/run/registrator/token" in inspected["Config"]["Env"]


def test_scale_up_and_down_under_load_loses_nothing(reg):
    spec_file, spec, connections = reg
    with Traffic("scaling api up", API) as traffic:
        up = labctl(spec_file, "scale", f"{API}=4", timeout=600)
        assert up.returncode == 0, up.stderr
        wait_for(lambda: len(api_upstream()) == 4, REPAIR_DEADLINE, "four api instances in the LB")
    traffic.assert_no_failed_get()

    since = time.time()
    with LbTimeline() as timeline, Traffic("scaling api down", API) as traffic:
        down = labctl(spec_file, "scale", f"{API}=2", timeout=600)
    assert down.returncode == 0, down.stderr
    traffic.assert_no_failed_get()
    events = container_events(connections, ("node1", "node2"), "demo_service", since, time.time())
    assert_left_the_lb_before_it_stopped(timeline, events, API, {
        "api-1-2": f"{ADDRESSES['node1']}:9081",
        "api-2-2": f"{ADDRESSES['node2']}:9081",
    })  # fmt: skip
    wait_for(lambda: containers_registered(spec) == Counter({"api-1": 1, "api-2": 1}),
             REPAIR_DEADLINE, "the removed instances out of Consul")  # fmt: skip


def test_a_container_started_by_hand_is_served_then_leaves_when_killed_and_removed(reg):
    spec_file, spec, connections = reg
    where = f"{ADDRESSES['node3']}:9090"
    started = time.monotonic()
    start_by_hand(connections, "node3", "by-hand", 9090)
    try:
        wait_for(lambda: answered_by("by-hand"), REPAIR_DEADLINE, "by-hand served through the LB")
        print(f"by-hand: docker run to its first answer through the LB "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip

        report = json.loads(labctl(spec_file, "verify", "--json", timeout=120).stdout)
        assert report["ok"], [c for c in report["checks"] if not c["ok"]]
        (listed,) = [c for c in report["checks"] if c["target"] == "by registrator"]
        assert "not in the spec, registered by registrator" in listed["detail"]
        assert ":by-hand:9090" in listed["detail"]
        status = labctl(spec_file, "status", timeout=120)
        shown = status.stdout + status.stderr
        assert status.returncode == 0 and ":by-hand:9090" in shown, shown
        assert "not in the spec, registered by registrator" in shown

        applied = labctl(spec_file, "apply", timeout=600)
        assert applied.returncode == 0, applied.stderr
        assert on_host(connections, "node3", "docker inspect -f '{{.State.Running}}' by-hand") \
            .strip() == "true"  # fmt: skip
        assert containers_registered(spec)["by-hand"] == 1

        on_host(connections, "node3", "docker kill by-hand")
        wait_for(lambda: where not in api_upstream(), FOLLOW_DEADLINE, "by-hand out of the LB")
        on_host(connections, "node3", "docker rm by-hand")
        wait_for(lambda: "by-hand" not in containers_registered(spec), REPAIR_DEADLINE,
                 "by-hand out of Consul")  # fmt: skip
    finally:
        on_host(connections, "node3", "docker rm -f by-hand >/dev/null 2>&1 || true")


def test_registrator_restarted_or_away_duplicates_none_loses_none_leaves_none(reg):
    _, spec, connections = reg
    before = containers_registered(spec)
    with Traffic("registrator restarted on node1", API) as traffic:
        on_host(connections, "node1", "docker restart registrator")
        wait_for(lambda: _synced_since_its_start(connections, "node1"), REPAIR_DEADLINE,
                 "registrator on node1 synced after its restart")  # fmt: skip
    traffic.assert_no_failed_get()
    assert containers_registered(spec) == before

    # Away on node2 while one container goes and another comes.
    start_by_hand(connections, "node2", "gone", 9092)
    try:
        wait_for(lambda: containers_registered(spec)["gone"] == 1, REPAIR_DEADLINE,
                 "gone registered")  # fmt: skip
        on_host(connections, "node2", "docker stop registrator")
        on_host(connections, "node2", "docker rm -f gone")
        start_by_hand(connections, "node2", "late", 9091)
        on_host(connections, "node2", "docker start registrator")
        wanted = before + Counter({"late": 1})
        wait_for(lambda: containers_registered(spec) == wanted, REPAIR_DEADLINE,
                 f"exactly {dict(wanted)} registered after registrator's return")  # fmt: skip
        wait_for(lambda: answered_by("late"), REPAIR_DEADLINE, "late served through the LB")
    finally:
        on_host(connections, "node2", "docker rm -f gone late >/dev/null 2>&1 || true")
        on_host(connections, "node2", "docker start registrator >/dev/null")


def test_its_hosts_consul_agent_restarted_duplicates_none_loses_none(reg):
    """The agent registrator writes to goes away and comes back: registrator's next resync
    registers again what the agent may have lost, and nothing is doubled or dropped."""
    _, spec, connections = reg
    before = containers_registered(spec)
    served = {e["Service"]["ID"] for e in api_entries(spec)}
    with Traffic("the Consul agent restarted on node2", API) as traffic:
        on_host(connections, "node2", "docker restart consul")
        wait_for(lambda: _synced_since(connections, "node2", "consul"), REPAIR_DEADLINE,
                 "registrator on node2 synced after its agent's restart")  # fmt: skip
        wait_for(lambda: {e["Service"]["ID"] for e in api_entries(spec)} == served,
                 REPAIR_DEADLINE, "every api registration back in Consul")  # fmt: skip
    traffic.assert_no_failed_get()
    assert containers_registered(spec) == before


def _synced_since_its_start(connections, host: str) -> bool:
    """Registrator's log since its last start shows its first sync done."""
    return _synced_since(connections, host, "registrator")


def _synced_since(connections, host: str, container: str) -> bool:
    """Registrator's log since `container`'s last start shows a sync done."""
    start = on_host(connections, host, f"docker inspect -f '{{{{.State.StartedAt}}}}' {container}")
    logs = on_host(connections, host, f"docker logs --since {start.strip()} registrator 2>&1")
    return "Syncing services on" in logs


def test_down_leaves_nothing_hand_started_containers_included(reg):
    spec_file, spec, connections = reg
    start_by_hand(connections, "node1", "left-by-hand", 9093)
    result = labctl(spec_file, "down", timeout=300)
    assert result.returncode == 0, result.stderr
    assert_nothing_left(spec)
