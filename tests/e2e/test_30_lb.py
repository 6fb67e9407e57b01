"""The dynamic load balancer: nginx + consul-template follow scale-up, graceful
scale-down, crashes and total loss, with no failed GET along the way — for a client
with a fresh connection per request and for a keep-alive one, each held to its own
pace — and a scaled-down instance out of the LB before it stops."""

from __future__ import annotations

import time
from collections import Counter

import httpx

from labctl.lb_client import read_lb_record
from labctl.remote import run
from tests.e2e.conftest import E2E_SUBNET, labctl, wait_for
from tests.e2e.events import LbTimeline, assert_left_the_lb_before_it_stopped, container_events
from tests.e2e.probes import (
    FOLLOW_DEADLINE,
    LB,
    SERVICE,
    Traffic,
    consul_as,
    lb_sample,
    on_host,
    upstream,
)


def test_thirty_requests_reach_all_three_instances(lab):
    seen = lb_sample(30)
    assert set(seen) == {"zhibo-1", "zhibo-2", "zhibo-3"}, seen


def test_verify_shows_the_lb_distribution_and_nginx_t(lab, e2e_spec):
    result = labctl(e2e_spec, "verify", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("via LB") == 3 and "nginx -t" in result.stdout


def test_scale_up_then_graceful_scale_down_loses_nothing(lab, e2e_spec):
    _, connections, _ = lab
    up = labctl(e2e_spec, "scale", f"{SERVICE}=5", timeout=600)
    assert up.returncode == 0, up.stderr
    new = {"zhibo-1-2", "zhibo-2-2"}
    wait_for(lambda: new <= set(lb_sample(20)), FOLLOW_DEADLINE, "new instances getting traffic")

    leaving = {"zhibo-1-2": f"{E2E_SUBNET}.2:8081", "zhibo-2-2": f"{E2E_SUBNET}.3:8081"}
    since = time.time()
    with LbTimeline() as timeline, Traffic("graceful scale-down") as traffic:
        down = labctl(e2e_spec, "scale", f"{SERVICE}=3", timeout=600)
    assert down.returncode == 0, down.stderr
    traffic.assert_no_failed_get()
    # Out of Consul and out of nginx, then stopped: proxy_next_upstream would hide an
    # instance stopped first from the loops, not from the LB's and Docker's records.
    events = container_events(connections, ("node1", "node2"), "demo_service", since, time.time())
    assert_left_the_lb_before_it_stopped(timeline, events, SERVICE, leaving)
    assert set(lb_sample(30)) == {"zhibo-1", "zhibo-2", "zhibo-3"}


def test_a_killed_instance_leaves_the_upstream_with_no_failed_get(lab, e2e_spec):
    with Traffic("zhibo-2 killed") as traffic:
        killed = labctl(e2e_spec, "fail", "zhibo-2", timeout=120)
        assert killed.returncode == 0, killed.stderr
        wait_for(lambda: f"{E2E_SUBNET}.3:8080" not in upstream(), FOLLOW_DEADLINE,
                 "zhibo-2 leaving the nginx upstream")  # fmt: skip
    traffic.assert_no_failed_get()
    assert labctl(e2e_spec, "recover", "zhibo-2", timeout=120).returncode == 0
    wait_for(lambda: f"{E2E_SUBNET}.3:8080" in upstream(), FOLLOW_DEADLINE,
             "zhibo-2 back in the upstream")  # fmt: skip


def test_every_instance_down_gives_502_then_recovers_by_itself(lab, e2e_spec):
    """Under the loops: while an instance is left, no failed GET; with none left, the
    LB's own 502 (the template's "force a 502" server), never a connection error or a
    timeout; and 200s again as soon as one instance is back."""
    instances = ["zhibo-1", "zhibo-2", "zhibo-3"]
    with Traffic("the loss of every instance") as traffic:
        try:
            for instance in instances:
                last_kill = time.monotonic()
                assert labctl(e2e_spec, "fail", instance, timeout=120).returncode == 0
            wait_for(lambda: upstream() == set(), FOLLOW_DEADLINE, "an empty upstream")
            assert httpx.get(f"http://{LB}/{SERVICE}", timeout=10).status_code == 502
        finally:
            assert labctl(e2e_spec, "recover", "zhibo-3", timeout=120).returncode == 0
        wait_for(lambda: lb_sample(3) == Counter({"zhibo-3": 3}), FOLLOW_DEADLINE,
                 "the LB serving again from the one instance back")  # fmt: skip
        one_back = time.monotonic()
        for instance in instances[:2]:
            assert labctl(e2e_spec, "recover", instance, timeout=120).returncode == 0
        wait_for(lambda: len(upstream()) == 3, FOLLOW_DEADLINE, "all three instances back")
    traffic.assert_no_failed_get(also=(502,))
    for loop in traffic.loops:
        refused = [t for t, outcome in loop.refusals if outcome == 502]
        assert refused, f"no 502 with every instance down: {dict(loop.outcomes)}"
        assert last_kill <= min(refused) and max(refused) <= one_back, (
            "a 502 while an instance was left"
        )


def test_an_invalid_render_keeps_nginx_serving_and_consul_template_running(lab):
    spec, connections, _ = lab
    bad = {"ID": "broken", "Name": "broken_svc", "Address": "no-such-host.invalid", "Port": 80}
    before = read_lb_record(httpx.Client(timeout=5), LB)
    # Not a lab service: only the management token may register it.
    consul_as(spec, "management", "PUT", "/v1/agent/service/register", json=bad).raise_for_status()
    try:
        wait_for(lambda: read_lb_record(httpx.Client(timeout=5), LB).rejected > before.rejected,
                 FOLLOW_DEADLINE, "the LB rejecting the render")  # fmt: skip
        assert "broken_svc" not in read_lb_record(httpx.Client(timeout=5), LB).upstreams
        assert set(lb_sample(30)) == {"zhibo-1", "zhibo-2", "zhibo-3"}
        code, output = run(connections["node3"], "docker top lb", sudo=True)
        assert code == 0 and "consul-template" in output, f"consul-template is gone: {output}"
    finally:
        consul_as(spec, "management", "PUT", "/v1/agent/service/deregister/broken"
                  ).raise_for_status()  # fmt: skip
    # consul-template is alive: the next (valid) render reloads nginx.
    wait_for(lambda: read_lb_record(httpx.Client(timeout=5), LB).reloads > before.reloads,
             FOLLOW_DEADLINE, "a reload after the bad service left")  # fmt: skip


def test_consul_template_runs_with_the_labs_flags(lab):
    """What the README's LB claims rest on, read from the running process: quiescence
    (no reload storm from a flapping check), Consul retried forever (0.19.5's capped
    backoff: no spin), a stop on `docker stop`'s SIGTERM, and a level that keeps its
    token out of the log."""
    _, connections, _ = lab
    cmdline = on_host(connections, "node3", "docker exec lb sh -c "
                      "'tr \"\\0\" \"\\n\" < /proc/$(cat /run/lb/consul-template.pid)/cmdline'")
    flags = set(cmdline.split())
    assert {"-wait=2s:10s", "-consul-retry-attempts=0", "-consul-retry-max-backoff=10s",
            "-kill-signal=SIGTERM", "-log-level=info"} <= flags, cmdline  # fmt: skip


def test_apply_after_all_of_that_changes_nothing(lab, e2e_spec):
    result = labctl(e2e_spec, "apply", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "no changes" in result.stderr, result.stderr


def test_stub_status_answers_loopback_only(lab):
    _, connections, _ = lab
    assert httpx.get(f"http://{LB}/stub_status", timeout=10).status_code == 403
    code, output = run(connections["node3"], "curl -fsS http://127.0.0.1/stub_status")
    assert code == 0 and "Active connections" in output, output
