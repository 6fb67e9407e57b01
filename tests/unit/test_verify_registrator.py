"""`labctl verify` on a lab with a registrator-mode service (examples/registrator.yaml):
the spec's instances are found under registrator's IDs, a container someone started with
the service's labels is listed as registrator's without failing, and any other stray
registration still fails. Consul's answers and the instances' are faked (httpx's
MockTransport): nothing leaves the process."""

from __future__ import annotations

import itertools

import httpx

from labctl.spec import load_spec
from labctl.verify import BY_REGISTRATOR, instance_checks, lb_checks
from tests.conftest import PROJECT_ROOT

SPEC, _ = load_spec(PROJECT_ROOT / "examples" / "registrator.yaml")
LB = "192.168.59.4"


def entry(sid: str, node: str, address: str, port: int, status: str = "passing") -> dict:
    return {
        "Node": {"Node": node},
        "Service": {"ID": sid, "Service": "danmu_service", "Address": address, "Port": port},
        "Checks": [{"Status": status}],
    }


SPEC_INSTANCES = [
    entry("server1:danmu-service-1:9080", "server1", "192.168.59.2", 9080),
    entry("server2:danmu-service-2:9080", "server2", "192.168.59.3", 9080),
]
BY_HAND = entry("server3:by-hand:9090", "server3", "192.168.59.4", 9090)
LINES = {
    "192.168.59.2:9080": "<h1>danmu_service 1 #IP:192.168.59.2</h1>",
    "192.168.59.3:9080": "<h1>danmu_service 2 #IP:192.168.59.3</h1>",
}


def client(answering: list[str]) -> httpx.Client:
    """Instances answer their own line; the LB's /danmu_service answers from each of
    `answering` in turn (X-Instance)."""
    turns = itertools.cycle(answering)

    def handle(request: httpx.Request) -> httpx.Response:
        where = f"{request.url.host}:{request.url.port}"
        if request.url.host == LB and request.url.path == "/danmu_service":
            return httpx.Response(200, headers={"X-Instance": next(turns)}, text="ok")
        return httpx.Response(200, text=LINES.get(where, "<h1>by-hand</h1>"))

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_the_spec_s_instances_are_found_under_registrators_ids():
    with client(["danmu-service-1", "danmu-service-2"]) as http:
        checks = instance_checks(http, SPEC, "danmu_service", SPEC_INSTANCES)
    assert [(c.what, c.target, c.ok) for c in checks] == [
        ("registered", "danmu-service-1", True),
        ("answers", "danmu-service-1", True),
        ("registered", "danmu-service-2", True),
        ("answers", "danmu-service-2", True),
    ]


def test_a_hand_started_container_is_told_apart_and_fails_nothing():
    entries = [*SPEC_INSTANCES, BY_HAND]
    with client(["danmu-service-1", "danmu-service-2", "by-hand"]) as http:
        checks = instance_checks(http, SPEC, "danmu_service", entries)
        checks += lb_checks(http, SPEC, "danmu_service", entries)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    (listed,) = [c for c in checks if c.target == "by registrator"]
    assert listed.detail == f"{BY_REGISTRATOR}: server3:by-hand:9090"
    assert {c.target for c in checks if c.what == "via LB"} == {
        "danmu-service-1", "danmu-service-2", "by-hand",
    }  # fmt: skip


def test_a_stray_registration_of_another_kind_still_fails():
    stray = entry("rogue", "server1", "192.168.59.2", 9999)
    with client(["danmu-service-1", "danmu-service-2"]) as http:
        checks = instance_checks(http, SPEC, "danmu_service", [*SPEC_INSTANCES, stray])
    (extra,) = [c for c in checks if c.target == "extra"]
    assert not extra.ok and extra.detail == "not in the spec: rogue"


def test_a_lab_mode_service_does_not_take_a_registrator_like_id_for_registrators():
    odd = entry("server1:zhibo-9:8080", "server1", "192.168.59.2", 8080)
    with client([]) as http:
        checks = instance_checks(http, SPEC, "zhibo_service", [odd])
    assert not next(c for c in checks if c.target == "extra").ok
