"""The Consul stand-in's state store: which writes move which index (in-process)."""

from __future__ import annotations

from tests.support.consul_standin import state_store

SERF = state_store.SERF_CHECK_ID


def node(name: str, address: str = "10.0.0.1", **extra) -> dict:
    return {
        "ID": f"id-{name}",
        "Node": name,
        "Address": address,
        "Datacenter": "dc1",
        "TaggedAddresses": {},
        "Meta": {},
        **extra,
    }


def service(sid: str, name: str, port: int = 80) -> dict:
    return {
        "ID": sid,
        "Service": name,
        "Tags": [],
        "Address": "",
        "TaggedAddresses": {},
        "Meta": {},
        "Port": port,
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False,
    }


def check(cid: str, sid: str, status: str = "passing", output: str = "ok") -> dict:
    return {
        "CheckID": cid,
        "Name": cid,
        "Status": status,
        "Notes": "",
        "Output": output,
        "ServiceID": sid,
        "Type": "http",
        "Interval": "10s",
        "Timeout": "5s",
        "ExposedPort": 0,
        "Definition": {},
    }


def write(store: state_store.StateStore, fn) -> None:
    with store.txn(term=1):
        fn(store)


def two_services() -> state_store.StateStore:
    store = state_store.StateStore()
    for n, addr in (("n1", "10.0.0.1"), ("n2", "10.0.0.2")):
        write(store, lambda s, n=n, addr=addr: s.ensure_node(node(n, addr)))
        write(store, lambda s, n=n: s.ensure_check(n, check(SERF, "")))
    write(store, lambda s: s.ensure_service("n1", service("web-1", "web")))
    write(store, lambda s: s.ensure_check("n1", check("service:web-1", "web-1")))
    write(store, lambda s: s.ensure_service("n2", service("db-1", "db")))
    write(store, lambda s: s.ensure_check("n2", check("service:db-1", "db-1")))
    return store


def test_rewriting_identical_data_moves_no_index() -> None:
    """catalog.go ensureNodeTxn/ensureServiceTxn/ensureCheckTxn return early when the row
    IsSame: a re-sync of unchanged data is no write, so blocking queries keep blocking."""
    store = two_services()
    before = (store.raft_index, dict(store.indexes))
    write(store, lambda s: s.ensure_node(node("n1", "10.0.0.1")))
    write(store, lambda s: s.ensure_service("n1", service("web-1", "web")))
    write(store, lambda s: s.ensure_check("n1", check("service:web-1", "web-1")))
    assert (store.raft_index, store.indexes) == before
    assert store.health_service("web", [], False)[0] == before[1]["service.web"]


def test_health_service_index_moves_only_for_that_service() -> None:
    """/v1/health/service/<name> answers with the "service.<name>" index entry
    (catalog.go maxIndexAndWatchChForService); a check of another service leaves it."""
    store = two_services()
    web_index, _ = store.health_service("web", [], False)
    write(store, lambda s: s.ensure_check("n2", check("service:db-1", "db-1", "critical", "down")))
    assert store.health_service("web", [], False)[0] == web_index
    assert store.health_service("db", [], False)[0] > web_index
    write(store, lambda s: s.ensure_check("n1", check("service:web-1", "web-1", output="new")))
    assert store.health_service("web", [], False)[0] > web_index


def test_node_check_and_node_change_move_the_services_of_that_node() -> None:
    """A node-level check (serfHealth) or a node update is part of every health result of
    the node's services: updateAllServiceIndexesOfNode (catalog.go ensureCheckTxn/ensureNodeTxn)."""
    store = two_services()
    web, db = store.indexes["service.web"], store.indexes["service.db"]
    write(store, lambda s: s.ensure_check("n1", check(SERF, "", "critical", "Agent not live")))
    assert store.indexes["service.web"] > web
    assert store.indexes["service.db"] == db
    write(store, lambda s: s.ensure_node(node("n2", "10.0.0.2", Meta={"rack": "b"})))
    assert store.indexes["service.db"] > db
    assert store.indexes["nodes"] == store.indexes["service.db"]


def test_each_read_answers_with_its_own_tables_index() -> None:
    """catalog.go: Services -> "services"; Nodes -> "nodes"; NodeServices -> nodes+services;
    ServiceChecks/ChecksInState/NodeChecks -> "checks"."""
    store = two_services()
    services_index = store.catalog_services()[0]
    nodes_index = store.catalog_nodes()[0]
    write(store, lambda s: s.ensure_check("n2", check("service:db-1", "db-1", "warning", "slow")))
    assert store.catalog_services()[0] == services_index
    assert store.catalog_nodes()[0] == nodes_index
    assert store.health_state("any")[0] == store.raft_index
    assert store.health_checks_for_service("db")[0] == store.raft_index


def test_last_instance_leaving_sets_the_extinction_index() -> None:
    """When a service's last instance goes, its index entry is removed and
    "service_last_extinction" is set, which a query for the gone service then answers with."""
    store = two_services()
    old = store.health_service("web", [], False)[0]
    write(store, lambda s: s.delete_service("n1", "web-1"))
    assert "service.web" not in store.indexes
    index, entries = store.health_service("web", [], False)
    assert entries == []
    assert index == store.indexes["service_last_extinction"] > old


def test_snapshot_and_restore_keep_rows_and_indexes() -> None:
    store = two_services()
    copy = state_store.StateStore()
    copy.restore(store.snapshot())
    assert copy.health_service("web", [], True) == store.health_service("web", [], True)
    assert (copy.raft_index, copy.indexes) == (store.raft_index, store.indexes)
