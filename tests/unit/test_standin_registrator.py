"""Tests of the registrator stand-in (tests/standins/registrator) against its behaviour
table (its README): the real Docker engine of this machine, containers started with
SERVICE_* metadata on the host network, and a Consul stand-in server agent on loopback.

    python3 -m pytest tests/unit/test_standin_registrator.py -q

LAB_REGISTRATOR_BINARY=/path/to/registrator runs the same tests against another build (the
side-by-side with the real registrator reported in the README).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.consul_fakes import go
from tests.support.consul_standin import (
    FAST_RAFT,
    AgentProc,
    HealthServer,
    call,
    free_port,
    get_json,
    json_if_ok,
    wait_for,
)
from tests.support.registrator_standin import (
    HOSTNAME,
    STANDIN_DIR,
    Containers,
    FakeDocker,
    Registrator,
    build_registrator,
    docker,
    load_sleeper_image,
)

MANAGEMENT = "3c5bd2a5-0000-4000-8000-00000000aaaa"
# How long a Docker event may take to show in Consul or in registrator's log: seconds
# when the engine is busy with other work (the suite's labs, another checkout's tests).
EVENT_DEADLINE = 30


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    return build_registrator(tmp_path_factory.mktemp("registrator-bin"))


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Iterator[str]:
    ref = load_sleeper_image(tmp_path_factory.mktemp("sleeper"))
    yield ref
    docker("rmi", ref)


@pytest.fixture
def containers(image) -> Iterator[Containers]:
    made = Containers(image)
    yield made
    made.remove_all()


class Lab:
    """One test's Consul stand-in agent (a single server on its own loopback address),
    health endpoint and registrator processes."""

    def __init__(self, work: Path, binary: Path, ip: str, acl: bool = False) -> None:
        self.work, self.binary = work, binary
        config = dict(FAST_RAFT)
        self.token = ""
        if acl:
            self.token = MANAGEMENT
            config["acl"] = {
                "enabled": True,
                "default_policy": "deny",
                "tokens": {"initial_management": MANAGEMENT},
            }
        self.agent = AgentProc(work, "node1", ip, free_port([ip]), free_port([ip]), config)
        self.health = HealthServer()
        self.registrators: list[Registrator] = []

    @property
    def uri(self) -> str:
        return f"consul://{self.agent.http_addr}"

    def start_agent(self) -> None:
        self.agent.start("-server", "-bootstrap-expect=1")
        wait_for(lambda: json_if_ok(self.agent.base + "/v1/status/leader"), 20, "a leader")
        if self.token:
            # A new leader makes the ACL system's policies and tokens only after it is named
            # (the gap the Consul stand-in opens, as Consul does): until then the initial
            # management token is "ACL not found".
            wait_for(lambda: json_if_ok(self.agent.base + "/v1/acl/token/self", self.token),
                     20, "the initial management token")  # fmt: skip

    def registrator(self, *args: str, env: dict[str, str] | None = None) -> Registrator:
        log = self.work / f"registrator-{len(self.registrators)}.log"
        reg = Registrator(self.binary, log).start(*args, env=env)
        self.registrators.append(reg)
        return reg

    def services(self, run_id: str) -> dict[str, dict]:
        """This test's services on the agent (other containers of the engine may be
        registered too, without -explicit; they are not looked at)."""
        answer = get_json(self.agent.base + "/v1/agent/services", self.token)
        return {k: v for k, v in answer.items() if run_id in k}

    def checks(self) -> dict[str, dict]:
        return get_json(self.agent.base + "/v1/agent/checks", self.token)

    def close(self) -> None:
        for reg in self.registrators:
            reg.stop()
        self.agent.kill()
        self.health.stop()


@pytest.fixture
def lab(tmp_path, binary, request) -> Iterator[Lab]:
    # Each test its own address, so tests in parallel never share an agent.
    ip = f"127.0.0.{150 + (abs(hash(request.node.name)) % 90)}"
    made = Lab(tmp_path, binary, ip, acl=getattr(request, "param", False))
    try:
        made.start_agent()
        yield made
    finally:
        made.close()


def service_id(container: str, port: int) -> str:
    return f"{HOSTNAME}:{container}:{port}"


def test_go_test_suite(tmp_path) -> None:
    proc = go(tmp_path, STANDIN_DIR, "test", "-count=1", "./...")
    assert proc.returncode == 0, f"go test failed:\n{proc.stdout}\n{proc.stderr}"


def test_started_container_is_registered_with_id_name_tags_and_check(lab, containers) -> None:
    """bridge.go add/newService, consul.go Register/buildCheck: a --net=host container's
    exposed port, on the -ip address, with the metadata as Consul Meta."""
    port = lab.health.port
    name = containers.run(
        "web",
        port,
        labels={"SERVICE_NAME": "web", "SERVICE_TAGS": "blue,v1", "SERVICE_CHECK_HTTP": "/health"},
        env={
            "SERVICE_CHECK_INTERVAL": "1s",
            "SERVICE_CHECK_TIMEOUT": "2s",
            "SERVICE_CHECK_DEREGISTER_AFTER": "90s",
        },
    )
    reg = lab.registrator("-ip", "127.0.0.1", lab.uri)
    sid = service_id(name, port)
    services = wait_for(lambda: lab.services(containers.run_id), EVENT_DEADLINE, "the registration")
    assert list(services) == [sid]
    service = services[sid]
    assert service["Service"] == "web"
    assert service["Tags"] == ["v1", "blue"]  # the real splitter reverses them
    assert (service["Address"], service["Port"]) == ("127.0.0.1", port)
    assert service["Meta"] == {
        "check_http": "/health",
        "check_interval": "1s",
        "check_timeout": "2s",
        "check_deregister_after": "90s",
    }
    check = lab.checks()[f"service:{sid}"]
    assert check["Definition"]["HTTP"] == f"http://127.0.0.1:{port}/health"
    assert check["Definition"]["Interval"] == "1s"
    assert check["Definition"]["Timeout"] == "2s"
    assert check["Definition"]["DeregisterCriticalServiceAfter"] == "1m30s"
    wait_for(
        lambda: lab.checks()[f"service:{sid}"]["Status"] == "passing", EVENT_DEADLINE, "passing"
    )
    assert f"added: {docker('inspect', '-f', '{{.Id}}', name)[:12]} {sid}" in reg.log()


def test_address_without_ip_and_with_internal(lab, containers) -> None:
    """bridge.go resolvePortHostIP: without -ip a --net=host container's address is what
    the machine's hostname resolves to (here a loopback address, from /etc/hosts);
    with -internal it is the container's own address, which host networking leaves
    empty (Consul then shows the node's). No check: nothing is sent to them."""
    port = lab.health.port
    name = containers.run("web", port, labels={"SERVICE_NAME": "web"})
    sid = service_id(name, port)
    first = lab.registrator(lab.uri)
    wait_for(lambda: lab.services(containers.run_id), EVENT_DEADLINE, "the registration")
    resolved = socket.gethostbyname(HOSTNAME)
    assert (lab.services(containers.run_id)[sid]["Address"], resolved) == (resolved, resolved)
    first.stop()
    lab.registrator("-internal", lab.uri)
    wait_for(
        lambda: lab.services(containers.run_id)[sid]["Address"] == "",
        EVENT_DEADLINE,
        "empty address",
    )
    assert lab.services(containers.run_id)[sid]["Port"] == port


def test_label_wins_over_environment_and_a_port_key_over_both(lab, containers) -> None:
    """util.go serviceMetaData: environment first, labels after (a later entry wins);
    SERVICE_<port>_NAME wins whatever the order."""
    port = lab.health.port
    plain = containers.run(
        "plain", port, labels={"SERVICE_NAME": "from-label"}, env={"SERVICE_NAME": "from-env"}
    )
    other = free_port(["127.0.0.1"])
    by_port = containers.run(
        "byport",
        other,
        labels={"SERVICE_NAME": "from-label"},
        env={f"SERVICE_{other}_NAME": "from-port", "SERVICE_TAGS": "from-env"},
    )
    lab.registrator("-ip", "127.0.0.1", lab.uri)
    services = wait_for(
        lambda: len(lab.services(containers.run_id)) == 2 and lab.services(containers.run_id),
        10,
        "two registrations",
    )
    assert services[service_id(plain, port)]["Service"] == "from-label"
    assert services[service_id(by_port, other)]["Service"] == "from-port"
    assert services[service_id(by_port, other)]["Tags"] == ["from-env"]


def test_metadata_consul_refuses_fails_the_whole_registration(lab, containers) -> None:
    """consul.go Register: every SERVICE_* key goes to Meta; Consul refuses a key with a
    character outside [A-Za-z0-9_-], and the service is not registered at all."""
    port = lab.health.port
    containers.run("web", port, labels={"SERVICE_NAME": "web", "SERVICE_TEAM.NAME": "ops"})
    reg = lab.registrator("-ip", "127.0.0.1", lab.uri)
    reg.wait_for_log("register failed:", EVENT_DEADLINE)
    assert "Unexpected response code: 400 (Invalid Service Meta" in reg.log()
    assert lab.services(containers.run_id) == {}


def test_ignore_and_explicit(lab, containers) -> None:
    """SERVICE_IGNORE skips a container; with -explicit a container without SERVICE_NAME is
    not registered (without it, its image's name would be the service's name)."""
    port = lab.health.port
    ignored = containers.run("ignored", port, labels={"SERVICE_NAME": "x", "SERVICE_IGNORE": "1"})
    unnamed = containers.run("unnamed", free_port(["127.0.0.1"]))
    named = containers.run("named", free_port(["127.0.0.1"]), labels={"SERVICE_NAME": "named"})
    reg = lab.registrator("-explicit", "-ip", "127.0.0.1", lab.uri)
    wait_for(lambda: lab.services(containers.run_id), EVENT_DEADLINE, "a registration")
    reg.wait_for_log("Syncing services on", 5)
    assert [s["Service"] for s in lab.services(containers.run_id).values()] == ["named"]
    assert ignored not in str(lab.services(containers.run_id))
    assert unnamed not in str(lab.services(containers.run_id))
    assert named in next(iter(lab.services(containers.run_id)))


def test_kill_stop_start_and_remove(lab, containers) -> None:
    """registrator.go's event loop: "die" deregisters (-deregister=always), "start"
    registers again; removing a running container kills it first (a "die")."""
    port = lab.health.port
    name = containers.run("web", port, labels={"SERVICE_NAME": "web"})
    reg = lab.registrator("-ip", "127.0.0.1", lab.uri)
    sid = service_id(name, port)
    wait_for(lambda: sid in lab.services(containers.run_id), EVENT_DEADLINE, "registered")
    docker("kill", name)
    wait_for(lambda: not lab.services(containers.run_id), EVENT_DEADLINE, "deregistered after kill")
    docker("start", name)
    wait_for(
        lambda: sid in lab.services(containers.run_id), EVENT_DEADLINE, "registered after start"
    )
    docker("stop", name)
    wait_for(lambda: not lab.services(containers.run_id), EVENT_DEADLINE, "deregistered after stop")
    docker("start", name)
    wait_for(lambda: sid in lab.services(containers.run_id), EVENT_DEADLINE, "registered again")
    docker("rm", "-f", name)
    wait_for(
        lambda: not lab.services(containers.run_id), EVENT_DEADLINE, "deregistered after rm -f"
    )
    assert reg.log().count("removed: ") == 3


def test_on_success_keeps_a_failed_container_and_drops_a_killed_one(lab, containers) -> None:
    """bridge.go shouldRemove: with -deregister=on-success an exit code other than 0 keeps
    the service (its check goes critical), but 137 (SIGKILL) counts as success."""
    port, other = lab.health.port, free_port(["127.0.0.1"])
    failing = containers.run("failing", port, labels={"SERVICE_NAME": "f"})
    killed = containers.run("killed", other, labels={"SERVICE_NAME": "k"})
    lab.registrator("-deregister", "on-success", "-ip", "127.0.0.1", lab.uri)
    wait_for(lambda: len(lab.services(containers.run_id)) == 2, EVENT_DEADLINE, "both registered")
    docker("kill", killed)
    wait_for(
        lambda: len(lab.services(containers.run_id)) == 1, EVENT_DEADLINE, "the killed one gone"
    )
    docker("kill", "-s", "USR1", failing)  # the sleeper exits 3
    wait_for(
        lambda: docker("inspect", "-f", "{{.State.ExitCode}}", failing) == "3",
        EVENT_DEADLINE,
        "exit 3",
    )
    # The die is handled at once; nothing marks its end, so watch for a while.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert list(lab.services(containers.run_id)) == [service_id(failing, port)]
        time.sleep(0.2)


def test_restart_makes_no_duplicates_and_only_cleanup_removes_what_went_away(
    lab, containers
) -> None:
    """Sync at start re-registers the same IDs (a PUT of the same ID is an update); a
    container removed while registrator was down stays registered, until a start with
    -cleanup deregisters it as dangling (its ID matches host:container:port)."""
    port, other = lab.health.port, free_port(["127.0.0.1"])
    keep = containers.run("keep", port, labels={"SERVICE_NAME": "web"})
    gone = containers.run("gone", other, labels={"SERVICE_NAME": "web"})
    first = lab.registrator("-ip", "127.0.0.1", lab.uri)
    wait_for(lambda: len(lab.services(containers.run_id)) == 2, EVENT_DEADLINE, "both registered")
    first.stop()
    docker("rm", "-f", gone)
    # Services registered by others are never touched by -cleanup.
    foreign = {"ID": f"otherhost:{containers.name('x')}:80", "Name": "web", "Port": 80}
    lab_made = {"ID": f"web-{containers.run_id}", "Name": "web", "Port": 81}
    for body in (foreign, lab_made):
        assert call("PUT", lab.agent.base + "/v1/agent/service/register", body)[0] == 200

    second = lab.registrator("-ip", "127.0.0.1", lab.uri)
    second.wait_for_log("Syncing services on", EVENT_DEADLINE)
    wait_for(lambda: "added: " in second.log(), EVENT_DEADLINE, "the re-registration")
    ids = set(lab.services(containers.run_id))
    assert ids == {service_id(keep, port), service_id(gone, other), foreign["ID"], lab_made["ID"]}
    second.stop()

    third = lab.registrator("-cleanup", "-ip", "127.0.0.1", lab.uri)
    wait_for(
        lambda: service_id(gone, other) not in lab.services(containers.run_id),
        EVENT_DEADLINE,
        "dangling gone",
    )
    assert f"dangling: {service_id(gone, other)}" in third.log()
    assert set(lab.services(containers.run_id)) == {
        service_id(keep, port),
        foreign["ID"],
        lab_made["ID"],
    }


def test_consul_away_then_back(lab, containers) -> None:
    """A failed register or deregister is logged and forgotten: only a resync
    (-resync N) registers what started meanwhile, and only -cleanup removes what died
    meanwhile (the agent keeps API-registered services across its restart)."""
    port, other = lab.health.port, free_port(["127.0.0.1"])
    dies = containers.run("dies", port, labels={"SERVICE_NAME": "web"})
    reg = lab.registrator("-resync", "1", "-cleanup", "-ip", "127.0.0.1", lab.uri)
    wait_for(
        lambda: service_id(dies, port) in lab.services(containers.run_id),
        EVENT_DEADLINE,
        "registered",
    )
    lab.agent.kill()
    docker("kill", dies)
    starts = containers.run("starts", other, labels={"SERVICE_NAME": "web"})
    reg.wait_for_log("deregister failed:", EVENT_DEADLINE)
    reg.wait_for_log("register failed:", EVENT_DEADLINE)
    lab.start_agent()
    wait_for(
        lambda: set(lab.services(containers.run_id)) == {service_id(starts, other)},
        15,
        "the resync and cleanup to repair the agent",
    )


def test_without_resync_a_registration_lost_to_an_outage_stays_lost(lab, containers) -> None:
    port = lab.health.port
    reg = lab.registrator("-ip", "127.0.0.1", lab.uri)
    reg.wait_for_log("Listening for Docker events", EVENT_DEADLINE)
    lab.agent.kill()
    starts = containers.run("starts", port, labels={"SERVICE_NAME": "web"})
    reg.wait_for_log("register failed:", EVENT_DEADLINE)
    lab.start_agent()
    # Nothing in registrator runs again by itself: watch it for a while.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert service_id(starts, port) not in lab.services(containers.run_id)
        time.sleep(0.2)


def test_consul_unreachable_at_start(lab, containers, tmp_path) -> None:
    """-retry-attempts 0 (the default): one ping, then exit 1; -1: ping every
    -retry-interval ms until the agent answers, then work as usual."""
    port = lab.health.port
    lab.agent.kill()
    once = lab.registrator(lab.uri)
    assert once.proc.wait(timeout=10) == 1
    assert "connection refused" in once.log()
    name = containers.run("web", port, labels={"SERVICE_NAME": "web"})
    patient = lab.registrator("-retry-attempts", "-1", "-retry-interval", "200", lab.uri)
    patient.wait_for_log("Connecting to backend (3/-1)", EVENT_DEADLINE)
    lab.start_agent()
    wait_for(lambda: lab.services(containers.run_id), 15, "the registration")
    assert service_id(name, port) in lab.services(containers.run_id)


@pytest.mark.parametrize("lab", [True], indirect=True)
def test_token_from_the_environment_and_a_token_file(lab, containers, tmp_path) -> None:
    """consul/api DefaultConfig: CONSUL_HTTP_TOKEN, or CONSUL_HTTP_TOKEN_FILE's content,
    which wins; sent as X-Consul-Token; a refused register is logged with Consul's 403."""
    port = lab.health.port
    name = containers.run("web", port, labels={"SERVICE_NAME": "web"})
    denied = lab.registrator(lab.uri, env={"CONSUL_HTTP_TOKEN": "not-a-token"})
    denied.wait_for_log("register failed:", EVENT_DEADLINE)
    assert "Unexpected response code: 403 (ACL not found)" in denied.log()
    denied.stop()

    token_file = tmp_path / "token"
    token_file.write_text(MANAGEMENT + "\n")
    env = {"CONSUL_HTTP_TOKEN": "not-a-token", "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    allowed = lab.registrator("-ip", "127.0.0.1", lab.uri, env=env)
    wait_for(lambda: lab.services(containers.run_id), EVENT_DEADLINE, "the registration")
    assert service_id(name, port) in lab.services(containers.run_id)
    assert MANAGEMENT not in allowed.log()

    missing = lab.registrator(lab.uri, env={"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "nope")})
    assert missing.proc.wait(timeout=10) == 1
    assert "Error loading token file" in missing.log()


def test_command_line_errors(binary, tmp_path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=20, check=False
        )

    missing = run()
    assert missing.returncode == 2
    assert "Missing required argument for registry URI." in missing.stderr
    extra = run("consul://127.0.0.1:1", "more")
    assert extra.returncode == 2
    assert "Options should come before the registry URI argument." in extra.stderr
    mode = run("-deregister", "sometimes", "consul://127.0.0.1:1")
    assert mode.returncode == 1
    assert '-deregister must be "always" or "on-success"' in mode.stderr
    ttl = run("-ttl", "10", "consul://127.0.0.1:1")
    assert ttl.returncode == 1
    assert "-ttl and -ttl-refresh must be specified together or not at all" in ttl.stderr
    adapter = run("-retry-attempts", "1", "-retry-interval", "50", "etcdx://127.0.0.1:1")
    assert adapter.returncode == 1
    assert adapter.stderr.count("Connecting to backend") == 2
    assert "unrecognized adapter: etcdx://127.0.0.1:1" in adapter.stderr


def test_end_of_the_docker_event_stream_ends_registrator(binary, tmp_path) -> None:
    """registrator.go: when the engine ends the event stream (it stopped or restarted),
    the client closes the channel and registrator exits 1 ("Docker event loop
    closed") instead of reconnecting; it needs a restart policy to come back."""
    leader = HealthServer(body=b'"127.0.0.1:8300"')
    socket_path = tmp_path / "docker.sock"
    fake = FakeDocker(socket_path, {}, [{"status": "create", "id": "0" * 64, "time": 1}])
    try:
        proc = subprocess.run(
            [str(binary), f"consul://127.0.0.1:{leader.port}"],
            env={"DOCKER_HOST": f"unix://{socket_path}"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        fake.close()
        leader.stop()
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.rstrip().endswith("Docker event loop closed")
    assert fake.event_requests == ["/events"]
