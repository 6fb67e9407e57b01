"""The Consul stand-in's failure detection: memberlist's timing with Consul's LAN settings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.consul_standin import AgentProc, config, free_port, get_json, membership

DEFAULTS = config.GossipConfig()


def test_consul_lan_gossip_defaults_are_memberlists() -> None:
    """Consul's gossip_lan defaults are memberlist.DefaultLANConfig (memberlist config.go;
    agent/config/default.go gossip_lan): 1s probe interval, 500ms probe timeout, suspicion
    multiplier 4 (max 6x), 3 indirect checks, gossip every 200ms to 3 nodes, retransmit 4."""
    assert (DEFAULTS.probe_interval, DEFAULTS.probe_timeout) == (1.0, 0.5)
    assert (DEFAULTS.suspicion_mult, DEFAULTS.suspicion_max_timeout_mult) == (4, 6)
    assert (DEFAULTS.indirect_checks, DEFAULTS.gossip_nodes, DEFAULTS.retransmit_mult) == (3, 3, 4)
    assert (DEFAULTS.gossip_interval, DEFAULTS.push_pull_interval) == (0.2, 30.0)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        # n - 2 < SuspicionMult - 2: no confirmations expected, the minimum applies at once.
        (3, (0, 4.0, 24.0)),
        # 4 * max(1, log10(n)) seconds; k = 2 confirmations shorten 24 s towards 4 s.
        (6, (2, 4.0, 24.0)),
        (9, (2, 4.0, 24.0)),
        (20, (2, 5.204, 31.224)),
    ],
)
def test_suspicion_timeout_for_the_cluster_size(members: int, expected: tuple) -> None:
    """memberlist state.go suspectNode: k = SuspicionMult - 2 (0 when n - 2 < k),
    min = suspicionTimeout(SuspicionMult, n, ProbeInterval), max = SuspicionMaxTimeoutMult * min
    (util.go suspicionTimeout: SuspicionMult * max(1, log10(n)) * ProbeInterval)."""
    k, lo, hi = membership.suspicion_parameters(DEFAULTS, members)
    assert (k, round(lo, 3), round(hi, 3)) == expected


def test_confirmations_shorten_the_suspicion() -> None:
    """memberlist suspicion.go remainingSuspicionTime: max - log(n+1)/log(k+1) * (max - min),
    never below min; with 6 or 9 members one confirmation leaves 11.381 s, two leave 4 s."""
    assert membership.remaining_suspicion_time(1, 2, 0.0, 4.0, 24.0) == pytest.approx(11.381)
    assert membership.remaining_suspicion_time(2, 2, 0.0, 4.0, 24.0) == pytest.approx(4.0)
    assert membership.remaining_suspicion_time(2, 2, 3.0, 4.0, 24.0) == pytest.approx(1.0)


def test_broadcasts_are_retransmitted_per_cluster_size() -> None:
    """memberlist util.go retransmitLimit: RetransmitMult * ceil(log10(n + 1))."""
    assert [membership.retransmit_limit(4, n) for n in (3, 6, 9, 10)] == [4, 4, 4, 8]


@pytest.fixture
def three_agents(tmp_path: Path) -> Iterator[list[AgentProc]]:
    """Three client agents in one LAN pool, with Consul's default gossip timing."""
    ips = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
    http_port, serf_port = free_port(ips), free_port(ips)
    agents = [
        AgentProc(tmp_path, f"node{i + 1}", ip, http_port, serf_port) for i, ip in enumerate(ips)
    ]
    try:
        agents[0].start()
        for agent in agents[1:]:
            agent.start(f"-retry-join={agents[0].serf_addr}")
        yield agents
    finally:
        for agent in agents:
            agent.kill()


def statuses(agent: AgentProc) -> dict[str, int]:
    return {m["Name"]: m["Status"] for m in get_json(agent.base + "/v1/agent/members")}


def test_a_killed_agent_is_failed_after_memberlists_detection_time(three_agents) -> None:
    """With 3 members a probe that gets no ack within the probe interval (1 s) suspects the
    member, and with k = 0 the suspicion lasts its minimum, 4 * max(1, log10(3)) * 1 s = 4 s:
    so at least 5 s pass between a crash and "failed", and each of the two others probes
    the dead one every other second, so it is failed within about 7 s, a little more on a
    busy machine (state.go probeNode, suspectNode; suspicion.go)."""
    first, second, victim = three_agents
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(set(statuses(a).values()) == {1} and len(statuses(a)) == 3 for a in three_agents):
            break
        time.sleep(0.1)
    killed = time.monotonic()
    victim.kill()
    seen: dict[str, float] = {}
    while len(seen) < 2 and time.monotonic() - killed < 20:
        for agent in (first, second):
            if agent.name not in seen and statuses(agent).get(victim.name) == 4:
                seen[agent.name] = time.monotonic() - killed
        time.sleep(0.05)
    assert len(seen) == 2, f"not failed everywhere within 20 s: {seen}"
    # A probe in flight at the crash (a millisecond on loopback) may start the clock early.
    assert min(seen.values()) >= 4.9, seen
    assert max(seen.values()) <= 10.0, seen
    log = first.log() + second.log()
    assert f"memberlist: Suspect {victim.name} has failed, no acks received" in log
    assert f"Marking {victim.name} as failed, suspect timeout reached (0 peer confirmations)" in log


def test_a_member_whose_peers_came_back_without_joining_it_reconnects(three_agents) -> None:
    """Serf's reconnect (serf.go reconnect, ReconnectInterval 30 s, no stagger): node3 sees
    node1 and node2 fail; they come back, node2 joining node1 only and neither joining
    node3 (as the lab's servers do after they all stopped, their retry_join naming the
    first server). node3 joins a failed member again on its next 30 s tick, and so sees
    both alive — not before that tick, and not never."""
    first, second, third = three_agents
    deadline = time.monotonic() + 20
    while len(statuses(third)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    first.kill()
    second.kill()
    deadline = time.monotonic() + 30
    failed = {"node1": 4, "node2": 4, "node3": 1}
    while statuses(third) != failed and time.monotonic() < deadline:
        time.sleep(0.2)
    assert statuses(third) == failed
    first.start()
    second.start(f"-retry-join={first.serf_addr}")
    back = time.monotonic()
    deadline = back + DEFAULTS.reconnect_interval + 20
    while set(statuses(third).values()) != {1} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert statuses(third) == {"node1": 1, "node2": 1, "node3": 1}
    assert "serf: attempting reconnect to node" in third.log()
