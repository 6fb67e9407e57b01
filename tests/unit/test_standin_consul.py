"""Tests for the test-only Consul stand-in (tests/standins/consul).

They start real stand-in agent processes on loopback addresses only
(127.0.0.x, free ports) and check the CLI and HTTP API behaviour the lab
relies on.  Every wait polls against a deadline; every process started here
is killed in teardown.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

STANDIN = Path(__file__).resolve().parents[1] / "standins" / "consul" / "consul_standin.py"

# The agents bind 127.0.0.2-.4: every address of 127.0.0.0/8 is loopback on Linux, the
# only platform the lab supports.

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def free_port(hosts: list[str]) -> int:
    """A TCP port that is currently free on every one of `hosts`."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        ok = True
        for host in hosts:
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no free port")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy or time runs out."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError, urllib.error.URLError) as e:
            last_error = e
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def call(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str) -> Any:
    status, _, body = call("GET", url)
    assert status == 200, f"GET {url} -> {status}: {body!r}"
    return json.loads(body)


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 20
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(STANDIN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


class AgentProc:
    """One stand-in agent process."""

    def __init__(self, workdir: Path, name: str, ip: str, http_port: int, serf_port: int) -> None:
        self.name = name
        self.ip = ip
        self.http_port = http_port
        self.serf_port = serf_port
        self.data_dir = workdir / name / "data"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://{self.ip}:{self.http_port}"

    @property
    def http_addr(self) -> str:
        return f"{self.ip}:{self.http_port}"

    def start(self, *extra: str) -> AgentProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            str(STANDIN),
            "agent",
            "-node",
            self.name,
            "-bind",
            self.ip,
            "-client",
            self.ip,
            f"-http-port={self.http_port}",
            f"-serf-lan-port={self.serf_port}",
            "-data-dir",
            str(self.data_dir),
            "-retry-interval=500ms",
            *extra,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._http_up, 10, f"{self.name} HTTP API")
        return self

    def _http_up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited early:\n{self.log()}")
        status, _, _ = call("GET", self.base + "/v1/agent/self", timeout=1)
        return status == 200

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def leader(self) -> str:
        return get_json(self.base + "/v1/status/leader")


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProc]]:
    """A list the test appends AgentProc objects to; all killed at the end."""
    started: list[AgentProc] = []
    yield started
    for agent in started:
        agent.kill()


class HealthServer:
    """A tiny HTTP server answering /health with 200 (or `code`)."""

    def __init__(self, code: int = 200) -> None:
        self.code = code
        self.stopped = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"ok"
                self.send_response(owner.code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/health"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        ).start()

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()


def health_statuses(entries: list[dict]) -> dict[str, str]:
    return {c["CheckID"]: c["Status"] for e in entries for c in e["Checks"]}


# ---------------------------------------------------------------------------
# CLI: version / validate / errors
# ---------------------------------------------------------------------------


def test_version_prints_consul_version() -> None:
    out = run_cli("version")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0] == "Consul v1.11.3"
    assert lines[1] == "Revision standin"
    assert lines[2].startswith("Protocol 2 spoken by default")
    env = dict(os.environ, CONSUL_STANDIN_VERSION="1.12.0")
    assert run_cli("version", env=env).stdout.startswith("Consul v1.12.0\n")


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_validate_accepts_good_config(tmp_path: Path) -> None:
    write(
        tmp_path / "00-server.json",
        {
            "server": True,
            "bootstrap_expect": 3,
            "node_name": "consul-1",
            "datacenter": "dc1",
            "data_dir": "/consul/data",
            "bind_addr": "10.0.0.11",
            "client_addr": "0.0.0.0",
            "retry_join": ["10.0.0.12", "10.0.0.13"],
            "ui_config": {"enabled": True},
            "ports": {"http": 8500, "dns": -1},
            "leave_on_terminate": True,
            "disable_update_check": True,
        },
    )
    write(tmp_path / "10-extra.json", {"log_level": "INFO", "enable_script_checks": False})
    out = run_cli("validate", str(tmp_path))
    assert (out.returncode, out.stdout.strip()) == (0, "Configuration is valid!"), out.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"server": True, "bogus_key": 1}, "invalid config key bogus_key"),
        ({"ports": {"htp": 8500}}, "invalid config key ports.htp"),
        ({"bootstrap_expect": 3}, "'bootstrap_expect > 0' requires 'server = true'"),
        (
            {"server": True, "bootstrap": True, "bootstrap_expect": 3},
            "'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive",
        ),
        ({"bind_addr": "not-an-ip"}, "bind_addr: invalid ip address: not-an-ip"),
        ('{"server": true,, }', "failed to parse"),
        ({"server": "yes"}, "'server' expected type 'bool'"),
    ],
)
def test_validate_rejects_bad_config(tmp_path: Path, content: Any, message: str) -> None:
    path = write(tmp_path / "bad.json", content)
    out = run_cli("validate", str(path))
    assert out.returncode == 1
    assert out.stderr.startswith("Config validation failed: "), out.stderr
    assert message in out.stderr


def test_agent_refuses_unknown_config_key(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "x.json", {"nope": 1})
    out = run_cli("agent", "-dev", "-config-dir", str(tmp_path / "conf"), timeout=20)
    assert out.returncode == 1
    assert "Config validation failed" in out.stderr
    assert "invalid config key nope" in out.stderr


def test_cli_reports_unreachable_agent() -> None:
    port = free_port(["127.0.0.1"])
    out = run_cli("members", f"-http-addr=127.0.0.1:{port}")
    assert out.returncode == 1
    assert out.stderr.startswith("Error retrieving members: ")
    assert "connection refused" in out.stderr
    env = dict(os.environ, CONSUL_HTTP_ADDR=f"127.0.0.1:{port}")
    out = run_cli("operator", "raft", "list-peers", env=env)
    assert out.returncode == 1
    assert "connection refused" in out.stderr


# ---------------------------------------------------------------------------
# Single-agent behaviour
# ---------------------------------------------------------------------------


def test_no_leader_means_500(tmp_path: Path, agents: list[AgentProc]) -> None:
    ports = free_port(["127.0.0.6"]), free_port(["127.0.0.6"])
    lonely = AgentProc(tmp_path, "lonely", "127.0.0.6", *ports)
    agents.append(lonely)
    lonely.start("-server", "-bootstrap-expect=2")
    assert lonely.leader() == ""
    status, _, body = call("GET", lonely.base + "/v1/catalog/services")
    assert (status, body) == (500, b"No cluster leader")
    status, _, body = call("GET", lonely.base + "/v1/health/service/web?passing")
    assert (status, body) == (500, b"No cluster leader")
    # Agent-local endpoints keep working without a leader.
    assert get_json(lonely.base + "/v1/agent/services") == {}
    status, _, _ = call("POST", lonely.base + "/v1/agent/services")
    assert status == 405
    status, _, body = call("GET", lonely.base + "/v1/no/such/thing")
    assert status == 404


def test_registrations_survive_restart(tmp_path: Path, agents: list[AgentProc]) -> None:
    ports = free_port(["127.0.0.7"]), free_port(["127.0.0.7"])
    agent = AgentProc(tmp_path, "persist", "127.0.0.7", *ports)
    agents.append(agent)
    agent.start("-server", "-bootstrap-expect=1")
    reg = {"ID": "api-1", "Name": "api", "Port": 9000, "Check": {"TTL": "30s"}}
    assert call("PUT", agent.base + "/v1/agent/service/register", reg)[0] == 200
    assert (
        call("PUT", agent.base + "/v1/agent/service/maintenance/api-1?enable=true&reason=db")[0]
        == 200
    )
    agent.kill()
    agent.start("-server", "-bootstrap-expect=1")
    services = get_json(agent.base + "/v1/agent/services")
    assert services["api-1"]["Service"] == "api"
    assert services["api-1"]["Port"] == 9000
    checks = get_json(agent.base + "/v1/agent/checks")
    assert checks["service:api-1"]["Type"] == "ttl"
    assert checks["_service_maintenance:api-1"]["Notes"] == "db"
    # ...and the catalog (rebuilt by the restarted leader) has them again.
    wait_for(
        lambda: get_json(agent.base + "/v1/catalog/service/api"), 10, "api in catalog after restart"
    )


# ---------------------------------------------------------------------------
# A 2-server + 1-client cluster on 127.0.0.2/.3/.4
# ---------------------------------------------------------------------------


class Cluster:
    def __init__(self, s1: AgentProc, s2: AgentProc, c1: AgentProc, serf_port: int) -> None:
        self.s1, self.s2, self.c1 = s1, s2, c1
        self.serf_port = serf_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("consul-cluster")
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    http_port = free_port(ips)
    serf_port = free_port(ips)
    s1 = AgentProc(work, "server-1", ips[0], http_port, serf_port)
    s2 = AgentProc(work, "server-2", ips[1], http_port, serf_port)
    c1 = AgentProc(work, "client-1", ips[2], http_port, serf_port)
    procs = [s1, s2, c1]
    try:
        s1.start("-server", "-bootstrap-expect=2", f"-retry-join={ips[1]}:{serf_port}")
        s2.start("-server", "-bootstrap-expect", "2", "-retry-join", f"{ips[0]}:{serf_port}")
        c1.start(f"-join={ips[0]}:{serf_port}")
        for agent in procs:
            wait_for(agent.leader, 15, f"a leader seen by {agent.name}")
        yield Cluster(s1, s2, c1, serf_port)
    finally:
        for agent in procs:
            agent.kill()


def members_table(agent: AgentProc) -> list[list[str]]:
    out = run_cli("members", f"-http-addr={agent.http_addr}")
    assert out.returncode == 0, out.stderr
    return [line.split() for line in out.stdout.splitlines()]


def test_cluster_elects_leader_and_lists_members(cluster: Cluster) -> None:
    leaders = {a.leader() for a in (cluster.s1, cluster.s2, cluster.c1)}
    assert leaders == {"127.0.0.2:8300"}  # lowest advertise address wins
    assert get_json(cluster.c1.base + "/v1/status/peers") == ["127.0.0.2:8300", "127.0.0.3:8300"]

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
    port = cluster.serf_port
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
    members = get_json(cluster.c1.base + "/v1/agent/members")
    assert {m["Name"]: (m["Status"], m["Tags"]["role"]) for m in members} == {
        "server-1": (1, "consul"),
        "server-2": (1, "consul"),
        "client-1": (1, "node"),
    }

    out = run_cli("operator", "raft", "list-peers", f"-http-addr={cluster.c1.http_addr}")
    assert out.returncode == 0, out.stderr
    peers = [line.split() for line in out.stdout.splitlines()]
    assert peers[0] == ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
    assert sorted((p[0], p[2], p[3], p[4]) for p in peers[1:]) == [
        ("server-1", "127.0.0.2:8300", "leader", "true"),
        ("server-2", "127.0.0.3:8300", "follower", "true"),
    ]

    # Every server registers the "consul" service on port 8300.
    consul = get_json(cluster.c1.base + "/v1/catalog/service/consul")
    assert sorted((e["Node"], e["ServicePort"]) for e in consul) == [
        ("server-1", 8300),
        ("server-2", 8300),
    ]


def test_http_check_and_blocking_query(cluster: Cluster) -> None:
    target = HealthServer()
    try:
        reg = {
            "ID": "web-1",
            "Name": "web",
            "Tags": ["v1"],
            "Address": "127.0.0.1",
            "Port": target.port,
            "Check": {"HTTP": target.url, "Interval": "1s", "Timeout": "1s"},
        }
        status, _, body = call("PUT", cluster.c1.base + "/v1/agent/service/register", reg)
        assert status == 200, body
        # Read through a non-leader server: the read is forwarded to the leader.
        url = cluster.s2.base + "/v1/health/service/web?passing"
        entries = wait_for(lambda: get_json(url), 10, "web passing in the catalog")
        assert entries[0]["Node"]["Node"] == "client-1"
        assert entries[0]["Service"]["Port"] == target.port
        assert health_statuses(entries) == {"serfHealth": "passing", "service:web-1": "passing"}
        check = next(c for c in entries[0]["Checks"] if c["CheckID"] == "service:web-1")
        assert check["Output"].startswith(f"HTTP GET {target.url}: 200 OK Output: ok")

        status, _, body = call("GET", cluster.c1.base + "/v1/agent/health/service/id/web-1")
        assert status == 200
        assert json.loads(body)["AggregatedStatus"] == "passing"

        status, headers, _ = call("GET", cluster.s2.base + "/v1/health/service/web")
        index = int(headers["X-Consul-Index"])
        assert headers["X-Consul-KnownLeader"] == "true"
        result: dict[str, Any] = {}

        def blocking() -> None:
            start = time.monotonic()
            result["response"] = call(
                "GET", f"{cluster.s2.base}/v1/health/service/web?index={index}&wait=30s", timeout=40
            )
            result["elapsed"] = time.monotonic() - start

        thread = threading.Thread(target=blocking)
        thread.start()
        time.sleep(0.3)  # give the query time to start blocking
        stopped_at = time.monotonic()
        target.stop()
        thread.join(timeout=35)
        assert not thread.is_alive()
        status, headers, body = result["response"]
        assert status == 200
        assert int(headers["X-Consul-Index"]) > index
        # interval (1s) + timeout (1s) + sync margin, far below the 30s wait
        assert time.monotonic() - stopped_at < 6, result["elapsed"]
        assert health_statuses(json.loads(body))["service:web-1"] == "critical"
        assert get_json(cluster.s2.base + "/v1/health/service/web?passing") == []

        status, _, body = call(
            "GET", cluster.c1.base + "/v1/agent/health/service/name/web?format=text"
        )
        assert (status, body) == (503, b"critical")
        checks = get_json(cluster.c1.base + "/v1/agent/checks")
        assert "connection refused" in checks["service:web-1"]["Output"]
    finally:
        target.stop()
        call("PUT", cluster.c1.base + "/v1/agent/service/deregister/web-1")


def test_client_service_visible_on_servers_then_deregistered(cluster: Cluster) -> None:
    reg = {"Name": "cache", "Port": 6379, "Tags": ["primary"], "Meta": {"role": "main"}}
    assert call("PUT", cluster.c1.base + "/v1/agent/service/register", reg)[0] == 200
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
    assert entry["ServiceTags"] == ["primary"]
    assert get_json(cluster.s1.base + "/v1/catalog/service/cache?tag=other") == []
    services = get_json(cluster.s2.base + "/v1/catalog/services")
    assert services["cache"] == ["primary"]
    assert services["consul"] == []
    # No checks on the service: only serfHealth counts, so it is passing.
    assert get_json(cluster.s2.base + "/v1/health/service/cache?passing")

    assert call("PUT", cluster.c1.base + "/v1/agent/service/deregister/cache")[0] == 200
    wait_for(
        lambda: "cache" not in get_json(cluster.s1.base + "/v1/catalog/services"),
        10,
        "cache gone from the catalog",
    )
    status, _, body = call("PUT", cluster.c1.base + "/v1/agent/service/deregister/cache")
    assert status == 404
    assert body.startswith(b'Unknown service ID "cache"')


def test_maintenance_mode(cluster: Cluster) -> None:
    reg = {"ID": "db-1", "Name": "db", "Port": 5432, "Check": {"TTL": "60s", "Status": "passing"}}
    assert call("PUT", cluster.c1.base + "/v1/agent/service/register", reg)[0] == 200
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
    status, _, text = call("PUT", cluster.c1.base + "/v1/agent/service/register", body)
    assert status == 200, text
    # Registering the same ID again is idempotent.
    assert call("PUT", cluster.c1.base + "/v1/agent/service/register", body)[0] == 200
    checks = get_json(cluster.c1.base + "/v1/agent/checks")
    check = checks["service:php-app-1"]
    assert (check["Type"], check["Interval"], check["Timeout"]) == ("http", "10s", "5s")
    assert check["Definition"]["DeregisterCriticalServiceAfter"] == "1h30m0s"
    assert check["Status"] == "critical"  # Consul's initial status
    lower = {
        "name": "php-app",
        "id": "php-app-2",
        "port": 8081,
        "check": {"http": "http://127.0.0.4:8081/", "interval": "10s", "timeout": "5s"},
    }
    assert call("PUT", cluster.c1.base + "/v1/agent/service/register", lower)[0] == 200
    assert "service:php-app-2" in get_json(cluster.c1.base + "/v1/agent/checks")

    bad = dict(body, check={"HTTP": "http://x/"})
    status, _, text = call("PUT", cluster.c1.base + "/v1/agent/service/register", bad)
    assert status == 400
    assert text == b"Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks"
    status, _, text = call("PUT", cluster.c1.base + "/v1/agent/service/register", {"Port": 1})
    assert (status, text) == (400, b"Missing service name")
    for sid in ("php-app-1", "php-app-2"):
        call("PUT", cluster.c1.base + f"/v1/agent/service/deregister/{sid}")


def test_deregister_critical_service_after(cluster: Cluster) -> None:
    port = free_port(["127.0.0.1"])  # nothing listens: the check stays critical
    reg = {
        "ID": "doomed-1",
        "Name": "doomed",
        "Port": port,
        "Check": {
            "TCP": f"127.0.0.1:{port}",
            "Interval": "1s",
            "DeregisterCriticalServiceAfter": "2s",
        },
    }
    assert call("PUT", cluster.c1.base + "/v1/agent/service/register", reg)[0] == 200
    wait_for(
        lambda: "doomed-1" not in get_json(cluster.c1.base + "/v1/agent/services"),
        10,
        "the agent to reap the critical service",
    )
    wait_for(
        lambda: get_json(cluster.s1.base + "/v1/catalog/service/doomed") == [],
        10,
        "the catalog to drop the reaped service",
    )


def test_graceful_leave_shows_left(
    cluster: Cluster, tmp_path: Path, agents: list[AgentProc]
) -> None:
    c2 = AgentProc(tmp_path, "client-2", "127.0.0.5", cluster.s1.http_port, cluster.serf_port)
    agents.append(c2)
    c2.start(f"-retry-join=127.0.0.2:{cluster.serf_port}")
    wait_for(lambda: any(row[0] == "client-2" for row in members_table(cluster.s1)), 10, "client-2")
    out = run_cli("leave", f"-http-addr={c2.http_addr}")
    assert (out.returncode, out.stdout.strip()) == (0, "Graceful leave complete"), out.stderr
    assert c2.proc is not None
    assert c2.proc.wait(timeout=10) == 0
    left = wait_for(
        lambda: [r for r in members_table(cluster.s1) if r[0] == "client-2" and r[2] == "left"],
        10,
        "client-2 to be left",
    )
    assert left
    wait_for(
        lambda: all(
            n["Node"] != "client-2" for n in get_json(cluster.s1.base + "/v1/catalog/nodes")
        ),
        10,
        "client-2 removed from the catalog",
    )


def test_killed_client_becomes_failed(cluster: Cluster) -> None:
    """Runs last: it kills the cluster's client agent."""
    reg = {"ID": "victim-1", "Name": "victim", "Port": 1234}
    assert call("PUT", cluster.c1.base + "/v1/agent/service/register", reg)[0] == 200
    url = cluster.s1.base + "/v1/health/service/victim"
    wait_for(lambda: get_json(url + "?passing"), 10, "victim passing")
    cluster.c1.kill()
    wait_for(
        lambda: [r for r in members_table(cluster.s2) if r[0] == "client-1" and r[2] == "failed"],
        10,
        "client-1 to be failed",
    )

    def s1_sees_failed() -> bool:
        members = get_json(cluster.s1.base + "/v1/agent/members")
        return any(m["Name"] == "client-1" and m["Status"] == 4 for m in members)

    wait_for(s1_sees_failed, 10, "server-1 to see client-1 failed (Status 4)")
    wait_for(lambda: get_json(url + "?passing") == [], 10, "victim out of ?passing")
    entries = get_json(url)
    assert health_statuses(entries)["serfHealth"] == "critical"
    out = run_cli("members", f"-http-addr={cluster.s1.http_addr}", "-status=failed")
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["client-1"]
