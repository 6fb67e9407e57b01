"""Raft among the servers: terms, votes, heartbeats, leader lease, replication.

Follows hashicorp/raft v1.3 (Consul 1.11's) with Consul's timing:
HeartbeatTimeout = ElectionTimeout = 1 s and LeaderLeaseTimeout = 500 ms,
each times performance.raft_multiplier (default 5), so 5 s, 5 s and 2.5 s.

- A follower's heartbeat timer fires after randomTimeout(HeartbeatTimeout)
  (between 1x and 2x); if the leader was not heard from for a whole
  HeartbeatTimeout it becomes a candidate (raft.go runFollower). Whichever
  server's randomized timer fires first starts the election.
- A candidate votes for itself and asks the voters; its election timer is
  randomTimeout(ElectionTimeout). A server rejects a vote while it still
  knows a leader, for an older term, or when its own log is newer
  (raft.go requestVote).
- The leader heartbeats every randomTimeout(HeartbeatTimeout / 10) and
  steps down when it has not heard from a quorum for LeaderLeaseTimeout
  ("failed to contact quorum of nodes, stepping down").

The "log" is the state store: a write is applied on the leader, replicated
as a snapshot (the stand-in keeps no Raft log, only the last state), and
answered once a quorum holds it, like a committed entry. The last index and
term decide votes as Raft's log does.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .state_store import StateStore
from .transport import Transport, TransportError
from .util import Logger, RPCError, random_timeout

FOLLOWER, CANDIDATE, LEADER = "Follower", "Candidate", "Leader"
VOTER, NONVOTER = "Voter", "Nonvoter"
T = TypeVar("T")


@dataclass
class RaftTimings:
    heartbeat_timeout: float
    election_timeout: float
    lease_timeout: float

    @classmethod
    def consul(cls, multiplier: int, dev: bool) -> RaftTimings:
        if dev:  # default.go DevConsulSource
            return cls(0.035, 0.052, 0.020)
        return cls(1.0 * multiplier, 1.0 * multiplier, 0.5 * multiplier)


class Raft:
    """One server's Raft; `on_leader(bool)` is told when leadership is won or lost."""

    def __init__(
        self,
        node_id: str,
        name: str,
        address: str,
        serf: tuple[str, int],
        store: StateStore,
        transport: Transport,
        timings: RaftTimings,
        state_path: str,
        log: Logger,
        on_leader: Callable[[bool], None],
    ) -> None:
        self.id, self.name, self.address, self.serf = node_id, name, address, serf
        self.store = store
        self.transport = transport
        self.timings = timings
        self.state_path = state_path
        self.log = log
        self.on_leader = on_leader
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        self.stop_event = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="raft")
        self.role = FOLLOWER
        self.term = 0
        self.voted: tuple[int, str] = (0, "")
        self.leader_addr = ""
        self.leader_serf: tuple[str, int] | None = None
        self.last_contact = 0.0  # never: the first timer firing may start an election
        self.configuration: list[dict] = []
        self.config_index = 0
        self.followers: dict[str, dict] = {}
        self.replicate_now = threading.Event()
        self._persist_lock = threading.Lock()
        self._warned = ""
        self._load()
        transport.route("raft/vote", self._on_vote)
        transport.route("raft/append", self._on_append)

    # -- persistence ---------------------------------------------------------------
    def _load(self) -> None:
        if not self.state_path or not os.path.exists(self.state_path):
            return
        with open(self.state_path, encoding="utf-8") as f:
            data = json.load(f)
        self.term = int(data.get("term", 0))
        self.voted = (int(data.get("voted", [0, ""])[0]), str(data.get("voted", [0, ""])[1]))
        self.configuration = list(data.get("configuration", []))
        self.config_index = int(data.get("config_index", 0))
        self.store.restore(data.get("state") or {})
        self.log.info(
            "agent.server.raft",
            "restored from snapshot",
            index=self.store.raft_index,
            term=self.term,
        )

    def persist(self) -> None:
        if not self.state_path:
            return
        with self.lock:
            data = {
                "term": self.term,
                "voted": list(self.voted),
                "configuration": self.configuration,
                "config_index": self.config_index,
                "state": self.store.snapshot(),
            }
        with self._persist_lock:
            os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
            tmp = self.state_path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, self.state_path)

    def has_state(self) -> bool:
        return bool(self.configuration) or self.store.raft_index > 0

    # -- views -------------------------------------------------------------------------
    def voters(self) -> list[dict]:
        return [s for s in self.configuration if s["Suffrage"] == VOTER]

    def quorum(self) -> int:
        return len(self.voters()) // 2 + 1

    def is_leader(self) -> bool:
        with self.lock:
            return self.role == LEADER

    def leader(self) -> tuple[str, tuple[str, int] | None]:
        """raft.Leader(): the leader's address as this server knows it, and where to reach it."""
        with self.lock:
            return self.leader_addr, self.leader_serf

    def stats(self) -> dict:
        with self.lock:
            return {
                "state": self.role,
                "term": str(self.term),
                "num_peers": str(max(0, len(self.voters()) - 1)),
                "applied_index": str(self.store.raft_index),
                "commit_index": str(self.store.raft_index),
                "last_log_index": str(self.store.raft_index),
                "last_log_term": str(self.store.last_term),
                "protocol_version": "3",
            }

    # -- configuration -----------------------------------------------------------------
    def bootstrap(self, servers: list[dict]) -> None:
        """BootstrapCluster: the first configuration, at index 1 term 1."""
        with self.lock:
            if self.has_state():
                return
            self.configuration = [dict(s, Suffrage=s.get("Suffrage", VOTER)) for s in servers]
            self.term = 1
            self.config_index = self.store.append_entry(1)
        self.persist()
        self.log.info(
            "agent.server.raft",
            "initial configuration",
            index=self.config_index,
            servers="["
            + " ".join(
                f"{{Suffrage:{s['Suffrage']} ID:{s['ID']} Address:{s['Address']}}}" for s in servers
            )
            + "]",
        )

    def change_configuration(self, change: Callable[[list[dict]], list[dict]]) -> None:
        """Leader only: a new configuration, as a committed Raft entry."""
        with self.lock:
            if self.role != LEADER:
                raise RPCError("node is not the leader")
            new = change([dict(s) for s in self.configuration])
            if new == self.configuration:
                return
            self.configuration = new
            self.config_index = self.store.append_entry(self.term)
            index = self.config_index
        self.persist()
        self._wait_commit(index)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._run, name="raft", daemon=True).start()

    def shutdown(self) -> None:
        self.stop_event.set()
        with self.lock:
            self.wake.notify_all()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        self.log.info(
            "agent.server.raft",
            "entering follower state",
            follower=self.address,
            leader=self.leader_addr or '""',
        )
        while not self.stop_event.is_set():
            role = self.role
            try:
                if role == FOLLOWER:
                    self._run_follower()
                elif role == CANDIDATE:
                    self._run_candidate()
                else:
                    self._run_leader()
            except Exception as e:
                self.log.error("agent.server.raft", "raft loop error", error=repr(e))
                self.stop_event.wait(0.5)

    def _step_down(self, term: int) -> None:
        """Become a follower (caller holds the lock)."""
        was_leader = self.role == LEADER
        if term > self.term:
            self.term = term
        self.role = FOLLOWER
        self.wake.notify_all()
        if was_leader:
            self.leader_addr, self.leader_serf = "", None
            self.pool.submit(self.on_leader, False)

    def _warn_once(self, message: str) -> None:
        if self._warned != message:
            self._warned = message
            self.log.warn("agent.server.raft", message)

    def _run_follower(self) -> None:
        hb = self.timings.heartbeat_timeout
        with self.lock:
            deadline = time.monotonic() + random_timeout(hb)
            while self.role == FOLLOWER and not self.stop_event.is_set():
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self.wake.wait(remaining)
                    continue
                deadline = time.monotonic() + random_timeout(hb)
                if time.monotonic() - self.last_contact < hb:
                    continue
                last_leader = self.leader_addr
                self.leader_addr, self.leader_serf = "", None
                if not self.configuration:
                    self._warn_once("no known peers, aborting election")
                elif not any(s["ID"] == self.id for s in self.voters()):
                    self._warn_once("not part of stable configuration, aborting election")
                else:
                    self._warned = ""
                    self.log.warn(
                        "agent.server.raft",
                        "heartbeat timeout reached, starting election",
                        **{"last-leader": last_leader or '""'},
                    )
                    self.role = CANDIDATE
                    return

    def _run_candidate(self) -> None:
        with self.lock:
            self.term += 1
            term = self.term
            self.voted = (term, self.name)
            voters = [s for s in self.voters() if s["ID"] != self.id]
            needed = self.quorum()
            request = {
                "term": term,
                "candidate": self.name,
                "candidate_addr": self.address,
                "last_index": self.store.raft_index,
                "last_term": self.store.last_term,
            }
        self.persist()
        self.log.info("agent.server.raft", "entering candidate state", node=self.address, term=term)
        votes = {"granted": 1}

        def ask(server: dict) -> None:
            try:
                answer = self.transport.send(
                    *server["serf"], "raft/vote", request, self.timings.election_timeout
                )
            except TransportError:
                return
            with self.lock:
                if answer["term"] > self.term:
                    self._step_down(answer["term"])
                elif answer.get("granted") and self.role == CANDIDATE and self.term == term:
                    votes["granted"] += 1
                    self.wake.notify_all()

        for server in voters:
            self.pool.submit(ask, server)
        deadline = time.monotonic() + random_timeout(self.timings.election_timeout)
        with self.lock:
            while self.role == CANDIDATE and self.term == term and not self.stop_event.is_set():
                if votes["granted"] >= needed:
                    self.log.info("agent.server.raft", "election won", tally=votes["granted"])
                    self._become_leader()
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.log.warn(
                        "agent.server.raft", "Election timeout reached, restarting election"
                    )
                    return  # still a candidate: a new term
                self.wake.wait(remaining)

    def _become_leader(self) -> None:
        """Caller holds the lock."""
        self.role = LEADER
        self.leader_addr, self.leader_serf = self.address, self.serf
        now = time.monotonic()
        self.followers = {
            s["ID"]: {"last_contact": now, "index": -1, "term": -1}
            for s in self.configuration
            if s["ID"] != self.id
        }
        self.log.info("agent.server.raft", "entering leader state", leader=self.address)
        self.store.append_entry(self.term)  # the new leader's no-op entry
        self.replicate_now.set()
        self.pool.submit(self.persist)
        self.pool.submit(self.on_leader, True)

    def _run_leader(self) -> None:
        hb = self.timings.heartbeat_timeout
        next_lease = time.monotonic() + self.timings.lease_timeout
        while not self.stop_event.is_set():
            with self.lock:
                if self.role != LEADER:
                    return
            self._replicate()
            if time.monotonic() >= next_lease:
                next_lease = time.monotonic() + self.timings.lease_timeout
                if not self._check_lease():
                    return
            self.replicate_now.wait(random_timeout(hb / 10))
            self.replicate_now.clear()

    def _check_lease(self) -> bool:
        """raft.go checkLeaderLease."""
        with self.lock:
            now = time.monotonic()
            contacted = 1
            for server in self.voters():
                f = self.followers.get(server["ID"])
                if f and now - f["last_contact"] <= self.timings.lease_timeout:
                    contacted += 1
            if contacted >= self.quorum():
                return True
            self.log.warn("agent.server.raft", "failed to contact quorum of nodes, stepping down")
            self._step_down(self.term)
            return False

    def _replicate(self) -> None:
        with self.lock:
            targets = [s for s in self.configuration if s["ID"] != self.id]
            base = {
                "term": self.term,
                "leader": self.name,
                "leader_addr": self.address,
                "leader_serf": list(self.serf),
                "configuration": self.configuration,
                "config_index": self.config_index,
                "index": self.store.raft_index,
                "last_term": self.store.last_term,
            }
            behind = []
            for server in targets:
                f = self.followers.setdefault(
                    server["ID"], {"last_contact": time.monotonic(), "index": -1, "term": -1}
                )
                behind.append((f["index"], f["term"]) != (base["index"], base["last_term"]))
        snapshot = self.store.snapshot() if any(behind) else None
        for server, needs_snapshot in zip(targets, behind, strict=True):
            payload = dict(base, snapshot=snapshot) if needs_snapshot else base
            self.pool.submit(self._append_to, server, payload)

    def _append_to(self, server: dict, payload: dict) -> None:
        try:
            answer = self.transport.send(
                *server["serf"], "raft/append", payload, self.timings.heartbeat_timeout
            )
        except TransportError:
            return
        with self.lock:
            if answer["term"] > self.term:
                self._step_down(answer["term"])
                return
            if answer.get("success") and self.role == LEADER and payload["term"] == self.term:
                self.followers[server["ID"]] = {
                    "last_contact": time.monotonic(),
                    "index": answer["index"],
                    "term": answer["last_term"],
                }
                self.wake.notify_all()

    # -- writes ------------------------------------------------------------------------
    def apply(self, write: Callable[[StateStore], T]) -> T:
        """Run `write` in a state store transaction on the leader; return once committed."""
        with self.lock:
            if self.role != LEADER:
                raise RPCError("node is not the leader")
            term = self.term
        before = self.store.raft_index
        with self.store.txn(term):
            result = write(self.store)
        index = self.store.raft_index
        if index != before:
            self.persist()
            self.replicate_now.set()
            self._wait_commit(index)
        return result

    def barrier(self) -> None:
        """raft.Barrier: return once everything this leader holds (its no-op entry
        included) is committed; RPCError when leadership is lost meanwhile."""
        self._wait_commit(self.store.raft_index)

    def _wait_commit(self, index: int) -> None:
        with self.lock:
            while True:
                if self.role != LEADER:
                    raise RPCError("leadership lost while committing log")
                holders = 1 + sum(
                    1
                    for s in self.voters()
                    if s["ID"] != self.id
                    and self.followers.get(s["ID"], {}).get("index", -1) >= index
                )
                if holders >= self.quorum() or self.stop_event.is_set():
                    return
                self.wake.wait(0.5)

    # -- RPC handlers ------------------------------------------------------------------
    def _on_vote(self, req: dict, remote: str) -> dict:
        """raft.go requestVote."""
        with self.lock:
            answer = {"term": self.term, "granted": False}
            if self.leader_addr and self.leader_addr != req["candidate_addr"]:
                self.log.warn(
                    "agent.server.raft",
                    "rejecting vote request since we have a leader",
                    **{"from": req["candidate_addr"], "leader": self.leader_addr},
                )
                return answer
            if req["term"] < self.term:
                return answer
            if req["term"] > self.term:
                self._step_down(req["term"])
                answer["term"] = self.term
            if self.voted[0] == req["term"] and self.voted[1]:
                answer["granted"] = self.voted[1] == req["candidate"]
                return answer
            if self.store.last_term > req["last_term"] or (
                self.store.last_term == req["last_term"]
                and self.store.raft_index > req["last_index"]
            ):
                self.log.warn(
                    "agent.server.raft",
                    "rejecting vote request since our log is newer",
                    candidate=req["candidate_addr"],
                )
                return answer
            self.voted = (req["term"], req["candidate"])
            self.last_contact = time.monotonic()
            answer["granted"] = True
        self.persist()
        return answer

    def _on_append(self, req: dict, remote: str) -> dict:
        """raft.go appendEntries, with the leader's state as the entries."""
        installed = False
        with self.lock:
            if req["term"] < self.term:
                return {"term": self.term, "success": False}
            if req["term"] > self.term or self.role != FOLLOWER:
                self._step_down(req["term"])
            if self.leader_addr != req["leader_addr"]:
                self.log.info("agent.server", f"New leader elected: payload={req['leader']}")
            self.leader_addr = req["leader_addr"]
            self.leader_serf = (req["leader_serf"][0], int(req["leader_serf"][1]))
            self.last_contact = time.monotonic()
            self.configuration = list(req["configuration"])
            self.config_index = int(req.get("config_index", self.config_index))
            self.wake.notify_all()
            if req.get("snapshot") is not None:
                self.store.restore(req["snapshot"])
                installed = True
            answer: dict[str, Any] = {
                "term": self.term,
                "success": True,
                "index": self.store.raft_index,
                "last_term": self.store.last_term,
            }
        if installed:
            self.persist()
        return answer
