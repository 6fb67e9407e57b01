"""Anti-entropy: keeping the catalog's copy of this node in step with the agent.

Follows agent/ae/ae.go and agent/local/state.go (1.11):
- local changes are pushed at once (SyncChanges): only what is out of sync,
  so an unchanged service or check is never written again;
- a full sync (compare with the catalog, then push the differences) runs at
  start, every ae_interval (1 m) plus a random stagger up to that, shortly
  (random up to 3 s) after a server joins, and 15 s plus up to 15 s after a
  failed attempt;
- node info goes with the agent token, a service with the token it was
  registered with (else the default token); a write the ACLs refuse is
  logged ("Node info update blocked by ACLs", "Service registration blocked
  by ACLs") and not retried until the next full sync.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .local_state import CheckState, ServiceState
from .state_store import CONSUL_SERVICE_ID, SERF_CHECK_ID
from .util import ACL_NOT_FOUND, PERMISSION_DENIED, RPCError, random_stagger

if TYPE_CHECKING:
    from .agent import Agent

AE_INTERVAL = 60.0  # ae_interval
SERVER_UP_INTERVAL = 3.0  # ae.go serverUpIntv
RETRY_FAIL_INTERVAL = 15.0  # ae.go retryFailIntv


def _acl_refused(err: RPCError) -> bool:
    return PERMISSION_DENIED in str(err) or ACL_NOT_FOUND in str(err)


def _same(local: dict, remote: dict, ignore_output: bool = False) -> bool:
    for key, value in local.items():
        if ignore_output and key == "Output":
            continue
        if remote.get(key, type(value)() if isinstance(value, (dict, list)) else None) != value:
            return False
    return True


class StateSyncer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.local = agent.local
        self.log = agent.log
        self.sync_full = threading.Event()
        self.sync_changes = threading.Event()
        self.stop_event = agent.stop_event

    def start(self) -> None:
        threading.Thread(target=self._run, name="anti-entropy", daemon=True).start()

    def _wait_any(self, timeout: float) -> str:
        """Wait for a full-sync trigger, a changes trigger or the timeout."""
        deadline = time.monotonic() + timeout
        while not self.stop_event.is_set():
            if self.sync_full.is_set():
                self.sync_full.clear()
                if self.stop_event.wait(random_stagger(SERVER_UP_INTERVAL)):
                    return "stop"
                return "full"
            if self.sync_changes.is_set():
                return "changes"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timer"
            self.stop_event.wait(min(remaining, 0.05))
        return "stop"

    def _run(self) -> None:
        while not self.stop_event.is_set() and not self.agent.leaving:
            try:
                self._run_fsm()
                return
            except Exception as e:  # never let the syncer die
                self.log.error("agent.anti_entropy", "syncer failed", error=repr(e))
                self.stop_event.wait(1.0)

    def _run_fsm(self) -> None:
        state = "full"
        next_full = 0.0
        while not self.stop_event.is_set() and not self.agent.leaving:
            if state == "full":
                try:
                    self.sync_changes.clear()
                    self._update_sync_state()
                    self._sync_changes()
                    state = "partial"
                    next_full = time.monotonic() + AE_INTERVAL + random_stagger(AE_INTERVAL)
                except RPCError as e:
                    self.log.error(
                        "agent.anti_entropy", "failed to sync remote state", error=f'"{e}"'
                    )
                    state = "retry"
            elif state == "retry":
                event = self._retry_wait()
                state = "stop" if event == "stop" else "full"
            else:
                event = self._wait_any(max(0.0, next_full - time.monotonic()))
                if event in ("full", "timer"):
                    state = "full"
                elif event == "changes":
                    self.sync_changes.clear()
                    try:
                        self._sync_changes()
                    except RPCError as e:
                        self.log.error(
                            "agent.anti_entropy", "failed to sync changes", error=f'"{e}"'
                        )
            if state == "stop":
                return

    def _retry_wait(self) -> str:
        """ae.go retrySyncFullEvent: a server joining, or 15 s + up to 15 s."""
        deadline = time.monotonic() + RETRY_FAIL_INTERVAL + random_stagger(RETRY_FAIL_INTERVAL)
        while not self.stop_event.is_set():
            if self.sync_full.is_set():
                self.sync_full.clear()
                return (
                    "stop" if self.stop_event.wait(random_stagger(SERVER_UP_INTERVAL)) else "full"
                )
            if time.monotonic() >= deadline:
                return "timer"
            self.stop_event.wait(0.05)
        return "stop"

    # -- RPC requests -------------------------------------------------------------------
    def _register(self, token: str, **extra: Any) -> dict:
        agent = self.agent
        with self.local.lock:
            skip = self.local.node_info_in_sync
        return {
            "Datacenter": agent.rc.datacenter,
            "ID": agent.node_id,
            "Node": agent.name,
            "Address": agent.rc.advertise_addr,
            "TaggedAddresses": agent.tagged_addresses(),
            "NodeMeta": agent.node_meta(),
            "Token": token,
            "SkipNodeUpdate": skip,
            **extra,
        }

    def _accessor(self, token: str) -> str:
        return self.agent.accessor_id(token)

    # -- full sync (local/state.go updateSyncState) -----------------------------------
    def _update_sync_state(self) -> None:
        req = {"Node": self.agent.name, "Token": self.agent.tokens.agent_token()}
        node_services = self.agent.rpc("Catalog.NodeServiceList", dict(req))["Result"] or {}
        remote_checks = self.agent.rpc("Health.NodeChecks", dict(req))["Result"] or []
        node = node_services.get("Node")
        remote_services = {s["ID"]: s for s in node_services.get("Services") or []}
        local = self.local
        with local.lock:
            if (
                node is None
                or node.get("ID") != self.agent.node_id
                or node.get("TaggedAddresses") != self.agent.tagged_addresses()
                or node.get("Meta") != self.agent.node_meta()
            ):
                local.node_info_in_sync = False
            for sid, s in local.services.items():
                if sid not in remote_services:
                    s.in_sync = False
            for sid, rs in remote_services.items():
                ls = local.services.get(sid)
                if ls is None:
                    if sid != CONSUL_SERVICE_ID:
                        local.services[sid] = ServiceState({"ID": sid}, deleted=True)
                elif not ls.deleted:
                    ls.in_sync = _same(ls.service, rs)
            remote = {c["CheckID"]: c for c in remote_checks}
            for cid, c in local.checks.items():
                if cid not in remote:
                    c.in_sync = False
            for cid, rc in remote.items():
                lc = local.checks.get(cid)
                if lc is None:
                    if cid != SERF_CHECK_ID:
                        local.checks[cid] = CheckState(
                            {"CheckID": cid, "ServiceID": rc.get("ServiceID", "")}, deleted=True
                        )
                elif not lc.deleted:
                    lc.in_sync = _same(lc.check, rc, ignore_output=lc.defer_timer is not None)

    # -- partial sync (local/state.go SyncChanges) -----------------------------------
    def _sync_changes(self) -> None:
        local = self.local
        with local.lock:
            node_in_sync = local.node_info_in_sync
        if not node_in_sync:
            self._sync_node_info()
        with local.lock:
            services = [
                (sid, s.deleted) for sid, s in local.services.items() if s.deleted or not s.in_sync
            ]
        for sid, deleted in services:
            if deleted:
                self._delete("service", sid)
            else:
                self._sync_service(sid)
        with local.lock:
            checks = [
                (cid, c.deleted) for cid, c in local.checks.items() if c.deleted or not c.in_sync
            ]
        for cid, deleted in checks:
            if deleted:
                self._delete("check", cid)
            else:
                self._sync_check(cid)

    def _write(
        self, method: str, req: dict, failed: str, blocked: str, gone: str = "", **key: str
    ) -> bool:
        """Run a catalog write; False when ACLs refused it (logged, as Consul does), raise on
        other errors (`gone` names an error that means there is nothing left to do)."""
        try:
            self.agent.rpc(method, req)
        except RPCError as e:
            if _acl_refused(e):
                self.log.warn("agent", blocked, **key, accessorID=self._accessor(req["Token"]))
                return False
            if not gone or gone not in str(e):
                self.log.warn("agent", failed, **key, error=f'"{e}"')
                raise
        return True

    def _sync_node_info(self) -> None:
        req = self._register(self.agent.tokens.agent_token())
        req["SkipNodeUpdate"] = False
        ok = self._write(
            "Catalog.Register",
            req,
            "Syncing node info failed.",
            "Node info update blocked by ACLs",
            node=self.agent.node_id,
        )
        with self.local.lock:
            self.local.node_info_in_sync = True
        if ok:
            self.log.info("agent", "Synced node info")

    def _sync_service(self, sid: str) -> None:
        local = self.local
        with local.lock:
            st = local.services.get(sid)
            if st is None or st.deleted:
                return
            service = dict(st.service)
            token = st.token or self.agent.tokens.user_token()
            checks = [
                dict(c.check)
                for c in local.live_checks().values()
                if not c.in_sync and c.check["ServiceID"] == sid and c.token == st.token
            ]
        req = self._register(token, Service=service, Checks=checks)
        ok = self._write(
            "Catalog.Register",
            req,
            "Syncing service failed.",
            "Service registration blocked by ACLs",
            service=sid,
        )
        with local.lock:
            if local.services.get(sid) is st and st.service == service:
                st.in_sync = True
            for chk in checks:
                cs = local.checks.get(chk["CheckID"])
                if cs is not None and cs.check == chk:
                    cs.in_sync = True
            if ok:
                local.node_info_in_sync = True
        if ok:
            self.log.info("agent", "Synced service", service=sid)

    def _sync_check(self, cid: str) -> None:
        local = self.local
        with local.lock:
            cs = local.checks.get(cid)
            if cs is None or cs.deleted:
                return
            if cs.defer_timer is not None:
                cs.defer_timer.cancel()
                cs.defer_timer = None
            check = dict(cs.check)
            token = cs.token or self.agent.tokens.user_token()
            svc = local.services.get(check["ServiceID"])
            extra: dict[str, Any] = {"Checks": [check]}
            if svc is not None and not svc.deleted:
                extra["Service"] = dict(svc.service)
        req = self._register(token, **extra)
        ok = self._write(
            "Catalog.Register",
            req,
            "Syncing check failed.",
            "Check registration blocked by ACLs",
            check=cid,
        )
        with local.lock:
            if local.checks.get(cid) is cs and cs.check == check:
                cs.in_sync = True
            if ok:
                local.node_info_in_sync = True
        if ok:
            self.log.debug("agent", "Synced check", check=cid)

    def _delete(self, kind: str, key: str) -> None:
        """deleteService / deleteCheck: deregister what the agent no longer has."""
        local = self.local
        table: dict = local.services if kind == "service" else local.checks
        with local.lock:
            state = table.get(key)
            if state is None or not state.deleted:
                return
            token = state.token or self.agent.tokens.user_token()
        req = {
            "Datacenter": self.agent.rc.datacenter,
            "Node": self.agent.name,
            "ServiceID" if kind == "service" else "CheckID": key,
            "Token": token,
        }
        ok = self._write(
            "Catalog.Deregister",
            req,
            f"Deregistering {kind} failed.",
            f"{kind.capitalize()} deregistration blocked by ACLs",
            gone=f"Unknown {kind}",
            **{kind: key},
        )
        with local.lock:
            if not ok:
                state.in_sync = True  # not retried before the next full sync
                return
            if table.get(key) is state:
                del table[key]
            if kind == "service":  # the catalog dropped the service's checks with it
                for cid in [
                    c
                    for c, v in local.checks.items()
                    if v.deleted and v.check.get("ServiceID") == key
                ]:
                    del local.checks[cid]
        if kind == "service":
            self.log.info("agent", "Deregistered service", service=key)
        else:
            self.log.debug("agent", "Deregistered check", check=key)
