"""A Consul server's own duties: bootstrap, leadership, catalog reconcile, RPC forwarding.

Follows agent/consul (1.11): server.go maybeBootstrap (bootstrap_expect),
leader.go establishLeadership / reconcileMember (the catalog follows Serf:
alive -> serfHealth passing and, for servers, the `consul` service; failed ->
serfHealth critical; left -> deregistered), rpc.go forward (an RPC that
needs the leader is forwarded to it, and held up to rpc_hold_timeout (7 s)
while there is none, then "No cluster leader").
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import rpc_endpoints
from .acl_store import ACLServer
from .leadership import NONVOTER, VOTER, Raft, RaftTimings
from .membership import STATUS_ALIVE, STATUS_FAILED, STATUS_LEFT, Member
from .state_store import (
    CONSUL_SERVICE_ID,
    SERF_ALIVE_OUTPUT,
    SERF_CHECK_ID,
    SERF_CHECK_NAME,
    SERF_FAILED_OUTPUT,
    StateStore,
)
from .transport import TransportError
from .util import CRITICAL, NO_LEADER, PASSING, VERSION, RPCError, random_stagger

if TYPE_CHECKING:
    from .agent import Agent

RECONCILE_INTERVAL = 60.0  # consul.DefaultConfig ReconcileInterval
SERVER_STABILIZATION = 10.0  # autopilot server_stabilization_time
# RPCs a follower may answer itself with ?stale; everything else goes to the leader.
STALE_OK = frozenset(
    {
        "Catalog.ListServices",
        "Catalog.ServiceNodes",
        "Catalog.ListNodes",
        "Catalog.NodeServices",
        "Health.ServiceNodes",
        "Health.ServiceChecks",
        "Health.ChecksInState",
        "Health.NodeChecks",
        "Operator.RaftGetConfiguration",
        "ACL.PolicyRead",
        "ACL.PolicyList",
        "ACL.TokenRead",
        "ACL.TokenList",
    }
)
LOCAL_ONLY = frozenset({"Status.Leader", "Status.Peers", "ACL.Authorize"})


class ConsulServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        rc = agent.rc
        self.log = agent.log
        self.store = StateStore()
        state_path = (
            os.path.join(rc.data_dir, "raft", "standin-raft.json") if agent.persistent else ""
        )
        self.raft = Raft(
            agent.node_id,
            agent.name,
            f"{rc.advertise_addr}:{rc.server_port}",
            (rc.advertise_addr, rc.serf_lan_port),
            self.store,
            agent.transport,
            RaftTimings.consul(rc.raft_multiplier, rc.dev),
            state_path,
            self.log,
            self._leadership_changed,
        )
        self.acl = ACLServer(self)
        self.bootstrap_expect = 0 if self.raft.has_state() else rc.bootstrap_expect
        if self.raft.has_state() and rc.bootstrap_expect:
            self.log.info("agent.server", "Raft data found, disabling bootstrap mode")
        self.ready = False  # leadership established
        self.events: queue.Queue = queue.Queue()
        self.stop_event = agent.stop_event
        agent.transport.route("stream/rpc", self._on_remote_rpc)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        rc = self.agent.rc
        if (rc.bootstrap or rc.dev) and not self.raft.has_state():
            self.raft.bootstrap([self._raft_server(self.agent.local_member(), VOTER)])
        self.raft.start()
        threading.Thread(target=self._leader_loop, name="leader", daemon=True).start()

    def shutdown(self) -> None:
        self.raft.shutdown()

    def _raft_server(self, m: Member, suffrage: str) -> dict:
        return {
            "ID": m.tags.get("id", ""),
            "Node": m.name,
            "Address": f"{m.addr}:{m.tags.get('port', '8300')}",
            "Suffrage": suffrage,
            "serf": [m.addr, m.port],
        }

    # -- bootstrap_expect (server.go maybeBootstrap) -------------------------------------
    def maybe_bootstrap(self) -> None:
        if not self.bootstrap_expect:
            return
        if self.raft.has_state():
            self.bootstrap_expect = 0
            return
        servers = []
        for m in self.agent.memberlist.member_list():
            if m.tags.get("role") != "consul":
                continue
            if m.tags.get("dc") != self.agent.rc.datacenter:
                self.log.warn(
                    "agent.server", "Member has a conflicting datacenter, ignoring", member=m.name
                )
                continue
            expect = int(m.tags.get("expect", "0") or 0)
            if expect and expect != self.bootstrap_expect:
                self.log.error(
                    "agent.server",
                    "Member has a conflicting expect value. All nodes should expect the same "
                    "number.",
                    member=m.name,
                )
                return
            if m.tags.get("bootstrap") == "1":
                self.log.error(
                    "agent.server", "Member has bootstrap mode. Expect disabled.", member=m.name
                )
                return
            servers.append(m)
        if len(servers) < self.bootstrap_expect:
            return
        for m in servers:
            if m.name == self.agent.name:
                continue
            try:
                peers = self.agent.transport.send(
                    m.addr, m.port, "stream/rpc", {"method": "Status.Peers", "args": {}}, 5.0
                )
            except TransportError:
                return  # retried on the next member event
            if peers.get("Result"):
                self.log.info(
                    "agent.server",
                    "Existing Raft peers reported by server, disabling bootstrap mode",
                    server=m.name,
                )
                self.bootstrap_expect = 0
                return
        self.log.info(
            "agent.server",
            "Found expected number of peers, attempting bootstrap",
            peers=",".join(f"{m.addr}:{m.tags.get('port', '8300')}" for m in servers),
        )
        self.raft.bootstrap([self._raft_server(m, VOTER) for m in servers])
        self.bootstrap_expect = 0

    # -- leadership (leader.go) ------------------------------------------------------------
    def _leadership_changed(self, leader: bool) -> None:
        self.events.put(("leadership", leader))

    def member_event(self, kind: str, member: Member) -> None:
        if member.tags.get("role") == "consul" and kind == "join":
            self.maybe_bootstrap()
        self.events.put(("member", member))

    def _leader_loop(self) -> None:
        next_reconcile = float("inf")
        while not self.stop_event.is_set():
            timeout = max(0.0, min(next_reconcile - time.monotonic(), 1.0))
            try:
                kind, value = self.events.get(timeout=timeout)
            except queue.Empty:
                kind, value = "tick", None
            try:
                if kind == "leadership" and value:
                    self._establish_leadership()
                    next_reconcile = time.monotonic() + RECONCILE_INTERVAL
                elif kind == "leadership":
                    if self.ready:
                        self.ready = False
                        self.log.info("agent.server", "cluster leadership lost")
                    next_reconcile = float("inf")
                elif kind == "member" and self.ready and self.raft.is_leader():
                    self._reconcile_member(value)
                elif self.ready and time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + RECONCILE_INTERVAL
                    self._reconcile()
                if self.ready and self.raft.is_leader():
                    self._promote_stable_servers()
            except Exception as e:  # the leader loop must keep running
                self.log.error("agent.leader", "failed to reconcile", error=repr(e))

    def _establish_leadership(self) -> None:
        """leader.go leaderLoop: a Raft barrier, then establishLeadership (initializeACLs
        first), then the reconcile. /v1/status/leader names this server from the
        election on, before any of it (see acl_store.ACLServer.initialize)."""
        if not self.raft.is_leader():
            return
        try:
            self.raft.barrier()
        except RPCError:
            return  # leadership lost: the next leader does it
        self.acl.initialize()
        self._reconcile()
        self.ready = True
        self.log.info("agent.server", "cluster leadership acquired")
        self.log.info("agent.server", f"New leader elected: payload={self.agent.name}")

    def _reconcile(self) -> None:
        members = {m.name: m for m in self.agent.memberlist.member_list()}
        for m in members.values():
            self._reconcile_member(m)
        # leader.go reconcileReaped: catalog nodes Serf no longer knows.
        with self.store.lock:
            stale = [
                name
                for name, checks in self.store.checks.items()
                if SERF_CHECK_ID in checks and name not in members
            ]
        for name in stale:
            self.log.info(
                "agent.leader",
                "deregistering member",
                member=name,
                partition="default",
                reason="reaped",
            )
            self.raft.apply(lambda s, n=name: s.delete_node(n))

    def _reconcile_member(self, m: Member) -> None:
        if m.tags.get("dc") not in (None, self.agent.rc.datacenter):
            return
        if m.status == STATUS_ALIVE:
            self._handle_alive(m)
        elif m.status == STATUS_FAILED:
            self._handle_failed(m)
        elif m.status == STATUS_LEFT:
            if m.tags.get("role") == "consul" and m.name != self.agent.name:
                self.raft.change_configuration(
                    lambda servers: [s for s in servers if s["Node"] != m.name]
                )
            with self.store.lock:
                present = m.name in self.store.nodes
            if present:
                self.log.info(
                    "agent.leader",
                    "deregistering member",
                    member=m.name,
                    partition="default",
                    reason="left",
                )
                self.raft.apply(lambda s: s.delete_node(m.name))

    def _consul_service(self, m: Member) -> dict:
        return {
            "ID": CONSUL_SERVICE_ID,
            "Service": "consul",
            "Tags": [],
            "Address": "",
            "TaggedAddresses": {},
            "Meta": {
                "non_voter": "false",
                "raft_version": "3",
                "read_replica": "false",
                "serf_protocol_current": "2",
                "serf_protocol_max": "5",
                "serf_protocol_min": "1",
                "version": m.tags.get("build", VERSION).split(":")[0],
            },
            "Port": int(m.tags.get("port", "8300")),
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False,
        }

    @staticmethod
    def _serf_check(name: str, alive: bool) -> dict:
        return {
            "Node": name,
            "CheckID": SERF_CHECK_ID,
            "Name": SERF_CHECK_NAME,
            "Status": PASSING if alive else CRITICAL,
            "Notes": "",
            "Output": SERF_ALIVE_OUTPUT if alive else SERF_FAILED_OUTPUT,
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "Interval": "",
            "Timeout": "",
            "ExposedPort": 0,
            "Definition": {},
        }

    def _handle_alive(self, m: Member) -> None:
        if m.tags.get("role") == "consul" and m.name != self.agent.name:
            self._join_server(m)
        service = self._consul_service(m) if m.tags.get("role") == "consul" else None
        with self.store.lock:
            node = self.store.nodes.get(m.name)
            check = self.store.checks.get(m.name, {}).get(SERF_CHECK_ID)
            current = self.store.services.get(m.name, {}).get(CONSUL_SERVICE_ID)
            in_sync = (
                node is not None
                and node["Address"] == m.addr
                and check is not None
                and check["Status"] == PASSING
                and (
                    service is None
                    or (current is not None and {k: current.get(k) for k in service} == service)
                )
            )
            if in_sync:
                return
            entry = {
                "ID": m.tags.get("id", ""),
                "Node": m.name,
                "Address": m.addr,
                "Datacenter": self.agent.rc.datacenter,
                # "If there's existing information about the node, do not clobber it."
                "TaggedAddresses": (node or {}).get("TaggedAddresses") or {},
                "Meta": (node or {}).get("Meta") or {},
            }
        self.log.info(
            "agent.leader",
            "member joined, marking health alive",
            member=m.name,
            partition="default",
        )

        def write(s: StateStore) -> None:
            s.ensure_node(entry)
            if service is not None:
                s.ensure_service(m.name, service)
            s.ensure_check(m.name, self._serf_check(m.name, True))

        self.raft.apply(write)

    def _handle_failed(self, m: Member) -> None:
        with self.store.lock:
            node = self.store.nodes.get(m.name)
            if node is None:
                self.log.info(
                    "agent.leader",
                    "ignoring failed event for member because it does not exist in the catalog",
                    member=m.name,
                )
                return
            check = self.store.checks.get(m.name, {}).get(SERF_CHECK_ID)
            if node["Address"] == m.addr and check and check["Status"] == CRITICAL:
                return
        self.log.info(
            "agent.leader",
            "member failed, marking health critical",
            member=m.name,
            partition="default",
        )
        self.raft.apply(lambda s: s.ensure_check(m.name, self._serf_check(m.name, False)))

    def _join_server(self, m: Member) -> None:
        """leader.go joinConsulServer: a new server joins as a non-voter (autopilot promotes)."""
        addr = f"{m.addr}:{m.tags.get('port', '8300')}"
        if any(s["Address"] == addr or s["Node"] == m.name for s in self.raft.configuration):
            return
        self.log.info("agent.server", "adding server as non-voter", server=m.name)
        entry = dict(self._raft_server(m, NONVOTER), added=time.time())
        self.raft.change_configuration(lambda servers: [*servers, entry])

    def _promote_stable_servers(self) -> None:
        """autopilot: promote non-voters alive for server_stabilization_time."""
        alive = {m.name for m in self.agent.memberlist.member_list() if m.status == STATUS_ALIVE}
        now = time.time()
        due = [
            s["Node"]
            for s in self.raft.configuration
            if s["Suffrage"] == NONVOTER
            and s["Node"] in alive
            and now - s.get("added", now) >= SERVER_STABILIZATION
        ]
        for name in due:
            self.log.info("agent.server.autopilot", "Promoting server", name=name)
            self.raft.change_configuration(
                lambda servers, n=name: [
                    dict(s, Suffrage=VOTER) if s["Node"] == n else s for s in servers
                ]
            )

    # -- RPC ---------------------------------------------------------------------------
    def query_meta(self) -> dict:
        leader_addr, _ = self.raft.leader()
        if self.raft.is_leader():
            return {"KnownLeader": True, "LastContact": 0}
        last = self.raft.last_contact
        contact = int((time.monotonic() - last) * 1000) if last else 0
        return {"KnownLeader": bool(leader_addr), "LastContact": contact}

    def handle_rpc(self, method: str, args: dict) -> dict:
        """Run an RPC here, or on the leader (rpc.go forward)."""
        handler: Callable[[ConsulServer, dict], dict] | None = rpc_endpoints.HANDLERS.get(method)
        if handler is None:
            handler = self.acl.handlers.get(method)
        if handler is None:
            raise RPCError(f"rpc: can't find method {method}")
        if method in LOCAL_ONLY or (method in STALE_OK and args.get("AllowStale")):
            return handler(self, args)
        hold = self.agent.rc.rpc_hold_timeout
        first = time.monotonic()
        while True:
            if self.raft.is_leader():
                return handler(self, args)
            _, serf = self.raft.leader()
            if serf is not None:
                return self._forward(serf, method, args)
            if time.monotonic() - first >= hold or self.stop_event.is_set():
                raise RPCError(NO_LEADER)
            time.sleep(random_stagger(hold / 16))

    def _forward(self, serf: tuple[str, int], method: str, args: dict) -> dict:
        leader_addr, _ = self.raft.leader()
        try:
            answer = self.agent.transport.send(
                serf[0],
                serf[1],
                "stream/rpc",
                {"method": method, "args": args},
                rpc_endpoints.rpc_timeout(args),
            )
        except TransportError as e:
            raise RPCError(e.rpc_text(leader_addr)) from None
        if "Error" in answer:
            raise RPCError(f"rpc error making call: {answer['Error']}")
        return answer

    def _on_remote_rpc(self, payload: dict, remote: str) -> dict:
        try:
            return self.handle_rpc(payload["method"], payload.get("args") or {})
        except RPCError as e:
            return {"Error": str(e)}

    def resolve(self, token: str) -> Any:
        return self.acl.resolve(token)
