"""The Consul stand-in as the lab meets it: real agent processes on loopback addresses.

A module-wide 2-server + 1-client cluster on 127.0.0.2-.4, plus single agents. Clusters
use performance.raft_multiplier = 1 and a short rpc_hold_timeout (real Consul settings)
so elections take seconds; Consul's default timing is pinned by the membership and
leadership tests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.consul_standin import (
    FAST_RAFT,
    AgentProc,
    HealthServer,
    call,
    free_port,
    get_json,
    health_statuses,
    json_if_ok,
    members_table,
    run_cli,
    wait_for,
)


class Cluster:
    def __init__(self, s1: AgentProc, s2: AgentProc, c1: AgentProc) -> None:
        self.s1, self.s2, self.c1 = s1, s2, c1
        self.servers = {f"{s1.ip}:8300", f"{s2.ip}:8300"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("consul-cluster")
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    http_port, serf_port = free_port(ips), free_port(ips)
    s1 = AgentProc(work, "server-1", ips[0], http_port, serf_port, FAST_RAFT)
    s2 = AgentProc(work, "server-2", ips[1], http_port, serf_port, FAST_RAFT)
    c1 = AgentProc(work, "client-1", ips[2], http_port, serf_port, FAST_RAFT)
    try:
        s1.start("-server", "-bootstrap-expect=2", f"-retry-join={s2.serf_addr}")
        s2.start("-server", "-bootstrap-expect", "2", "-retry-join", s1.serf_addr)
        for server in (s1, s2):
            wait_for(server.leader, 30, f"a leader seen by {server.name}")
        c1.start(f"-join={s1.serf_addr}")
        wait_for(
            lambda: (
                (get_json(s1.base + "/v1/catalog/node/client-1") or {})
                .get("Node", {})
                .get("TaggedAddresses")
            ),
            20,
            "client-1's node info synced",
        )
        yield Cluster(s1, s2, c1)
    finally:
        for agent in (s1, s2, c1):
            agent.kill()


def register(agent: AgentProc, body: dict) -> None:
    status, _, text = call("PUT", agent.base + "/v1/agent/service/register", body)
    assert status == 200, text


def test_cluster_elects_a_leader_and_lists_members(cluster: Cluster) -> None:
    leaders = {a.leader() for a in (cluster.s1, cluster.s2, cluster.c1)}
    assert len(leaders) == 1 and leaders <= cluster.servers  # any server may lead
    assert sorted(get_json(cluster.c1.base + "/v1/status/peers")) == sorted(cluster.servers)

    def all_three() -> list[list[str]] | None:
        table = members_table(cluster.s2)
        return table if len(table) == 4 else None

    rows = wait_for(all_three, 10, "3 members")
    assert rows[0] == [
        "Node",
        "Address",
        "Status",
        "Type",
        "Build",
        "Protocol",
        "DC",
        "Partition",
        "Segment",
    ]
    port = cluster.s1.serf_port
    assert rows[1:] == [
        [
            "server-1",
            f"127.0.0.2:{port}",
            "alive",
            "server",
            "1.11.3",
            "2",
            "dc1",
            "default",
            "<all>",
        ],
        [
            "server-2",
            f"127.0.0.3:{port}",
            "alive",
            "server",
            "1.11.3",
            "2",
            "dc1",
            "default",
            "<all>",
        ],
        [
            "client-1",
            f"127.0.0.4:{port}",
            "alive",
            "client",
            "1.11.3",
            "2",
            "dc1",
            "default",
            "<default>",
        ],
    ]
    out = run_cli("operator", "raft", "list-peers", f"-http-addr={cluster.c1.http_addr}")
    assert out.returncode == 0, out.stderr
    peers = [line.split() for line in out.stdout.splitlines()]
    assert peers[0] == ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
    states = {p[2]: p[3] for p in peers[1:]}
    assert states == {a: "leader" if a in leaders else "follower" for a in cluster.servers}
    consul = get_json(cluster.c1.base + "/v1/catalog/service/consul")
    assert sorted((e["Node"], e["ServicePort"]) for e in consul) == [
        ("server-1", 8300),
        ("server-2", 8300),
    ]


def blocking_get(url: str, index: int, wait: str) -> tuple[float, int, Any]:
    started = time.monotonic()
    status, headers, body = call("GET", f"{url}?index={index}&wait={wait}", timeout=60)
    assert status == 200, body
    return time.monotonic() - started, int(headers["X-Consul-Index"]), json.loads(body)


def test_blocking_query_waits_while_nothing_changes(cluster: Cluster) -> None:
    """Consul's index of a read moves only when its data does (state store index table),
    and rpc.go blockingQuery answers once the index passes ?index or ?wait ends: two
    instances whose HTTP checks keep passing with the same output do not wake it."""
    target = HealthServer()
    url = cluster.s2.base + "/v1/health/service/web"  # a follower: forwarded to the leader
    try:
        for n in (1, 2):
            register(
                cluster.c1,
                {
                    "ID": f"web-{n}",
                    "Name": "web",
                    "Address": "127.0.0.1",
                    "Port": target.port,
                    "Check": {"HTTP": target.url, "Interval": "1s", "Timeout": "1s"},
                },
            )
        entries = wait_for(
            lambda: len(get_json(url + "?passing")) == 2 and get_json(url),
            15,
            "both web instances passing",
        )
        check = next(c for c in entries[0]["Checks"] if c["CheckID"] == "service:web-1")
        assert check["Output"] == f"HTTP GET {target.url}: 200 OK Output: ok"
        _, headers, _ = call("GET", url)
        index = int(headers["X-Consul-Index"])
        assert headers["X-Consul-KnownLeader"] == "true"

        elapsed, new_index, _ = blocking_get(url, index, "3s")
        assert elapsed >= 3.0 and new_index == index, (elapsed, new_index, index)

        result: dict[str, Any] = {}
        waiter = threading.Thread(target=lambda: result.update(r=blocking_get(url, index, "30s")))
        waiter.start()
        time.sleep(0.3)
        target.stop()
        waiter.join(timeout=40)
        elapsed, new_index, body = result["r"]
        assert new_index > index
        assert elapsed < 8, elapsed  # interval 1s + timeout 1s + sync, far below 30s
        assert set(health_statuses(body).values()) >= {"critical"}
        status, _, text = call(
            "GET", cluster.c1.base + "/v1/agent/health/service/name/web?format=text"
        )
        assert (status, text) == (503, b"critical")
    finally:
        target.stop()
        for n in (1, 2):
            call("PUT", cluster.c1.base + f"/v1/agent/service/deregister/web-{n}")


def test_client_service_visible_on_servers_then_deregistered(cluster: Cluster) -> None:
    register(
        cluster.c1, {"Name": "cache", "Port": 6379, "Tags": ["primary"], "Meta": {"role": "main"}}
    )
    local = get_json(cluster.c1.base + "/v1/agent/services")["cache"]
    assert local["Weights"] == {"Passing": 1, "Warning": 1}
    assert local["Datacenter"] == "dc1"
    entries = wait_for(
        lambda: get_json(cluster.s1.base + "/v1/catalog/service/cache?tag=primary"),
        10,
        "cache in the catalog",
    )
    entry = entries[0]
    assert (entry["Node"], entry["Address"], entry["ServiceID"]) == (
        "client-1",
        "127.0.0.4",
        "cache",
    )
    assert entry["ServiceMeta"] == {"role": "main"}
    assert get_json(cluster.s1.base + "/v1/catalog/service/cache?tag=other") == []
    services = get_json(cluster.s2.base + "/v1/catalog/services")
    assert (services["cache"], services["consul"]) == (["primary"], [])
    assert get_json(cluster.s2.base + "/v1/health/service/cache?passing")

    assert call("PUT", cluster.c1.base + "/v1/agent/service/deregister/cache")[0] == 200
    wait_for(
        lambda: "cache" not in get_json(cluster.s1.base + "/v1/catalog/services"),
        10,
        "cache gone from the catalog",
    )
    status, _, body = call("PUT", cluster.c1.base + "/v1/agent/service/deregister/cache")
    assert status == 404 and body.startswith(b'Unknown service ID "cache"')


def test_maintenance_mode(cluster: Cluster) -> None:
    register(
        cluster.c1,
        {"ID": "db-1", "Name": "db", "Port": 5432, "Check": {"TTL": "60s", "Status": "passing"}},
    )
    url = cluster.s1.base + "/v1/health/service/db?passing"
    wait_for(lambda: get_json(url), 10, "db passing")
    maint = cluster.c1.base + "/v1/agent/service/maintenance/db-1"
    assert call("PUT", maint + "?enable=true&reason=upgrade")[0] == 200
    check = get_json(cluster.c1.base + "/v1/agent/checks")["_service_maintenance:db-1"]
    assert (check["Name"], check["Status"], check["Notes"]) == (
        "Service Maintenance Mode",
        "critical",
        "upgrade",
    )
    wait_for(lambda: get_json(url) == [], 10, "db out of ?passing during maintenance")
    status, _, body = call("GET", cluster.c1.base + "/v1/agent/health/service/id/db-1?format=text")
    assert (status, body) == (503, b"maintenance")
    assert call("PUT", maint + "?enable=false")[0] == 200
    wait_for(lambda: get_json(url), 10, "db back in ?passing")
    assert call("PUT", maint)[0] == 400  # enable is required
    assert call("PUT", cluster.c1.base + "/v1/agent/service/deregister/db-1")[0] == 200


def test_seed_php_registration_body_is_accepted(cluster: Cluster) -> None:
    body = {
        "ID": "php-app-1",
        "Name": "php-app",
        "Tags": ["php"],
        "Address": "127.0.0.4",
        "Port": 8080,
        "check": {
            "HTTP": "http://127.0.0.4:8080/health.php",
            "Interval": "10s",
            "Timeout": "5s",
            "DeregisterCriticalServiceAfter": "90m",
        },
    }
    register(cluster.c1, body)
    register(cluster.c1, body)  # registering the same ID again is idempotent
    check = get_json(cluster.c1.base + "/v1/agent/checks")["service:php-app-1"]
    assert (check["Type"], check["Interval"], check["Timeout"]) == ("http", "10s", "5s")
    assert check["Definition"]["DeregisterCriticalServiceAfter"] == "1h30m0s"
    assert check["Status"] == "critical"  # Consul's initial status
    lower = {
        "name": "php-app",
        "id": "php-app-2",
        "port": 8081,
        "check": {"http": "http://127.0.0.4:8081/", "interval": "10s", "timeout": "5s"},
    }
    register(cluster.c1, lower)
    assert "service:php-app-2" in get_json(cluster.c1.base + "/v1/agent/checks")
    status, _, text = call(
        "PUT",
        cluster.c1.base + "/v1/agent/service/register",
        dict(body, check={"HTTP": "http://x/"}),
    )
    assert (status, text) == (
        400,
        b"Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks",
    )
    status, _, text = call("PUT", cluster.c1.base + "/v1/agent/service/register", {"Port": 1})
    assert (status, text) == (400, b"Missing service name")
    for sid in ("php-app-1", "php-app-2"):
        call("PUT", cluster.c1.base + f"/v1/agent/service/deregister/{sid}")


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        (
            {"lab.spec": "x"},
            "Couldn't load metadata pair ('lab.spec', 'x'): Key contains invalid characters",
        ),
        (
            {"k" * 129: "x"},
            f"Couldn't load metadata pair ('{'k' * 129}', 'x'): "
            "Key is too long (limit: 128 characters)",
        ),
        (
            {"consul-version": "1"},
            "Couldn't load metadata pair ('consul-version', '1'): "
            "Key prefix 'consul-' is reserved for internal use",
        ),
        (
            {"title": "直" * 171},
            f"Couldn't load metadata pair ('title', '{'直' * 171}'): "
            "Value is too long (limit: 512 characters)",
        ),
        (
            {f"k{i}": "v" for i in range(65)},
            "Node metadata cannot contain more than 64 key/value pairs",
        ),
    ],
)
def test_service_meta_is_validated(cluster: Cluster, meta: dict, problem: str) -> None:
    """agent_endpoint.go AgentRegisterService: structs.ValidateServiceMetadata -> 400
    "Invalid Service Meta: ..." (keys [a-zA-Z0-9_-], at most 128 characters, no "consul-"
    prefix, values at most 512 bytes, at most 64 pairs)."""
    status, _, text = call(
        "PUT",
        cluster.c1.base + "/v1/agent/service/register",
        {"Name": "metasvc", "Port": 1, "Meta": meta},
    )
    assert (status, text.decode()) == (400, f"Invalid Service Meta: {problem}")
    ok = {"Name": "metasvc", "Port": 1, "Meta": {"lab_managed": "demo", "title": "直播服务API1"}}
    register(cluster.c1, ok)
    call("PUT", cluster.c1.base + "/v1/agent/service/deregister/metasvc")


def test_graceful_leave_shows_left(cluster: Cluster, tmp_path: Path) -> None:
    c2 = AgentProc(tmp_path, "client-2", "127.0.0.5", cluster.s1.http_port, cluster.s1.serf_port)
    try:
        c2.start(f"-retry-join={cluster.s1.serf_addr}")
        wait_for(lambda: any(r[0] == "client-2" for r in members_table(cluster.s1)), 10, "client-2")
        out = run_cli("leave", f"-http-addr={c2.http_addr}")
        assert (out.returncode, out.stdout.strip()) == (0, "Graceful leave complete"), out.stderr
        assert c2.proc is not None and c2.proc.wait(timeout=15) == 0
        wait_for(
            lambda: [r for r in members_table(cluster.s1) if r[0] == "client-2" and r[2] == "left"],
            10,
            "client-2 left",
        )
        wait_for(
            lambda: all(
                n["Node"] != "client-2" for n in get_json(cluster.s1.base + "/v1/catalog/nodes")
            ),
            10,
            "client-2 removed from the catalog",
        )
    finally:
        c2.kill()


def test_killed_client_becomes_failed(cluster: Cluster) -> None:
    """Runs last: it kills the cluster's client agent. The pool still counts client-2, which
    left, so n = 4 and k = 2 confirmations are expected but only one other member can give
    one: memberlist's suspicion then lasts 11.4 s (suspicion.go), not 4 s."""
    register(cluster.c1, {"ID": "victim-1", "Name": "victim", "Port": 1234})
    url = cluster.s1.base + "/v1/health/service/victim"
    wait_for(lambda: get_json(url + "?passing"), 10, "victim passing")
    cluster.c1.kill()
    wait_for(
        lambda: [r for r in members_table(cluster.s2) if r[0] == "client-1" and r[2] == "failed"],
        30,
        "client-1 failed",
    )
    wait_for(lambda: get_json(url + "?passing") == [], 10, "victim out of ?passing")
    assert health_statuses(get_json(url))["serfHealth"] == "critical"
    out = run_cli("members", f"-http-addr={cluster.s1.http_addr}", "-status=failed")
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["client-1"]


# -- single agents ----------------------------------------------------------------------
@pytest.fixture
def agents() -> Iterator[list[AgentProc]]:
    started: list[AgentProc] = []
    yield started
    for agent in started:
        agent.kill()


def test_no_leader_means_500_after_the_rpc_hold_timeout(tmp_path: Path, agents) -> None:
    """rpc.go forward holds an RPC up to rpc_hold_timeout while there is no leader, then
    fails with "No cluster leader"; agent-local endpoints keep working."""
    ports = free_port(["127.0.0.6"]), free_port(["127.0.0.6"])
    lonely = AgentProc(tmp_path, "lonely", "127.0.0.6", *ports, FAST_RAFT)
    agents.append(lonely)
    lonely.start("-server", "-bootstrap-expect=2")
    assert lonely.leader() == ""
    started = time.monotonic()
    status, _, body = call("GET", lonely.base + "/v1/catalog/services")
    assert (status, body) == (500, b"No cluster leader")
    assert time.monotonic() - started >= 2.0
    assert get_json(lonely.base + "/v1/agent/services") == {}
    assert call("POST", lonely.base + "/v1/agent/services")[0] == 405
    assert call("GET", lonely.base + "/v1/no/such/thing")[0] == 404


def test_restart_restores_services_with_critical_checks(tmp_path: Path, agents) -> None:
    """agent.go loadServices/loadChecks: API-registered services come back from data_dir,
    their checks critical (whatever they were) until the first run, which waits a random
    time up to the interval (here an hour, so it does not happen during the test)."""
    target = HealthServer()
    ports = free_port(["127.0.0.7"]), free_port(["127.0.0.7"])
    agent = AgentProc(tmp_path, "persist", "127.0.0.7", *ports, FAST_RAFT)
    agents.append(agent)
    check = {"HTTP": target.url, "Interval": "1h", "Status": "passing"}
    try:
        agent.start("-server", "-bootstrap-expect=1")
        register(agent, {"ID": "api-1", "Name": "api", "Port": target.port, "Check": check})
        assert (
            call("PUT", agent.base + "/v1/agent/service/maintenance/api-1?enable=true&reason=db")[0]
            == 200
        )
        register(agent, {"ID": "job-1", "Name": "job", "Port": 1, "Check": check})
        url = agent.base + "/v1/health/service/job?passing"
        wait_for(lambda: json_if_ok(url), 20, "job passing before the restart")
        agent.kill()
        agent.start("-server", "-bootstrap-expect=1")
        services = get_json(agent.base + "/v1/agent/services")
        assert (services["api-1"]["Port"], services["job-1"]["Service"]) == (target.port, "job")
        checks = get_json(agent.base + "/v1/agent/checks")
        assert checks["service:job-1"]["Status"] == "critical"
        assert checks["_service_maintenance:api-1"]["Notes"] == "db"
        wait_for(lambda: json_if_ok(url) == [], 20, "the catalog seeing job critical")
    finally:
        target.stop()
