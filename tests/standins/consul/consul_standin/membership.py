"""LAN membership: memberlist's SWIM failure detector and Serf's member view.

Timing and rules follow hashicorp/memberlist (v0.3, Consul 1.11's) with
Consul's gossip_lan settings (memberlist.DefaultLANConfig):

- every ProbeInterval (1 s) probe the next member of a shuffled list: a
  ping with ProbeTimeout (500 ms), then IndirectChecks (3) ping-reqs through
  other members and a direct fallback ping; no ack by the end of the probe
  interval -> "Suspect X has failed, no acks received" (state.go probeNode);
- a suspicion lasts suspicionTimeout(SuspicionMult=4, n, ProbeInterval)
  = 4 * max(1, log10(n)) s at least; it starts at SuspicionMaxTimeoutMult (6)
  times that when k = SuspicionMult - 2 = 2 independent confirmations are
  expected (only when n - 2 >= k), and each confirmation shortens it
  (suspicion.go remainingSuspicionTime); at its end the member is dead,
  which Serf reports as failed;
- state changes are broadcast: piggybacked on pings and acks and gossiped
  every GossipInterval (200 ms) to GossipNodes (3) members, each message
  RetransmitMult * ceil(log10(n + 1)) times; a full push/pull with one random
  member every PushPullInterval (30 s); joining is a push/pull;
- a member that hears itself suspected or declared dead refutes with a
  higher incarnation.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .config import GossipConfig
from .transport import Transport, TransportError
from .util import Logger

ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"
# Serf member status codes as /v1/agent/members reports them.
STATUS_ALIVE, STATUS_LEAVING, STATUS_LEFT, STATUS_FAILED = 1, 2, 3, 4
STATUS_NAMES = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}


def suspicion_timeout(suspicion_mult: int, n: int, interval: float) -> float:
    """memberlist util.go suspicionTimeout (min suspicion time for n members)."""
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return suspicion_mult * math.floor(node_scale * 1000) * interval / 1000


def remaining_suspicion_time(n: int, k: int, elapsed: float, lo: float, hi: float) -> float:
    """memberlist suspicion.go remainingSuspicionTime after n of k confirmations."""
    frac = math.log(n + 1.0) / math.log(k + 1.0)
    raw = hi - frac * (hi - lo)
    timeout = max(math.floor(1000.0 * raw) / 1000.0, lo)
    return timeout - elapsed


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """memberlist util.go retransmitLimit."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


def suspicion_parameters(cfg: GossipConfig, n: int) -> tuple[int, float, float]:
    """(k, min, max) as state.go suspectNode computes them for n members."""
    k = cfg.suspicion_mult - 2
    if n - 2 < k:
        k = 0
    lo = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
    return k, lo, cfg.suspicion_max_timeout_mult * lo


@dataclass
class NodeState:
    name: str
    addr: str
    port: int
    tags: dict
    incarnation: int
    state: str = ALIVE
    state_change: float = field(default_factory=time.monotonic)

    def wire(self) -> dict:
        return {
            "name": self.name,
            "addr": self.addr,
            "port": self.port,
            "tags": self.tags,
            "inc": self.incarnation,
            "state": self.state,
        }


class Suspicion:
    """memberlist suspicion.go: a timer shortened by independent confirmations."""

    def __init__(self, origin: str, k: int, lo: float, hi: float, fire: Callable[[int], None]):
        self.k, self.lo, self.hi = k, lo, hi
        self.n = 0
        self.confirmations = {origin}
        self.start = time.monotonic()
        self._fire = fire
        self._timer = threading.Timer(hi if k >= 1 else lo, self._timeout)
        self._timer.daemon = True
        self._timer.start()

    def _timeout(self) -> None:
        self._fire(self.n)

    def confirm(self, origin: str) -> bool:
        if self.n >= self.k or origin in self.confirmations:
            return False
        self.confirmations.add(origin)
        self.n += 1
        elapsed = time.monotonic() - self.start
        remaining = remaining_suspicion_time(self.n, self.k, elapsed, self.lo, self.hi)
        self._timer.cancel()
        self._timer = threading.Timer(max(0.0, remaining), self._timeout)
        self._timer.daemon = True
        self._timer.start()
        return True

    def cancel(self) -> None:
        self._timer.cancel()


@dataclass
class Member:
    """A Serf member as /v1/agent/members shows it."""

    name: str
    addr: str
    port: int
    tags: dict
    status: int = STATUS_ALIVE

    def public(self) -> dict:
        return {
            "Name": self.name,
            "Addr": self.addr,
            "Port": self.port,
            "Tags": dict(self.tags),
            "Status": self.status,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        }


class Memberlist:
    """One agent's view of the LAN pool; emits Serf events (join, failed, left)."""

    def __init__(
        self,
        local: Member,
        cfg: GossipConfig,
        transport: Transport,
        log: Logger,
        role: str,
        on_event: Callable[[str, Member], None],
    ) -> None:
        self.cfg = cfg
        self.transport = transport
        self.log = log
        self.log_ml = f"agent.{role}.memberlist.lan"
        self.log_serf = f"agent.{role}.serf.lan"
        self.on_event = on_event
        self.name = local.name
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.leaving = False
        self.pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="memberlist")
        # Incarnations start from the clock so a restarted agent outranks its old self.
        me = NodeState(local.name, local.addr, local.port, local.tags, int(time.time() * 1000))
        self.nodes: dict[str, NodeState] = {me.name: me}
        self.members: dict[str, Member] = {me.name: local}
        self.timers: dict[str, Suspicion] = {}
        self.broadcasts: list[list[Any]] = []  # [node name, message, transmits]
        self.probe_order: list[str] = []
        self.probe_index = 0
        transport.route("packet/ping", self._on_ping)
        transport.route("packet/ping-req", self._on_ping_req)
        transport.route("packet/gossip", self._on_gossip)
        transport.route("stream/push-pull", self._on_push_pull)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self._queue(self.name, self._alive_msg(self.nodes[self.name]))
        # Serf reports the local member's own join, as it does for the others.
        me = self.members[self.name]
        self.log.info(self.log_serf, f"serf: EventMemberJoin: {me.name} {me.addr}")
        self.pool.submit(self.on_event, "join", Member(me.name, me.addr, me.port, dict(me.tags)))
        for target, interval in (
            (self._probe, self.cfg.probe_interval),
            (self._gossip, self.cfg.gossip_interval),
            (self._push_pull, self.cfg.push_pull_interval),
        ):
            threading.Thread(target=self._every, args=(interval, target), daemon=True).start()
        threading.Thread(target=self._reconnect_ticker, daemon=True).start()

    def _reconnect_ticker(self) -> None:
        # Serf's handleReconnect: a plain ticker, no initial stagger.
        while not self.stop_event.wait(self.cfg.reconnect_interval):
            try:
                self._reconnect()
            except Exception as e:
                self.log.error(self.log_serf, "serf: reconnect failed", error=repr(e))

    def _reconnect(self) -> None:
        """Serf's reconnect (serf.go): with probability failed / alive, one failed member
        picked at random is joined again (a push/pull). How agents find each other after
        their peers come back without joining them, e.g. a client after its servers'
        restart: the servers' retry_join names only the first server."""
        with self.lock:
            failed = [m for m in self.members.values() if m.status == STATUS_FAILED]
            left = sum(1 for m in self.members.values() if m.status == STATUS_LEFT)
            alive = len(self.members) - len(failed) - left
        if not failed or random.random() > len(failed) / max(alive, 1):
            return
        member = random.choice(failed)
        self.log.info(self.log_serf, f"serf: attempting reconnect to {member.name} {member.addr}")
        self.join([(member.addr, member.port)])

    def _every(self, interval: float, action: Callable[[], None]) -> None:
        # memberlist's triggerFunc: a random initial stagger, then a ticker.
        if self.stop_event.wait(random.uniform(0, interval)):
            return
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                action()
            except Exception as e:
                self.log.error(self.log_ml, "memberlist: background task failed", error=repr(e))
            self.stop_event.wait(max(0.0, interval - (time.monotonic() - started)))

    def shutdown(self) -> None:
        self.stop_event.set()
        with self.lock:
            for timer in self.timers.values():
                timer.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def leave(self, timeout: float = 5.0) -> None:
        """memberlist Leave: broadcast our own death as 'left' and wait for it to go out."""
        with self.lock:
            self.leaving = True
            me = self.nodes[self.name]
            others = [n for n in self.nodes.values() if n.name != self.name and n.state == ALIVE]
            self._dead({"node": self.name, "inc": me.incarnation, "from": self.name})
        if not others:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                pending = [b for b in self.broadcasts if b[0] == self.name and b[2] == 0]
            if not pending:
                return
            self._gossip()
            time.sleep(self.cfg.gossip_interval)

    # -- views ---------------------------------------------------------------------
    def member_list(self) -> list[Member]:
        with self.lock:
            return [
                Member(m.name, m.addr, m.port, dict(m.tags), m.status)
                for m in self.members.values()
            ]

    # -- broadcasts --------------------------------------------------------------------
    def _queue(self, node: str, msg: dict) -> None:
        """TransmitLimitedQueue.QueueBroadcast: a newer message about a node replaces older."""
        self.broadcasts = [b for b in self.broadcasts if b[0] != node]
        self.broadcasts.append([node, msg, 0])

    def _take_broadcasts(self) -> list[dict]:
        with self.lock:
            limit = retransmit_limit(self.cfg.retransmit_mult, len(self.nodes))
            self.broadcasts.sort(key=lambda b: b[2])
            out = []
            for b in self.broadcasts:
                b[2] += 1
                out.append(b[1])
            self.broadcasts = [b for b in self.broadcasts if b[2] < limit]
            return out

    @staticmethod
    def _alive_msg(n: NodeState) -> dict:
        return {
            "type": "alive",
            "node": n.name,
            "addr": n.addr,
            "port": n.port,
            "tags": n.tags,
            "inc": n.incarnation,
        }

    def _apply(self, msgs: list[dict]) -> None:
        with self.lock:
            for msg in msgs or []:
                kind = msg.get("type")
                if kind == "alive":
                    self._alive(msg)
                elif kind == "suspect":
                    self._suspect(msg)
                elif kind == "dead":
                    self._dead(msg)

    # -- state machine (state.go aliveNode / suspectNode / deadNode) -------------------
    def _alive(self, a: dict) -> None:
        name = a["node"]
        state = self.nodes.get(name)
        if name == self.name:
            if state and a["inc"] > state.incarnation and not self.leaving:
                self._refute(state, a["inc"])
            return
        if state is None:
            state = NodeState(
                name, a["addr"], int(a["port"]), dict(a.get("tags") or {}), int(a["inc"]), DEAD
            )
            self.nodes[name] = state
            self.probe_order.insert(random.randint(0, len(self.probe_order)), name)
        elif a["inc"] <= state.incarnation:
            return
        timer = self.timers.pop(name, None)
        if timer:
            timer.cancel()
        was = state.state
        state.addr, state.port, state.tags = a["addr"], int(a["port"]), dict(a.get("tags") or {})
        state.incarnation = int(a["inc"])
        self._queue(name, dict(a, type="alive"))
        if was != ALIVE:
            state.state = ALIVE
            state.state_change = time.monotonic()
            if was != SUSPECT:
                self._serf_status(state, STATUS_ALIVE)

    def _suspect(self, s: dict) -> None:
        name = s["node"]
        state = self.nodes.get(name)
        if state is None or s["inc"] < state.incarnation:
            return
        timer = self.timers.get(name)
        if timer is not None:
            if timer.confirm(s["from"]):
                self._queue(name, dict(s, type="suspect"))
            return
        if state.state != ALIVE:
            return
        if name == self.name:
            if not self.leaving:
                self._refute(state, s["inc"])
                self.log.warn(
                    self.log_ml, f"memberlist: Refuting a suspect message (from: {s['from']})"
                )
            return
        self._queue(name, dict(s, type="suspect"))
        state.incarnation = int(s["inc"])
        state.state = SUSPECT
        changed_at = state.state_change = time.monotonic()
        k, lo, hi = suspicion_parameters(self.cfg, len(self.nodes))

        def timeout(confirmations: int) -> None:
            with self.lock:
                current = self.nodes.get(name)
                if (
                    current is None
                    or current.state != SUSPECT
                    or current.state_change != changed_at
                ):
                    return
                self.log.info(
                    self.log_ml,
                    f"memberlist: Marking {name} as failed, suspect timeout reached "
                    f"({confirmations} peer confirmations)",
                )
                self._dead({"node": name, "inc": current.incarnation, "from": self.name})

        self.timers[name] = Suspicion(s["from"], k, lo, hi, timeout)

    def _dead(self, d: dict) -> None:
        name = d["node"]
        state = self.nodes.get(name)
        if state is None or d["inc"] < state.incarnation:
            return
        timer = self.timers.pop(name, None)
        if timer:
            timer.cancel()
        if state.state in (DEAD, LEFT):
            return
        if name == self.name and not self.leaving:
            self._refute(state, d["inc"])
            self.log.warn(self.log_ml, f"memberlist: Refuting a dead message (from: {d['from']})")
            return
        self._queue(name, dict(d, type="dead"))
        state.incarnation = int(d["inc"])
        state.state = LEFT if d["from"] == name else DEAD
        state.state_change = time.monotonic()
        if name != self.name:
            self._serf_status(state, STATUS_LEFT if state.state == LEFT else STATUS_FAILED)

    def _refute(self, me: NodeState, accused_inc: int) -> None:
        me.incarnation = max(me.incarnation, accused_inc) + 1
        self._queue(self.name, self._alive_msg(me))

    def _serf_status(self, state: NodeState, status: int) -> None:
        """Serf's member view follows memberlist's NotifyJoin / NotifyLeave."""
        member = self.members.get(state.name)
        if member is None:
            member = Member(state.name, state.addr, state.port, dict(state.tags), status)
            self.members[state.name] = member
        elif member.status == status and member.tags == state.tags:
            return
        member.addr, member.port, member.tags, member.status = (
            state.addr,
            state.port,
            dict(state.tags),
            status,
        )
        kind, text = {
            STATUS_ALIVE: ("join", "EventMemberJoin"),
            STATUS_FAILED: ("failed", "EventMemberFailed"),
            STATUS_LEFT: ("left", "EventMemberLeft"),
        }[status]
        self.log.info(self.log_serf, f"serf: {text}: {state.name} {state.addr}")
        snapshot = Member(member.name, member.addr, member.port, dict(member.tags), status)
        self.pool.submit(self.on_event, kind, snapshot)

    # -- message handlers ------------------------------------------------------------
    def _on_ping(self, payload: dict, remote: str) -> dict:
        self._apply(payload.get("msgs") or [])
        if payload.get("node") != self.name:
            return {"ack": False}
        return {"ack": True, "msgs": self._take_broadcasts()}

    def _on_ping_req(self, payload: dict, remote: str) -> dict:
        target = payload["target"]
        try:
            answer = self.transport.send(
                target["addr"],
                int(target["port"]),
                "packet/ping",
                {"node": target["name"], "from": self.name, "msgs": []},
                self.cfg.probe_timeout,
            )
        except TransportError:
            return {"ack": False}
        return {"ack": bool(answer and answer.get("ack"))}

    def _on_gossip(self, payload: dict, remote: str) -> dict:
        self._apply(payload.get("msgs") or [])
        return {}

    def _local_state(self) -> list[dict]:
        with self.lock:
            return [n.wire() for n in self.nodes.values()]

    def _merge_state(self, remote: list[dict]) -> None:
        """state.go mergeState: a remote 'dead' is only a suspicion here."""
        with self.lock:
            for r in remote:
                if r["state"] == ALIVE:
                    self._alive(
                        {
                            "type": "alive",
                            "node": r["name"],
                            "addr": r["addr"],
                            "port": r["port"],
                            "tags": r["tags"],
                            "inc": r["inc"],
                        }
                    )
                elif r["state"] == LEFT:
                    self._dead({"node": r["name"], "inc": r["inc"], "from": r["name"]})
                else:
                    self._suspect({"node": r["name"], "inc": r["inc"], "from": self.name})

    def _on_push_pull(self, payload: dict, remote: str) -> dict:
        local = self._local_state()
        self._merge_state(payload.get("nodes") or [])
        return {"nodes": local}

    # -- probing (state.go probe / probeNode) ------------------------------------------
    def _next_probe_target(self) -> NodeState | None:
        with self.lock:
            for _ in range(2):
                while self.probe_index < len(self.probe_order):
                    name = self.probe_order[self.probe_index]
                    self.probe_index += 1
                    node = self.nodes.get(name)
                    if node and name != self.name and node.state in (ALIVE, SUSPECT):
                        return node
                self._reset_nodes()
            return None

    def _reset_nodes(self) -> None:
        """state.go resetNodes: forget members dead longer than GossipToTheDead, reshuffle."""
        now = time.monotonic()
        for name, node in list(self.nodes.items()):
            if node.state in (DEAD, LEFT) and now - node.state_change > self.cfg.gossip_to_the_dead:
                del self.nodes[name]
        self.probe_order = [n for n in self.nodes if n != self.name]
        random.shuffle(self.probe_order)
        self.probe_index = 0

    def _ping(self, node: NodeState, timeout: float, msgs: list[dict]) -> bool:
        try:
            answer = self.transport.send(
                node.addr,
                node.port,
                "packet/ping",
                {"node": node.name, "from": self.name, "msgs": msgs},
                timeout,
            )
        except TransportError:
            return False
        if answer and answer.get("ack"):
            self._apply(answer.get("msgs") or [])
            return True
        return False

    def _probe(self) -> None:
        if self.leaving:
            return
        node = self._next_probe_target()
        if node is None:
            return
        cfg = self.cfg
        incarnation = node.incarnation  # probeNode works on a copy of the node state
        deadline = time.monotonic() + cfg.probe_interval
        msgs = self._take_broadcasts()
        if node.state == SUSPECT:  # so it can refute (probeNode's compound message)
            msgs.append(
                {"type": "suspect", "node": node.name, "inc": incarnation, "from": self.name}
            )
        if self._ping(node, cfg.probe_timeout, msgs):
            return
        with self.lock:
            helpers = [
                n
                for n in self.nodes.values()
                if n.name not in (self.name, node.name) and n.state == ALIVE
            ]
        helpers = random.sample(helpers, min(cfg.indirect_checks, len(helpers)))
        remaining = max(0.05, deadline - time.monotonic())
        acked = threading.Event()

        def indirect(helper: NodeState) -> None:
            if self._indirect_ping(helper, node, remaining):
                acked.set()

        for helper in helpers:
            self.pool.submit(indirect, helper)
        fallback = self.pool.submit(self._ping, node, remaining, [])
        # Wait for an ack until the end of the probe interval (the ack channel's timeout).
        if acked.wait(max(0.0, deadline - time.monotonic())):
            return
        if fallback.done() and not fallback.exception() and fallback.result():
            self.log.warn(
                self.log_ml,
                f"memberlist: Was able to connect to {node.name} but other probes failed, "
                "network may be misconfigured",
            )
            return
        self.log.info(self.log_ml, f"memberlist: Suspect {node.name} has failed, no acks received")
        with self.lock:
            self._suspect({"node": node.name, "inc": incarnation, "from": self.name})

    def _indirect_ping(self, helper: NodeState, target: NodeState, timeout: float) -> bool:
        try:
            answer = self.transport.send(
                helper.addr,
                helper.port,
                "packet/ping-req",
                {
                    "from": self.name,
                    "target": {"name": target.name, "addr": target.addr, "port": target.port},
                },
                timeout,
            )
        except TransportError:
            return False
        return bool(answer and answer.get("ack"))

    # -- gossip and push/pull --------------------------------------------------------
    def _gossip_targets(self, count: int) -> list[NodeState]:
        now = time.monotonic()
        with self.lock:
            eligible = [
                n
                for n in self.nodes.values()
                if n.name != self.name
                and (
                    n.state in (ALIVE, SUSPECT)
                    or now - n.state_change < self.cfg.gossip_to_the_dead
                )
            ]
        return random.sample(eligible, min(count, len(eligible)))

    def _gossip(self) -> None:
        targets = self._gossip_targets(self.cfg.gossip_nodes)
        if not targets:
            return
        with self.lock:
            if not self.broadcasts:
                return
        for node in targets:
            msgs = self._take_broadcasts()
            if not msgs:
                return
            self.pool.submit(
                self._send_quietly, node, "packet/gossip", {"from": self.name, "msgs": msgs}
            )

    def _send_quietly(self, node: NodeState, name: str, payload: dict) -> None:
        with contextlib.suppress(TransportError):
            self.transport.send(node.addr, node.port, name, payload, self.cfg.probe_timeout)

    def _push_pull(self) -> None:
        with self.lock:
            alive = [n for n in self.nodes.values() if n.name != self.name and n.state == ALIVE]
        if not alive:
            return
        node = random.choice(alive)
        try:
            answer = self.transport.send(
                node.addr,
                node.port,
                "stream/push-pull",
                {"from": self.name, "nodes": self._local_state()},
                self.cfg.tcp_timeout,
            )
        except TransportError as e:
            self.log.error(self.log_ml, f"memberlist: Push/Pull with {node.name} failed: {e}")
            return
        self._merge_state((answer or {}).get("nodes") or [])

    def join(self, targets: list[tuple[str, int]]) -> tuple[int, list[str]]:
        """memberlist Join: a push/pull with each address; (how many answered, errors)."""
        joined, errors = 0, []
        for host, port in targets:
            try:
                answer = self.transport.send(
                    host,
                    port,
                    "stream/push-pull",
                    {"from": self.name, "join": True, "nodes": self._local_state()},
                    self.cfg.tcp_timeout,
                )
            except TransportError as e:
                hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                errors.append(f"Failed to join {hostport}: {e}")
                continue
            nodes = (answer or {}).get("nodes") or []
            self._merge_state(nodes)
            if any(n["name"] != self.name for n in nodes):
                joined += 1
        return joined, errors
