"""Rolling changes: an apply that must replace every demo instance and every Consul agent
does it one at a time, with no failed GET for a fresh-connection client nor for a
keep-alive one, each held to its own pace. The order is read from the lab's own records
(the LB's publishes, Docker's events, the servers' status), which a client cannot see:
each instance out of the LB before its container stops and back in it before the next
one stops; each server back with a leader and every server in its raft peer set before
the next agent goes. Replaced means a new container (its ID), not a rewritten file."""

from __future__ import annotations

import json
import time
from itertools import pairwise

from labctl.lifecycle import converge_lab
from labctl.paths import with_state
from tests.e2e.events import (
    LbTimeline,
    ServerWatch,
    assert_left_the_lb_before_it_stopped,
    container_events,
    started_at,
    stopped_at,
)
from tests.e2e.probes import SERVICE, Traffic, lb_sample, on_host

ALL = {"zhibo-1", "zhibo-2", "zhibo-3"}
HOSTS = ("node1", "node2", "node3")
# pyinfra host data that every demo instance's and every agent's container is made
# from (roles/demo_service.py, roles/consul.py): changing them replaces all of them.
CHANGED = (
    "--data", "demo_environment=" + json.dumps({"LAB_ROLLED": "1"}),
    "--data", "consul_log_level=DEBUG",
)  # fmt: skip


def replaced_on(result, operation: str) -> set[str]:
    return {h for name, hosts in result.changed if operation in name for h in hosts}


def container_ids(connections, role: str) -> dict[str, str]:
    """Name -> ID of the lab's running containers of `role` on every host."""
    ids = {}
    for host in HOSTS:
        listing = on_host(connections, host, "docker ps --no-trunc --format '{{.Names}} "
                          f"{{{{.ID}}}}' --filter label=io.labctl.role={role}")  # fmt: skip
        for line in listing.splitlines():
            name, cid = line.split()
            ids[f"{host}/{name}"] = cid
    return ids


def test_a_rolling_apply_under_load_loses_nothing(lab):
    spec, connections, _ = lab
    spec = with_state(spec)
    instances = {
        i.id: f"{i.address}:{i.port}" for i in spec.instances() if i.service == SERVICE
    }
    servers = [h.name for h in spec.consul_servers]
    for what, extra_args in (("a rolling apply", CHANGED), ("the rolling apply back", ())):
        before = {role: container_ids(connections, role) for role in ("consul", "demo_service")}
        since = time.time()
        with LbTimeline() as timeline, ServerWatch(spec) as watch, Traffic(what) as traffic:
            result = converge_lab(spec, lambda line: None, extra_args=extra_args)
        until = time.time()
        traffic.assert_no_failed_get()
        assert replaced_on(result, "Run and register") == set(HOSTS)
        for role, ids in before.items():
            after = container_ids(connections, role)
            assert set(after) == set(ids), (role, ids, after)
            kept = {name for name in ids if after[name] == ids[name]}
            assert kept == set(), f"{what}: {role} containers not replaced: {kept}"

        # Instances: out of the LB, stopped, replaced, back in the LB — then the next.
        events = container_events(connections, HOSTS, "demo_service", since, until)
        out = assert_left_the_lb_before_it_stopped(timeline, events, SERVICE, instances)
        order = sorted(instances, key=lambda name: stopped_at(events, name))
        for done, following in pairwise(order):
            back = timeline.back_after(SERVICE, instances[done], out[done]).published
            assert back <= stopped_at(events, following), (
                f"{what}: {following} stopped before {done} was back in the LB ({back})"
            )

        # Agents: one at a time; each server back, with a leader and every server in its
        # raft peer set, before the next agent goes. (With the seed's two servers, which
        # tolerate no failure, the cluster has no leader while one is replaced; three or
        # more keep their quorum throughout.)
        agents = container_events(connections, HOSTS, "consul", since, until)
        went = sorted(HOSTS, key=lambda host: stopped_at(agents, "consul", host=host))
        for done, following in pairwise(went):
            if done not in servers:
                continue
            back = started_at(agents, "consul", host=done)
            gone = stopped_at(agents, "consul", host=following)
            assert watch.whole_between(done, back, gone), (
                f"{what}: {following}'s agent went before {done}, a server, was back with "
                "a leader and every server in its raft peer set"
            )
        away = {name: round(watch.seconds_not_whole(name), 1) for name in servers}
        print(f"{what}: agents replaced in the order {went}; seconds each server did not answer "
              f"with a leader and every server in its peer set: {away}, no server at all: "
              f"{watch.seconds_not_whole():.1f}")  # fmt: skip
    assert set(lb_sample(30)) == ALL
