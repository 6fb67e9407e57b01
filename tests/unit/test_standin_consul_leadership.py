"""The Consul stand-in's Raft: Consul's timing, randomized elections, vote rules (in-process)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest

from tests.support.consul_standin import leadership, state_store, transport, util, wait_for


def test_consul_raft_timing_is_the_raft_defaults_times_raft_multiplier() -> None:
    """agent/config/default.go (consul.raft: heartbeat_timeout 1000ms, election_timeout 1000ms,
    leader_lease_timeout 500ms) times performance.raft_multiplier, default 5."""
    t = leadership.RaftTimings.consul(5, dev=False)
    assert (t.heartbeat_timeout, t.election_timeout, t.lease_timeout) == (5.0, 5.0, 2.5)
    t = leadership.RaftTimings.consul(1, dev=False)
    assert (t.heartbeat_timeout, t.election_timeout, t.lease_timeout) == (1.0, 1.0, 0.5)


def test_raft_timers_are_randomized_between_one_and_two_timeouts() -> None:
    """hashicorp/raft util.go randomTimeout: minVal + rand % minVal."""
    draws = [util.random_timeout(5.0) for _ in range(2000)]
    assert min(draws) >= 5.0 and max(draws) < 10.0
    assert max(draws) - min(draws) > 4.5


class Net:
    """Routes Raft messages between in-process servers; a stopped server drops them."""

    def __init__(self) -> None:
        self.handlers: dict[tuple[str, int], dict] = {}
        self.down: set[tuple[str, int]] = set()

    def transport(self, addr: tuple[str, int]) -> Net.Endpoint:
        self.handlers[addr] = {}
        return Net.Endpoint(self, addr)

    class Endpoint:
        def __init__(self, net: Net, addr: tuple[str, int]) -> None:
            self.net, self.addr = net, addr

        def route(self, name: str, handler) -> None:
            self.net.handlers[self.addr][name] = handler

        def send(self, addr: str, port: int, name: str, payload: dict, timeout: float) -> dict:
            target = (addr, port)
            if target in self.net.down or self.addr in self.net.down:
                raise transport.TransportError(f"dial tcp {addr}:{port}: i/o timeout")
            return self.net.handlers[target][name](payload, f"{self.addr[0]}:0")


TIMINGS = leadership.RaftTimings(0.2, 0.2, 0.1)


def make_cluster(net: Net, size: int = 3) -> list[leadership.Raft]:
    nodes = []
    config = [
        {
            "ID": f"id{i}",
            "Node": f"s{i}",
            "Address": f"10.0.0.{i}:8300",
            "Suffrage": "Voter",
            "serf": [f"10.0.0.{i}", 8301],
        }
        for i in range(size)
    ]
    for i in range(size):
        addr = (f"10.0.0.{i}", 8301)
        raft = leadership.Raft(
            f"id{i}",
            f"s{i}",
            f"10.0.0.{i}:8300",
            addr,
            state_store.StateStore(),
            net.transport(addr),
            TIMINGS,
            "",
            util.Logger("ERROR"),
            lambda leader: None,
        )
        raft.bootstrap(config)
        nodes.append(raft)
    for raft in nodes:
        raft.start()
    return nodes


@pytest.fixture
def clusters() -> Iterator[list[list[leadership.Raft]]]:
    made: list[list[leadership.Raft]] = []
    yield made
    for nodes in made:
        for raft in nodes:
            raft.shutdown()


def leader_of(nodes: list[leadership.Raft]) -> leadership.Raft | None:
    leaders = [r for r in nodes if r.is_leader() and r.leader()[0] == r.address]
    return leaders[0] if len(leaders) == 1 else None


def test_whichever_timer_fires_first_leads(clusters) -> None:
    """Raft elects the candidate whose randomized heartbeat timer fires first (raft.go
    runFollower), not a fixed server: over fresh clusters, different servers win."""
    winners = set()
    for seed in range(8):
        random.seed(seed)
        nodes = make_cluster(Net())
        clusters.append(nodes)
        winners.add(wait_for(lambda n=nodes: leader_of(n), 5, "a leader").name)
        for raft in nodes:
            raft.shutdown()
    assert len(winners) > 1, winners


def test_a_new_leader_waits_out_the_heartbeat_timeout(clusters) -> None:
    """Followers start an election only after a whole HeartbeatTimeout without hearing from
    the leader (raft.go runFollower), and a server that still knows a leader rejects votes
    (requestVote), so a new leader takes at least one heartbeat timeout."""
    net = Net()
    nodes = make_cluster(net)
    clusters.append(nodes)
    old = wait_for(lambda: leader_of(nodes), 5, "a leader")
    # Read now: cut off, the old leader steps down and stands for election itself,
    # raising its own term, possibly to the new leader's.
    old_term = old.term
    net.down.add(old.serf)
    lost = time.monotonic()
    others = [r for r in nodes if r is not old]
    new = wait_for(lambda: leader_of(others), 10, "a new leader", interval=0.01)
    assert time.monotonic() - lost >= TIMINGS.heartbeat_timeout
    assert new.term > old_term
    # The partitioned old leader steps down once its lease passes without a quorum.
    wait_for(lambda: not old.is_leader(), 5, "the old leader stepping down")


def make_raft() -> leadership.Raft:
    net = Net()
    raft = leadership.Raft(
        "id0",
        "s0",
        "10.0.0.0:8300",
        ("10.0.0.0", 8301),
        state_store.StateStore(),
        net.transport(("10.0.0.0", 8301)),
        TIMINGS,
        "",
        util.Logger("ERROR"),
        lambda _: None,
    )
    raft.term = 3
    return raft


def vote(raft: leadership.Raft, term: int, last_index: int = 10, last_term: int = 3) -> dict:
    return raft._on_vote(
        {
            "term": term,
            "candidate": "s1",
            "candidate_addr": "10.0.0.1:8300",
            "last_index": last_index,
            "last_term": last_term,
        },
        "10.0.0.1:0",
    )


def test_vote_rules() -> None:
    """raft.go requestVote: no vote while a leader is known, for an older term, for a
    candidate with an older log, or twice in one term."""
    raft = make_raft()
    raft.store.raft_index, raft.store.last_term = 10, 3
    raft.leader_addr = "10.0.0.2:8300"
    assert not vote(raft, 4)["granted"]
    raft.leader_addr = ""
    assert not vote(raft, 2)["granted"]
    assert not vote(raft, 4, last_index=9)["granted"]
    assert not vote(raft, 5, last_term=2)["granted"]
    assert vote(raft, 6)["granted"]
    assert raft.term == 6
    other = raft._on_vote(
        {
            "term": 6,
            "candidate": "s2",
            "candidate_addr": "10.0.0.2:8300",
            "last_index": 10,
            "last_term": 3,
        },
        "",
    )
    assert not other["granted"]
