"""The catalog state store: nodes, services and checks, with Consul's index table.

Modelled on agent/consul/state/catalog.go (1.11). Every write runs in a
transaction with the next Raft index; a table's entry in the index table
moves only when a row of that table really changes ("nodes", "services",
"checks", "service.<name>", "service_last_extinction"). Re-writing identical
data changes nothing, so a blocking query on it keeps blocking. Reads
return the index Consul returns for them, e.g. /v1/health/service/<name>
answers with the "service.<name>" entry.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator
from typing import Any

from .util import PASSING, RPCError

SERF_CHECK_ID = "serfHealth"
SERF_CHECK_NAME = "Serf Health Status"
SERF_ALIVE_OUTPUT = "Agent alive and reachable"
SERF_FAILED_OUTPUT = "Agent not live or unreachable"
CONSUL_SERVICE_ID = "consul"

_INDEX_FIELDS = ("CreateIndex", "ModifyIndex")
_NODE_FIELDS = ("ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta")


def _strip(row: dict | None) -> dict | None:
    if row is None:
        return None
    return {k: v for k, v in row.items() if k not in _INDEX_FIELDS}


def service_index_name(name: str) -> str:
    return f"service.{name}"


class StateStore:
    """Catalog tables plus ACL tables (see acl_store.py), snapshot-able for Raft."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.raft_index = 0  # index of the last applied Raft entry
        self.last_term = 0  # term of that entry
        self.indexes: dict[str, int] = {}
        self.nodes: dict[str, dict] = {}
        self.services: dict[str, dict[str, dict]] = {}
        self.checks: dict[str, dict[str, dict]] = {}
        self.acl: dict[str, Any] = {"tokens": {}, "policies": {}, "bootstrap_index": 0}
        self._txn_index = 0
        self._txn_dirty = False

    # -- snapshots (Raft replication and persistence) ------------------------------
    def snapshot(self) -> dict:
        with self.lock:
            return copy.deepcopy(
                {
                    "raft_index": self.raft_index,
                    "last_term": self.last_term,
                    "indexes": self.indexes,
                    "nodes": self.nodes,
                    "services": self.services,
                    "checks": self.checks,
                    "acl": self.acl,
                }
            )

    def restore(self, data: dict) -> None:
        with self.lock:
            self.raft_index = int(data.get("raft_index", 0))
            self.last_term = int(data.get("last_term", 0))
            self.indexes = dict(data.get("indexes", {}))
            self.nodes = dict(data.get("nodes", {}))
            self.services = {n: dict(s) for n, s in data.get("services", {}).items()}
            self.checks = {n: dict(c) for n, c in data.get("checks", {}).items()}
            self.acl = dict(data.get("acl") or {"tokens": {}, "policies": {}})
            self.acl.setdefault("bootstrap_index", 0)
            self.changed.notify_all()

    # -- transactions ------------------------------------------------------------------
    @contextlib.contextmanager
    def txn(self, term: int) -> Iterator[int]:
        """A write transaction at the next Raft index; yields that index.

        The Raft index moves only when something was written, and waiters
        (blocking queries) are woken only then.
        """
        with self.lock:
            self._txn_index = self.raft_index + 1
            self._txn_dirty = False
            try:
                yield self._txn_index
            finally:
                if self._txn_dirty:
                    self.raft_index = self._txn_index
                    self.last_term = term
                    self.changed.notify_all()
                self._txn_dirty = False

    def append_entry(self, term: int) -> int:
        """A Raft entry that touches no table (a leader's no-op, a configuration change)."""
        with self.lock:
            self.raft_index += 1
            self.last_term = term
            self.changed.notify_all()
            return self.raft_index

    def bump(self, *names: str) -> None:
        """Record that tables `names` changed in the current transaction."""
        for name in names:
            self.indexes[name] = self._txn_index
        self._txn_dirty = True

    def max_index(self, *names: str) -> int:
        return max([self.indexes.get(n, 0) for n in names] or [0])

    def _upsert(self, table: dict, key: str, row: dict) -> bool:
        old = table.get(key)
        if old is not None and _strip(old) == _strip(row):
            return False
        row = dict(_strip(row) or {})
        row["CreateIndex"] = old["CreateIndex"] if old else self._txn_index
        row["ModifyIndex"] = self._txn_index
        table[key] = row
        self._txn_dirty = True
        return True

    def _bump_node_services(self, node: str) -> None:
        names = {s["Service"] for s in self.services.get(node, {}).values()}
        self.bump(*(service_index_name(n) for n in names))

    def _has_service(self, name: str) -> bool:
        return any(s["Service"] == name for svcs in self.services.values() for s in svcs.values())

    def _bump_or_extinguish(self, name: str) -> None:
        """After a service row left: bump its index, or drop it if no instance remains."""
        if self._has_service(name):
            self.bump(service_index_name(name))
        else:
            self.indexes.pop(service_index_name(name), None)
            self.bump("service_last_extinction")

    # -- catalog writes (call inside txn) --------------------------------------------
    def ensure_node(self, node: dict) -> None:
        row = {
            k: copy.deepcopy(node.get(k, {} if k in ("TaggedAddresses", "Meta") else ""))
            for k in _NODE_FIELDS
        }
        if self._upsert(self.nodes, row["Node"], row):
            self.bump("nodes")
            # catalog.go ensureNodeTxn: node data is part of health results.
            self._bump_node_services(row["Node"])

    def ensure_service(self, node: str, svc: dict) -> None:
        if node not in self.nodes:
            raise RPCError("Missing node registration")
        table = self.services.setdefault(node, {})
        old = table.get(svc["ID"])
        if self._upsert(table, svc["ID"], svc):
            self.bump("services", service_index_name(svc["Service"]))
            if old is not None and old["Service"] != svc["Service"]:
                self._bump_or_extinguish(old["Service"])

    def ensure_check(self, node: str, chk: dict) -> None:
        if node not in self.nodes:
            raise RPCError("Missing node registration")
        chk = dict(chk, Node=node)
        sid = chk.get("ServiceID") or ""
        svc = None
        if sid:
            svc = self.services.get(node, {}).get(sid)
            if svc is None:
                raise RPCError(f"Missing service registration for check {chk['CheckID']!r}")
            chk["ServiceName"] = svc["Service"]
            chk["ServiceTags"] = list(svc.get("Tags") or [])
        if not self._upsert(self.checks.setdefault(node, {}), chk["CheckID"], chk):
            return
        self.bump("checks")
        if svc is not None:
            self.bump(service_index_name(svc["Service"]))
        else:  # a node check changes the health of every service on the node
            self._bump_node_services(node)

    def delete_check(self, node: str, cid: str) -> None:
        chk = self.checks.get(node, {}).pop(cid, None)
        if chk is None:
            return
        self.bump("checks")
        svc = self.services.get(node, {}).get(chk.get("ServiceID") or "")
        if svc is not None:
            self.bump(service_index_name(svc["Service"]))
        elif not chk.get("ServiceID"):
            self._bump_node_services(node)

    def delete_service(self, node: str, sid: str) -> None:
        svc = self.services.get(node, {}).get(sid)
        if svc is None:
            return
        for cid in [c for c, v in self.checks.get(node, {}).items() if v.get("ServiceID") == sid]:
            self.delete_check(node, cid)
        del self.services[node][sid]
        self.bump("services")
        self._bump_or_extinguish(svc["Service"])

    def delete_node(self, node: str) -> None:
        if node not in self.nodes:
            return
        for sid in list(self.services.get(node, {})):
            self.delete_service(node, sid)
        for cid in list(self.checks.get(node, {})):
            self.delete_check(node, cid)
        self.services.pop(node, None)
        self.checks.pop(node, None)
        del self.nodes[node]
        self.bump("nodes")

    def changes_node(self, node: dict) -> bool:
        """structs.RegisterRequest.ChangesNode: would `node` change the stored node?"""
        old = self.nodes.get(node["Node"])
        if old is None:
            return True
        return any(node.get(k, old.get(k)) != old.get(k) for k in _NODE_FIELDS)

    # -- catalog reads: (index, result), as the state store returns them -------------
    def service_index(self, name: str, exists: bool, checks: bool) -> int:
        """catalog.go maxIndexAndWatchChForService."""
        if not exists and "service_last_extinction" in self.indexes:
            return self.indexes["service_last_extinction"]
        if service_index_name(name) in self.indexes:
            return self.indexes[service_index_name(name)]
        tables = ("nodes", "services", "checks") if checks else ("nodes", "services")
        return self.max_index(*tables)

    def node_out(self, name: str) -> dict:
        n = self.nodes[name]
        return {
            "ID": n.get("ID", ""),
            "Node": name,
            "Address": n.get("Address", ""),
            "Datacenter": n.get("Datacenter", ""),
            "TaggedAddresses": n.get("TaggedAddresses") or {},
            "Meta": n.get("Meta") or {},
            "CreateIndex": n["CreateIndex"],
            "ModifyIndex": n["ModifyIndex"],
        }

    @staticmethod
    def service_out(svc: dict) -> dict:
        out = {
            "ID": svc["ID"],
            "Service": svc["Service"],
            "Tags": list(svc.get("Tags") or []),
            "Address": svc.get("Address", ""),
        }
        if svc.get("TaggedAddresses"):
            out["TaggedAddresses"] = svc["TaggedAddresses"]
        out.update(
            {
                "Meta": svc.get("Meta") or {},
                "Port": svc.get("Port", 0),
                "Weights": svc.get("Weights") or {"Passing": 1, "Warning": 1},
                "EnableTagOverride": bool(svc.get("EnableTagOverride", False)),
                "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                "Connect": {},
                "CreateIndex": svc["CreateIndex"],
                "ModifyIndex": svc["ModifyIndex"],
            }
        )
        return out

    def _service_checks(self, node: str, sid: str) -> list[dict]:
        checks = [
            c for c in self.checks.get(node, {}).values() if c.get("ServiceID", "") in ("", sid)
        ]
        checks.sort(key=lambda c: (c.get("ServiceID", "") != "", c["CheckID"]))
        return [dict(c) for c in checks]

    def _instances(self, name: str, tags: list[str]) -> list[tuple[str, dict]]:
        out = []
        for node in sorted(self.services):
            if node not in self.nodes:
                continue
            for sid in sorted(self.services[node]):
                svc = self.services[node][sid]
                if svc["Service"] == name and all(t in (svc.get("Tags") or []) for t in tags):
                    out.append((node, svc))
        return out

    def health_service(self, name: str, tags: list[str], passing: bool) -> tuple[int, list]:
        exists = self._has_service(name)
        result = []
        for node, svc in self._instances(name, tags):
            checks = self._service_checks(node, svc["ID"])
            if passing and any(c["Status"] != PASSING for c in checks):
                continue
            result.append(
                {"Node": self.node_out(node), "Service": self.service_out(svc), "Checks": checks}
            )
        return self.service_index(name, exists, checks=True), result

    def catalog_service(self, name: str, tags: list[str]) -> tuple[int, list]:
        exists = self._has_service(name)
        result = []
        for node, svc in self._instances(name, tags):
            n = self.nodes[node]
            entry = {
                "ID": n.get("ID", ""),
                "Node": node,
                "Address": n.get("Address", ""),
                "Datacenter": n.get("Datacenter", ""),
                "TaggedAddresses": n.get("TaggedAddresses") or {},
                "NodeMeta": n.get("Meta") or {},
                "ServiceKind": "",
                "ServiceID": svc["ID"],
                "ServiceName": svc["Service"],
                "ServiceTags": list(svc.get("Tags") or []),
                "ServiceAddress": svc.get("Address", ""),
                "ServiceWeights": svc.get("Weights") or {"Passing": 1, "Warning": 1},
                "ServiceMeta": svc.get("Meta") or {},
                "ServicePort": svc.get("Port", 0),
                "ServiceEnableTagOverride": bool(svc.get("EnableTagOverride", False)),
                "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                "ServiceConnect": {},
                "CreateIndex": svc["CreateIndex"],
                "ModifyIndex": svc["ModifyIndex"],
            }
            if svc.get("TaggedAddresses"):
                entry["ServiceTaggedAddresses"] = svc["TaggedAddresses"]
            result.append(entry)
        return self.service_index(name, exists, checks=False), result

    def catalog_services(self) -> tuple[int, dict[str, list[str]]]:
        out: dict[str, list[str]] = {}
        for node, svcs in self.services.items():
            if node not in self.nodes:
                continue
            for svc in svcs.values():
                tags = out.setdefault(svc["Service"], [])
                for t in svc.get("Tags") or []:
                    if t not in tags:
                        tags.append(t)
        return self.max_index("services"), {k: out[k] for k in sorted(out)}

    def catalog_nodes(self) -> tuple[int, list[dict]]:
        return self.max_index("nodes"), [self.node_out(n) for n in sorted(self.nodes)]

    def catalog_node(self, name: str) -> tuple[int, dict | None]:
        index = self.max_index("nodes", "services")
        if name not in self.nodes:
            return index, None
        services = {
            sid: self.service_out(svc) for sid, svc in sorted(self.services.get(name, {}).items())
        }
        return index, {"Node": self.node_out(name), "Services": services}

    def _checks_where(self, keep: Any) -> list[dict]:
        return [
            dict(self.checks[node][cid])
            for node in sorted(self.checks)
            for cid in sorted(self.checks[node])
            if keep(self.checks[node][cid])
        ]

    def health_checks_for_service(self, name: str) -> tuple[int, list[dict]]:
        return self.max_index("checks"), self._checks_where(lambda c: c.get("ServiceName") == name)

    def health_state(self, state: str) -> tuple[int, list[dict]]:
        return self.max_index("checks"), self._checks_where(
            lambda c: state == "any" or c["Status"] == state
        )

    def health_node(self, node: str) -> tuple[int, list[dict]]:
        return self.max_index("checks"), self._checks_where(lambda c: c["Node"] == node)
