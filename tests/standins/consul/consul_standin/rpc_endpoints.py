"""The server RPCs behind the catalog, health, status and operator HTTP endpoints.

Writes follow catalog_endpoint.go Register / Deregister with their ACL vetting
(vetRegisterWithACL, vetDeregisterWithACL); reads are blocking queries
(rpc.go blockingQuery: answer once the index passes MinQueryIndex, else wait
up to MaxQueryTime plus up to 1/16 of jitter) filtered by the token's read
rules (acl_filter.go), flagging when something was left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .acl import Authorizer
from .state_store import SERF_CHECK_ID
from .util import PERMISSION_DENIED, RPCError, random_stagger

if TYPE_CHECKING:
    from .server import ConsulServer

DEFAULT_QUERY_TIME = 300.0  # default_query_time
MAX_QUERY_TIME = 600.0  # max_query_time


def rpc_timeout(args: dict) -> float:
    """How long to wait for an RPC's answer (blocking queries wait up to their time)."""
    if int(args.get("MinQueryIndex") or 0) > 0:
        wait = min(float(args.get("MaxQueryTime") or DEFAULT_QUERY_TIME), MAX_QUERY_TIME)
        return 15.0 + wait * (1 + 1 / 16)
    return 15.0


def _authz(server: ConsulServer, args: dict) -> Authorizer:
    return server.resolve(args.get("Token") or "")


def blocking_query(
    server: ConsulServer, args: dict, run: Callable[[], tuple[int, Any, bool]]
) -> dict:
    store = server.store
    min_index = int(args.get("MinQueryIndex") or 0)
    deadline = 0.0
    if min_index > 0:
        wait = min(float(args.get("MaxQueryTime") or DEFAULT_QUERY_TIME), MAX_QUERY_TIME)
        deadline = time.monotonic() + wait + random_stagger(wait / 16)
    with store.lock:
        while True:
            index, result, filtered = run()
            index = max(index, 1)
            remaining = deadline - time.monotonic()
            if index > min_index or remaining <= 0 or server.stop_event.is_set():
                break
            store.changed.wait(remaining)
    return {"Index": index, "Result": result, "Filtered": filtered, **server.query_meta()}


def _keep(items: list, allow: Callable[[Any], bool]) -> tuple[list, bool]:
    kept = [i for i in items if allow(i)]
    return kept, len(kept) != len(items)


def _check_allowed(authz: Authorizer, check: dict) -> bool:
    """acl_filter.go filterHealthChecks: node read, and service read for service checks."""
    service = check.get("ServiceName") or ""
    return authz.node_read(check["Node"]) and (not service or authz.service_read(service))


# -- reads -------------------------------------------------------------------------------
def list_services(server: ConsulServer, args: dict) -> dict:
    authz = _authz(server, args)

    def run() -> tuple[int, Any, bool]:
        index, services = server.store.catalog_services()
        kept = {k: v for k, v in services.items() if authz.service_read(k)}
        return index, kept, len(kept) != len(services)

    return blocking_query(server, args, run)


def service_nodes(server: ConsulServer, args: dict) -> dict:
    authz = _authz(server, args)

    def run() -> tuple[int, Any, bool]:
        index, rows = server.store.catalog_service(
            args["ServiceName"], args.get("ServiceTags") or []
        )
        kept, filtered = _keep(
            rows, lambda r: authz.node_read(r["Node"]) and authz.service_read(r["ServiceName"])
        )
        return index, kept, filtered

    return blocking_query(server, args, run)


def list_nodes(server: ConsulServer, args: dict) -> dict:
    authz = _authz(server, args)

    def run() -> tuple[int, Any, bool]:
        index, nodes = server.store.catalog_nodes()
        return (index, *_keep(nodes, lambda n: authz.node_read(n["Node"])))

    return blocking_query(server, args, run)


def node_services(server: ConsulServer, args: dict) -> dict:
    authz = _authz(server, args)

    def run() -> tuple[int, Any, bool]:
        index, entry = server.store.catalog_node(args["Node"])
        if entry is None:
            return index, None, False
        if not authz.node_read(args["Node"]):
            return index, None, True
        services = entry["Services"]
        kept = {k: v for k, v in services.items() if authz.service_read(v["Service"])}
        return index, dict(entry, Services=kept), len(kept) != len(services)

    return blocking_query(server, args, run)


def node_service_list(server: ConsulServer, args: dict) -> dict:
    """Catalog.NodeServiceList (anti-entropy's view of its node): the stored rows."""
    authz = _authz(server, args)
    name = args["Node"]

    def run() -> tuple[int, Any, bool]:
        store = server.store
        index = store.max_index("nodes", "services")
        if name not in store.nodes:
            return index, None, False
        if not authz.node_read(name):
            return index, None, True
        rows = [strip_indexes(s) for s in store.services.get(name, {}).values()]
        kept, filtered = _keep(rows, lambda s: authz.service_read(s["Service"]))
        return index, {"Node": strip_indexes(store.nodes[name]), "Services": kept}, filtered

    return blocking_query(server, args, run)


def strip_indexes(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("CreateIndex", "ModifyIndex")}


def health_service_nodes(server: ConsulServer, args: dict) -> dict:
    authz = _authz(server, args)

    def run() -> tuple[int, Any, bool]:
        index, entries = server.store.health_service(
            args["ServiceName"], args.get("ServiceTags") or [], bool(args.get("Passing"))
        )
        kept, filtered = _keep(
            entries,
            lambda e: (
                authz.node_read(e["Node"]["Node"]) and authz.service_read(e["Service"]["Service"])
            ),
        )
        return index, kept, filtered

    return blocking_query(server, args, run)


def _checks_query(query: Callable[[Any, dict], tuple[int, list]]) -> Callable:
    def handler(server: ConsulServer, args: dict) -> dict:
        authz = _authz(server, args)

        def run() -> tuple[int, Any, bool]:
            index, checks = query(server, args)
            return (index, *_keep(checks, lambda c: _check_allowed(authz, c)))

        return blocking_query(server, args, run)

    return handler


service_checks = _checks_query(lambda s, a: s.store.health_checks_for_service(a["ServiceName"]))
checks_in_state = _checks_query(lambda s, a: s.store.health_state(a["State"]))
node_checks = _checks_query(lambda s, a: s.store.health_node(a["Node"]))


def raft_configuration(server: ConsulServer, args: dict) -> dict:
    if not _authz(server, args).operator_read():
        raise RPCError(PERMISSION_DENIED)
    leader_addr, _ = server.raft.leader()
    names = {m.tags.get("id"): m.name for m in server.agent.memberlist.member_list()}
    servers = [
        {
            "ID": s["ID"],
            "Node": names.get(s["ID"], s.get("Node") or "(unknown)"),
            "Address": s["Address"],
            "Leader": s["Address"] == leader_addr,
            "ProtocolVersion": "3",
            "Voter": s["Suffrage"] == "Voter",
        }
        for s in server.raft.configuration
    ]
    return {
        "Result": {"Servers": servers, "Index": server.raft.config_index},
        **server.query_meta(),
    }


def status_leader(server: ConsulServer, args: dict) -> dict:
    leader_addr, _ = server.raft.leader()
    return {"Result": leader_addr}


def status_peers(server: ConsulServer, args: dict) -> dict:
    return {"Result": [s["Address"] for s in server.raft.configuration]}


# -- writes ------------------------------------------------------------------------------
def _vet_register(authz: Authorizer, args: dict, node: dict, ns: dict | None, store: Any) -> None:
    """catalog_endpoint.go vetRegisterWithACL."""
    name = node["Node"]
    needs_node = ns is None or (not args.get("SkipNodeUpdate") and store.changes_node(node))
    if needs_node and not authz.node_write(name):
        raise RPCError(PERMISSION_DENIED)
    svc = args.get("Service")
    existing = ns or {}
    if svc is not None:
        if not authz.service_write(svc["Service"]):
            raise RPCError(PERMISSION_DENIED)
        other = existing.get(svc["ID"])
        if other is not None and not authz.service_write(other["Service"]):
            raise RPCError(PERMISSION_DENIED)
    for chk in args.get("Checks") or []:
        sid = chk.get("ServiceID") or ""
        if not sid:
            if not authz.node_write(name):
                raise RPCError(PERMISSION_DENIED)
            continue
        if svc is not None and svc["ID"] == sid:
            continue
        other = existing.get(sid)
        if other is None:
            raise RPCError(f"Unknown service ID '{sid}' for check ID '{chk['CheckID']}'")
        if not authz.service_write(other["Service"]):
            raise RPCError(PERMISSION_DENIED)


def catalog_register(server: ConsulServer, args: dict) -> dict:
    authz = _authz(server, args)
    node = {
        "ID": args.get("ID", ""),
        "Node": args["Node"],
        "Address": args["Address"],
        "Datacenter": args.get("Datacenter") or server.agent.rc.datacenter,
        "TaggedAddresses": args.get("TaggedAddresses") or {},
        "Meta": args.get("NodeMeta") or {},
    }
    svc = args.get("Service")
    if svc is not None and not svc.get("ID"):
        svc["ID"] = svc["Service"]
    checks = []
    for chk in args.get("Checks") or []:
        chk = dict(chk, Node=chk.get("Node") or node["Node"])
        chk["CheckID"] = chk.get("CheckID") or chk.get("Name", "")
        checks.append(chk)
    args["Checks"] = checks
    store = server.store
    with store.lock:
        ns = store.services.get(node["Node"], {}) if node["Node"] in store.nodes else None
        _vet_register(authz, args, node, ns, store)

    def write(s: Any) -> None:
        if node["Node"] not in s.nodes or (not args.get("SkipNodeUpdate") and s.changes_node(node)):
            s.ensure_node(node)
        if svc is not None:
            s.ensure_service(node["Node"], svc)
        for chk in checks:
            if chk["CheckID"] != SERF_CHECK_ID:
                s.ensure_check(node["Node"], chk)

    server.raft.apply(write)
    return {}


def catalog_deregister(server: ConsulServer, args: dict) -> dict:
    authz = _authz(server, args)
    name, sid, cid = args["Node"], args.get("ServiceID") or "", args.get("CheckID") or ""
    store = server.store
    with store.lock:
        if not authz.node_write(name):  # vetDeregisterWithACL: node write allows all of it
            if sid:
                svc = store.services.get(name, {}).get(sid)
                if svc is None:
                    raise RPCError(f"Unknown service ID '{sid}'")
                if not authz.service_write(svc["Service"]):
                    raise RPCError(PERMISSION_DENIED)
            elif cid:
                chk = store.checks.get(name, {}).get(cid)
                if chk is None:
                    raise RPCError(f"Unknown check ID '{cid}'")
                if not (
                    authz.service_write(chk["ServiceName"])
                    if chk.get("ServiceID")
                    else authz.node_write(name)
                ):
                    raise RPCError(PERMISSION_DENIED)
            else:
                raise RPCError(PERMISSION_DENIED)

    def write(s: Any) -> None:
        if sid:
            s.delete_service(name, sid)
        elif cid:
            s.delete_check(name, cid)
        else:
            s.delete_node(name)

    server.raft.apply(write)
    return {}


HANDLERS: dict[str, Callable[[Any, dict], dict]] = {
    "Catalog.Register": catalog_register,
    "Catalog.Deregister": catalog_deregister,
    "Catalog.ListServices": list_services,
    "Catalog.ServiceNodes": service_nodes,
    "Catalog.ListNodes": list_nodes,
    "Catalog.NodeServices": node_services,
    "Catalog.NodeServiceList": node_service_list,
    "Health.ServiceNodes": health_service_nodes,
    "Health.ServiceChecks": service_checks,
    "Health.ChecksInState": checks_in_state,
    "Health.NodeChecks": node_checks,
    "Operator.RaftGetConfiguration": raft_configuration,
    "Status.Leader": status_leader,
    "Status.Peers": status_peers,
}
