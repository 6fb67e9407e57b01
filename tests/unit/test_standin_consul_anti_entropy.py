"""The Consul stand-in's anti-entropy against a real state store, in-process.

The agent's syncer talks to the server RPCs (rpc_endpoints) directly, with ACLs off.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

from tests.support.consul_standin import (
    acl,
    anti_entropy,
    local_state,
    rpc_endpoints,
    state_store,
    util,
)


class FakeServer:
    """What the RPC handlers need from a server: a store that commits at once."""

    def __init__(self) -> None:
        self.store = state_store.StateStore()
        self.stop_event = threading.Event()
        self.agent = SimpleNamespace(rc=SimpleNamespace(datacenter="dc1"))
        self.raft = SimpleNamespace(apply=self._apply)

    def _apply(self, write):
        with self.store.txn(term=1):
            return write(self.store)

    def resolve(self, token: str) -> acl.Authorizer:
        return acl.ALLOW_ALL

    def query_meta(self) -> dict:
        return {"KnownLeader": True, "LastContact": 0}


class FakeAgent:
    def __init__(self, tmp_path: Path) -> None:
        self.server = FakeServer()
        self.calls: list[str] = []
        self.name, self.node_id = "node1", "5b7c3f2a-0000-4000-8000-000000000001"
        self.rc = SimpleNamespace(datacenter="dc1", advertise_addr="10.0.0.1")
        self.log = util.Logger("ERROR")
        self.stop_event = threading.Event()
        self.leaving = False
        self.tokens = SimpleNamespace(user_token=lambda: "", agent_token=lambda: "")
        self.local = local_state.LocalState(
            self.name, str(tmp_path), 300.0, False, self.log, lambda: None
        )

    def tagged_addresses(self) -> dict:
        return {
            "lan": "10.0.0.1",
            "lan_ipv4": "10.0.0.1",
            "wan": "10.0.0.1",
            "wan_ipv4": "10.0.0.1",
        }

    def node_meta(self) -> dict:
        return {"consul-network-segment": ""}

    def accessor_id(self, token: str) -> str:
        return ""

    def rpc(self, method: str, args: dict) -> dict:
        self.calls.append(method)
        return rpc_endpoints.HANDLERS[method](self.server, dict(args))


def test_a_full_sync_of_unchanged_state_writes_nothing(tmp_path: Path) -> None:
    """local/state.go updateSyncState marks in sync what the catalog already has, and
    SyncChanges sends only what is not: a periodic full sync of an unchanged agent makes no
    Catalog.Register and moves no index (ae.go runs it every ae_interval)."""
    agent = FakeAgent(tmp_path)
    try:
        agent.local.add_service(
            {
                "ID": "web-1",
                "Name": "web",
                "Address": "10.0.0.1",
                "Port": 8080,
                "Tags": ["primary"],
                "Meta": {"lab_managed": "demo"},
                "Check": {"TTL": "30s", "Status": "passing"},
            },
            "",
            False,
            persist=False,
        )
        agent.local.add_check({"Name": "disk", "TTL": "30s"}, "", persist=False)
        syncer = anti_entropy.StateSyncer(agent)
        syncer._update_sync_state()
        syncer._sync_changes()
        # node info; the service with its check riding along (syncService); the node check
        assert agent.calls.count("Catalog.Register") == 3
        store = agent.server.store
        before = (store.raft_index, dict(store.indexes))
        agent.calls.clear()
        syncer._update_sync_state()
        syncer._sync_changes()
        assert agent.calls == ["Catalog.NodeServiceList", "Health.NodeChecks"]
        assert (store.raft_index, store.indexes) == before

        agent.local.update_check("service:web-1", "critical", "down")
        syncer._sync_changes()
        assert agent.calls.count("Catalog.Register") == 1
        assert store.indexes["service.web"] > before[1]["service.web"]
    finally:
        with agent.local.lock:
            for cs in agent.local.checks.values():
                agent.local._stop(cs)


def test_what_the_agent_no_longer_has_is_deregistered(tmp_path: Path) -> None:
    """updateSyncState: a service or check in the catalog but not on the agent is removed
    (the "consul" service and serfHealth excepted)."""
    agent = FakeAgent(tmp_path)
    store = agent.server.store
    agent.server._apply(
        lambda s: s.ensure_node(
            {
                "ID": agent.node_id,
                "Node": "node1",
                "Address": "10.0.0.1",
                "Datacenter": "dc1",
                "TaggedAddresses": agent.tagged_addresses(),
                "Meta": agent.node_meta(),
            }
        )
    )
    agent.server._apply(
        lambda s: s.ensure_service(
            "node1",
            {
                "ID": "stale-1",
                "Service": "stale",
                "Tags": [],
                "Address": "",
                "TaggedAddresses": {},
                "Meta": {},
                "Port": 1,
                "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": False,
            },
        )
    )
    syncer = anti_entropy.StateSyncer(agent)
    syncer._update_sync_state()
    syncer._sync_changes()
    assert "Catalog.Deregister" in agent.calls
    assert store.services.get("node1", {}) == {}
