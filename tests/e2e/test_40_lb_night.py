"""The LB survives the night: its own restart, nginx or consul-template dying, and its
host's reboot (serving from the first second of its container's start each time), a
Consul outage (the LB host's agent, and every server), a broken LB repaired by `apply`,
a host lost in the middle of `apply`, and `verify` telling the truth while an instance
is down — with no failed GET to an instance that still runs, request loops held to
their own pace, and no command blind to it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass

import docker
import httpx
import pytest

from labctl.lifecycle import log_file
from labctl.paths import host_container_name
from labctl.remote import RemoteError, run
from labctl.verify import verify
from testbed.traffic import RequestLoop, wall
from tests.conftest import PROJECT_ROOT
from tests.e2e.conftest import E2E_SUBNET, labctl, refresh_connections, wait_for
from tests.e2e.probes import (
    AGENT_CURL,
    FOLLOW_DEADLINE,
    LB,
    SERVICE,
    Traffic,
    lb_sample,
    lb_state,
    on_host,
    request_loop,
    started,
    upstream,
)

ALL = {"zhibo-1", "zhibo-2", "zhibo-3"}
# nginx starts on the last good configuration at once, with no Consul involved: a
# (re)started LB answers within the first second of its container's start.
FIRST_SECOND = 1.0
# Docker's restart policy starts an exited container again after 100 ms (then backs
# off), the LB's own start included.
RESTARTED = 30
# After its agent comes back, an instance's check first runs up to one interval (10 s)
# later and may take its timeout (5 s); then the LB follows.
BACK_AFTER_AGENT = 10 + 5 + FOLLOW_DEADLINE
# How long the LB host's agent stays away (the issue: 60-90 s); the request loops run on.
OUTAGE = 75
# How long every server stays away: long enough for consul-template's retries to back off.
SERVERS_OUTAGE = 45
RECONNECT = 30  # Serf's reconnect interval: a member rejoins failed peers that came back
ADDRESSES = {f"{E2E_SUBNET}.{n}:8080" for n in (2, 3, 4)}
# nginx's passive check (the seed's `max_fails=3 fail_timeout=60`) may set an instance
# aside for fail_timeout after three slow connects on a loaded machine; the last good
# configuration still names it, and it is answered again once that time is out.
FAIL_TIMEOUT = int(
    re.search(r"fail_timeout=(\d+)", (PROJECT_ROOT / "templates/lb/service.ctmpl").read_text())[1]
)
# A host container's boot: systemd, the engine, the agents rejoining, checks passing.
REBOOT_DEADLINE = 180


def answered_by_an_instance() -> bool:
    try:
        response = httpx.get(f"http://{LB}/{SERVICE}", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.headers.get("X-Instance") in ALL


def verify_json(e2e_spec) -> tuple[int, dict]:
    result = labctl(e2e_spec, "verify", "--json", timeout=120)
    return result.returncode, json.loads(result.stdout)


def probe_loop() -> RequestLoop:
    """Fresh connections with a short timeout, so that a refusal while the LB is away
    costs little and its first answer after a start is seen at once."""
    return request_loop(timeout=1)


def assert_serves_from_its_first_second(loop: RequestLoop, started_at: float, what: str):
    """After the loop's exit: it was answered within FIRST_SECOND of the LB container's
    start (Unix time), and no request failed from that first answer on."""
    after = [t for t in loop.answer_times if wall(t) >= started_at]
    assert after, f"{what}: no answer after the LB started ({dict(loop.outcomes)})"
    first = after[0]
    delay = wall(first) - started_at
    late = [(round(t - first, 2), outcome) for t, outcome in loop.refusals if t > first]
    print(f"{what}: first answer {delay:.2f} s after the LB's container started; "
          f"outcomes {dict(loop.outcomes)}")  # fmt: skip
    assert delay <= FIRST_SECOND, f"{what}: the LB answered {delay:.2f} s after its start"
    assert late == [], f"{what}: failed GETs after the LB served again: {late}"


def test_docker_restart_lb_serves_at_once_then_follows_consul_again(lab):
    """`docker restart` is a stop and a start: the stop's SIGTERM ends the container by
    itself (exit 0), where consul-template 0.19 without -kill-signal=SIGTERM would ignore
    it and Docker kill both after its timeout (exit 137)."""
    _, connections, _ = lab
    reloads = lb_state().reloads
    with probe_loop() as loop:
        on_host(connections, "node3", "docker stop lb")
        exit_code = on_host(connections, "node3", "docker inspect -f '{{.State.ExitCode}}' lb")
        on_host(connections, "node3", "docker start lb")
        started_at, _ = started(connections, "node3", "lb")
        assert exit_code.strip() == "0", f"the LB did not stop on SIGTERM: exit {exit_code}"
        wait_for(lambda: set(lb_sample(30)) == ALL, FOLLOW_DEADLINE,
                 "every instance behind the LB")  # fmt: skip
        # consul-template's first render after the start went through lb-reload.
        wait_for(lambda: lb_state().reloads > reloads, FOLLOW_DEADLINE,
                 "a reload after the restart")  # fmt: skip
    assert_serves_from_its_first_second(loop, started_at, "docker restart lb")


def test_restarted_with_its_agent_down_the_lb_serves_its_last_good_configuration(lab):
    """The agent is killed, not stopped: a stopped client leaves the cluster, and the LB
    may still hear of it and rightly drop that host's instance before the restart."""
    _, connections, _ = lab
    on_host(connections, "node3", "docker kill consul")
    try:
        before = upstream()
        with probe_loop() as loop:
            on_host(connections, "node3", "docker restart lb")
            started_at, _ = started(connections, "node3", "lb")
            wait_for(answered_by_an_instance, FOLLOW_DEADLINE, "the LB answering, its agent down")
            assert upstream() == before
            wait_for(lambda: set(lb_sample(30)) == ALL, FAIL_TIMEOUT + FOLLOW_DEADLINE,
                     f"every instance of the last good upstream {before}")  # fmt: skip
        assert_serves_from_its_first_second(loop, started_at, "docker restart lb, agent down")
        health = json.loads(on_host(connections, "node3", "docker exec lb lb-health"))
        assert health == {"nginx": True, "listening": True, "consul_template": True,
                          "config": "waiting", "reload_failed": None}  # fmt: skip
        reloads = lb_state().reloads
    finally:
        on_host(connections, "node3", "docker start consul")
    wait_for(lambda: lb_state().reloads > reloads, BACK_AFTER_AGENT, "the LB rendering again")
    wait_for(lambda: set(lb_sample(30)) == ALL, BACK_AFTER_AGENT, "every instance behind the LB")


@pytest.mark.parametrize("dying", ["nginx", "consul-template"])
def test_nginx_or_consul_template_dying_restarts_the_lb(lab, dying):
    """start.sh stops the other and the container exits; the restart policy starts both
    again, and nginx serves the last good configuration from its first second."""
    _, connections, _ = lab
    pid_file = {"nginx": "/run/nginx.pid", "consul-template": "/run/lb/consul-template.pid"}
    _, restarts = started(connections, "node3", "lb")

    def restarted_since(moment: float) -> float | None:
        # Docker counts a restart as it schedules it, and records the start after.
        started_at, count = started(connections, "node3", "lb")
        return started_at if started_at > moment and count > restarts else None

    def healthy() -> bool:
        code, output = run(connections["node3"], "docker exec lb lb-health", sudo=True)
        return code == 0 and json.loads(output)["config"] == "current"

    with probe_loop() as loop:
        killed = time.time()
        on_host(connections, "node3", f"docker exec lb sh -c 'kill -9 $(cat {pid_file[dying]})'")
        started_at = wait_for(lambda: restarted_since(killed), RESTARTED,
                              "the restart policy starting the LB again")  # fmt: skip
        wait_for(healthy, FOLLOW_DEADLINE,
                 "nginx and consul-template running, on the latest render")  # fmt: skip
    assert_serves_from_its_first_second(loop, started_at, f"{dying} killed")
    answered = lb_sample(30)
    assert set(answered) == ALL, f"sample {dict(answered)}, LB upstream {upstream()}"


def test_verify_with_one_instance_killed_lists_exactly_that_instance(lab, e2e_spec):
    assert labctl(e2e_spec, "fail", "zhibo-2", timeout=120).returncode == 0
    try:
        wait_for(lambda: f"{E2E_SUBNET}.3:8080" not in upstream(), FOLLOW_DEADLINE,
                 "zhibo-2 leaving the upstream")  # fmt: skip
        code, report = verify_json(e2e_spec)
        assert code == 1 and not report["ok"]
        failing = {(c["what"], c["target"]) for c in report["checks"] if not c["ok"]}
        assert failing == {("registered", "zhibo-2"), ("answers", "zhibo-2")}, report
        checks = {(c["what"], c["target"]): c for c in report["checks"]}
        via_lb = checks[("via LB", "zhibo-2")]
        assert via_lb["ok"] and via_lb["detail"] == "no traffic: critical, rightly out of the LB"
    finally:
        assert labctl(e2e_spec, "recover", "zhibo-2", timeout=120).returncode == 0
    wait_for(lambda: set(lb_sample(30)) == ALL, FOLLOW_DEADLINE, "zhibo-2 back behind the LB")


def test_apply_repairs_an_lb_broken_by_hand(lab, e2e_spec):
    _, connections, _ = lab
    # Someone puts the placeholder live and reloads: nginx no longer serves the render.
    on_host(connections, "node3", "docker exec lb sh -c 'cp /etc/nginx/lab/placeholder.conf "
            "/etc/nginx/conf.d/service.conf && nginx -s reload'")  # fmt: skip
    wait_for(lambda: httpx.get(f"http://{LB}/{SERVICE}", timeout=5).status_code == 404, 10,
             "the broken LB answering 404")  # fmt: skip
    result = labctl(e2e_spec, "apply", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Check that the LB serves its latest render on node3" in result.stderr, result.stderr
    wait_for(lambda: set(lb_sample(30)) == ALL, 10, "the repaired LB serving every instance")


@dataclass
class Usage:
    cpu_seconds: float
    log_bytes: int


def consul_template_usage(connections) -> Usage:
    """consul-template's CPU time (utime + stime of its process) and the LB's log size."""
    command = "docker exec lb sh -c 'cat /proc/$(cat /run/lb/consul-template.pid)/stat'"
    stat = on_host(connections, "node3", command)
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    log_bytes = int(on_host(connections, "node3", "docker logs lb 2>&1 | wc -c"))
    return Usage(ticks / 100, log_bytes)  # USER_HZ is 100 on Linux


def test_every_server_down_loses_nothing_then_the_lb_follows(lab, e2e_spec):
    """Both servers stopped (no leader; the LB host's client agent up, its queries failing
    with "No known Consul servers"): nginx serves the last good configuration, every
    instance still runs; with the servers back the LB follows the next change."""
    _, connections, _ = lab
    servers = ("node1", "node2")
    with Traffic(f"every server down {SERVERS_OUTAGE} s") as traffic:
        for name in servers:
            on_host(connections, name, "docker stop consul")
        try:
            before = consul_template_usage(connections)
            time.sleep(SERVERS_OUTAGE)  # the fault: no server while the loops run
            after = consul_template_usage(connections)
        finally:
            for name in servers:
                on_host(connections, name, "docker start consul")
    traffic.assert_no_failed_get()
    cpu_share = (after.cpu_seconds - before.cpu_seconds) / SERVERS_OUTAGE
    print(f"every server down {SERVERS_OUTAGE} s: consul-template {cpu_share:.2%} of a core, "
          f"log +{after.log_bytes - before.log_bytes} B")  # fmt: skip
    assert cpu_share < 0.05
    # Back, the servers join each other only (retry_join names node1); the LB host's
    # client agent finds them on Serf's next reconnect to failed members (every 30 s;
    # real Consul's servers also rejoin it at once from their Serf snapshot). Their
    # instances' checks restart critical until their first run, as in Consul.
    def lb_host_agent_has_a_leader() -> bool:
        code, leader = run(connections["node3"], f"{AGENT_CURL}/v1/status/leader", sudo=True)
        return code == 0 and leader.strip() not in ("", '""')

    wait_for(lb_host_agent_has_a_leader, RECONNECT + 30, "node3's agent finding a leader")
    wait_for(lambda: upstream() == ADDRESSES, BACK_AFTER_AGENT, "all three back in the LB")
    assert labctl(e2e_spec, "fail", "zhibo-3", timeout=120).returncode == 0
    wait_for(lambda: upstream() == ADDRESSES - {f"{E2E_SUBNET}.4:8080"}, FOLLOW_DEADLINE,
             "the LB dropping zhibo-3 after the servers' outage")  # fmt: skip
    assert labctl(e2e_spec, "recover", "zhibo-3", timeout=120).returncode == 0
    wait_for(lambda: upstream() == ADDRESSES, FOLLOW_DEADLINE, "zhibo-3 back in the LB")


def test_a_consul_outage_on_the_lb_host_loses_nothing_then_the_lb_follows(lab, e2e_spec):
    _, connections, _ = lab
    with Traffic(f"the LB host's agent down {OUTAGE} s") as traffic:
        on_host(connections, "node3", "docker stop consul")
        try:
            before = consul_template_usage(connections)
            time.sleep(OUTAGE)  # the fault itself: the agent stays away while the loops run
            after = consul_template_usage(connections)
        finally:
            on_host(connections, "node3", "docker start consul")
    traffic.assert_no_failed_get()
    cpu_share = (after.cpu_seconds - before.cpu_seconds) / OUTAGE
    log_growth = after.log_bytes - before.log_bytes
    print(f"outage {OUTAGE} s: consul-template {cpu_share:.2%} of a core, log +{log_growth} B")
    assert cpu_share < 0.05
    assert log_growth < 1_000_000 * OUTAGE / 900  # the 1 MB per 15 minutes
    # With Consul back, the LB follows the next change (which the next test undoes).
    assert labctl(e2e_spec, "scale", f"{SERVICE}=5", timeout=600).returncode == 0
    added = {f"{E2E_SUBNET}.2:8081", f"{E2E_SUBNET}.3:8081"}
    wait_for(lambda: added <= upstream(), BACK_AFTER_AGENT,
             "the LB following a scale-up after the outage")  # fmt: skip


def test_a_host_lost_in_the_middle_of_apply(lab, e2e_spec):
    """The scale back to 3 removes zhibo-1-2 and zhibo-2-2; node2 is killed while the
    converge is in its Consul role, before the demo services. One sentence names the host
    and the way out; with the seed's two servers verify says why nothing can change
    meanwhile; after recover, apply converges and every instance's container and
    registration agree."""
    spec, connections, _ = lab
    log = log_file(spec, "converge")
    offset = log.stat().st_size
    scale = subprocess.Popen(
        [sys.executable, "-m", "labctl", "--spec", str(e2e_spec), "scale", f"{SERVICE}=3"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: b"Deploy Consul agent |" in log.read_bytes()[offset:], 300,
                 "the scale's converge reaching the Consul role")  # fmt: skip
        docker.from_env().containers.get(host_container_name(spec, "node2")).kill()
        _, stderr = scale.communicate(timeout=600)
    finally:
        if scale.poll() is None:
            scale.kill()
    message = " ".join(stderr.split())
    assert scale.returncode == 1, message
    assert "host node2 stopped answering during the converge" in message, message
    assert "`labctl recover node2`, then run `labctl apply`" in message, message

    def no_quorum_sentence() -> str | None:
        checks = {(c.what, c.target): c for c in verify(spec, connections)}
        detail = checks[("leader", "raft")].detail
        return detail if "quorum needs 2" in detail else None

    sentence = wait_for(no_quorum_sentence, 60, "verify naming the lost quorum")
    assert "1 of 2 Consul servers alive" in sentence and "until node2 returns" in sentence
    assert answered_by_an_instance()  # the LB keeps serving its last configuration

    assert labctl(e2e_spec, "recover", "node2", timeout=600).returncode == 0
    refresh_connections(spec, connections)
    result = labctl(e2e_spec, "apply", timeout=600)
    assert result.returncode == 0, result.stderr
    role = "label=io.labctl.role=demo_service"
    list_containers = f"docker ps -a --format '{{{{.Names}}}}' --filter {role}"
    for host in ("node1", "node2", "node3"):
        containers = set(on_host(connections, host, list_containers).split())
        agent = on_host(connections, host, f"{AGENT_CURL}/v1/agent/services")
        registered = {
            sid for sid, s in json.loads(agent).items()
            if s.get("Meta", {}).get("lab_managed") == "demo_service"
        }  # fmt: skip
        assert containers == registered, (host, containers, registered)
    wait_for(lambda: set(lb_sample(30)) == ALL, REBOOT_DEADLINE, "the three instances back")


def test_the_lb_host_rebooted_serves_at_once_and_verify_passes_without_apply(lab):
    """The host's engine starts the LB again by its restart policy, and nginx serves the
    last good configuration from the first second of that start: before the host's own
    Consul agent and instance are back (the other hosts' instances answer)."""
    spec, connections, _ = lab

    def lb_started_since(moment: float) -> float | None:
        try:
            started_at, _ = started(connections, "node3", "lb")
        except (AssertionError, RemoteError):  # the host still booting: no SSH, no engine
            return None
        return started_at if started_at > moment else None

    with probe_loop() as loop:
        rebooted = time.time()
        docker.from_env().containers.get(host_container_name(spec, "node3")).restart(timeout=30)
        refresh_connections(spec, connections)
        started_at = wait_for(lambda: lb_started_since(rebooted), REBOOT_DEADLINE,
                              "the LB started again on the rebooted host")  # fmt: skip
        wait_for(answered_by_an_instance, FOLLOW_DEADLINE, "the LB answering after the reboot")
    assert_serves_from_its_first_second(loop, started_at, "the LB host rebooted")
    wait_for(lambda: all(c.ok for c in verify(spec, connections)), REBOOT_DEADLINE,
             "verify passing after node3 rebooted")  # fmt: skip
