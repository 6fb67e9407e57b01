"""The agent's own services and checks: registration, check results, persistence, reaping.

Follows agent/agent.go and agent/local/state.go (1.11):
- a service or check registered through the API is persisted in data_dir and
  restored at start; restored checks start critical ("Default check to
  critical to avoid placing potentially unhealthy services into the active
  pool", agent.go loadChecks); a TTL check's last update is restored while
  its TTL lasts (loadCheckState);
- re-registering a check keeps its current status and output (addCheckLocked);
- a check result that only changes the output is kept locally and synced
  check_update_interval/2 + a random stagger up to check_update_interval
  later (local/state.go UpdateCheck); a status change is synced at once;
- DeregisterCriticalServiceAfter is raised to at least 1 minute and reaped
  every 30 s (check_deregister_interval_min, check_reap_interval).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .checks import INTERVAL_KINDS, MIN_INTERVAL, OUTPUT_MAX_SIZE, CheckRunner, TTLTimer
from .definitions import check_kind, normalize_check_definition, normalize_service_definition
from .util import (
    CRITICAL,
    MAINT,
    PASSING,
    WARNING,
    ApiError,
    Logger,
    format_duration,
    parse_duration,
    random_stagger,
)

DEREGISTER_INTERVAL_MIN = 60.0  # check_deregister_interval_min
REAP_INTERVAL = 30.0  # check_reap_interval
SERVICE_MAINT_PREFIX = "_service_maintenance:"
NODE_MAINT_ID = "_node_maintenance"
STATE_FILE = "standin-local-state.json"


def unknown_service(sid: str) -> ApiError:
    return ApiError(
        404,
        f'Unknown service ID "{sid}". Ensure that the service ID is passed, not the service name.',
    )


def unknown_check(cid: str) -> ApiError:
    return ApiError(
        404, f'Unknown check ID "{cid}". Ensure that the check ID is passed, not the check name.'
    )


@dataclass
class ServiceState:
    service: dict  # the NodeService the catalog gets
    token: str = ""
    in_sync: bool = False
    deleted: bool = False
    persist: bool = False
    definition: dict = field(default_factory=dict)  # as registered, for data_dir


@dataclass
class CheckState:
    check: dict  # the HealthCheck the catalog gets
    token: str = ""
    in_sync: bool = False
    deleted: bool = False
    persist: bool = False
    definition: dict = field(default_factory=dict)
    kind: str = "ttl"
    critical_since: float | None = None
    defer_timer: threading.Timer | None = None
    runner: CheckRunner | TTLTimer | None = None
    reap_after: float = 0.0
    successes: int = 0
    failures: int = 0


class LocalState:
    """What the local agent owns; `trigger_sync()` is called when the catalog must catch up."""

    def __init__(
        self,
        node: str,
        data_dir: str,
        check_update_interval: float,
        script_checks: bool,
        log: Logger,
        trigger_sync: Callable[[], None],
    ) -> None:
        self.node = node
        self.data_dir = data_dir
        self.check_update_interval = check_update_interval
        self.script_checks = script_checks
        self.log = log
        self.trigger_sync = trigger_sync
        self.lock = threading.RLock()
        self._save_lock = threading.Lock()
        self.services: dict[str, ServiceState] = {}
        self.checks: dict[str, CheckState] = {}
        self.node_info_in_sync = False
        self.ttl_state: dict[str, dict] = {}

    # -- services --------------------------------------------------------------------
    def live_services(self) -> dict[str, ServiceState]:
        return {k: v for k, v in self.services.items() if not v.deleted}

    def live_checks(self) -> dict[str, CheckState]:
        return {k: v for k, v in self.checks.items() if not v.deleted}

    @staticmethod
    def node_service(svc: dict) -> dict:
        """The NodeService of a normalized definition (agent.addServiceInternal defaults)."""
        address, port = str(svc.get("Address") or ""), int(svc.get("Port") or 0)
        tagged = copy.deepcopy(svc.get("TaggedAddresses") or {})
        try:
            ip = ipaddress.ip_address(address) if address else None
        except ValueError:
            ip = None
        if ip is not None:
            lan, wan = ("lan_ipv4", "wan_ipv4") if ip.version == 4 else ("lan_ipv6", "wan_ipv6")
            tagged.setdefault(lan, {"Address": address, "Port": port})
            tagged.setdefault(wan, {"Address": address, "Port": port})
        return {
            "ID": str(svc["ID"]),
            "Service": str(svc["Name"]),
            "Tags": list(svc["Tags"]),
            "Address": address,
            "TaggedAddresses": tagged,
            "Meta": dict(svc["Meta"]),
            "Port": port,
            "Weights": dict(svc["Weights"]),
            "EnableTagOverride": bool(svc.get("EnableTagOverride", False)),
        }

    def add_service(
        self, body: dict, token: str, replace_checks: bool, persist: bool, restored: bool = False
    ) -> str:
        """agent.AddService: the service and its checks; `restored` starts checks critical."""
        svc = normalize_service_definition(body)
        service = self.node_service(svc)
        sid, name = service["ID"], service["Service"]
        defs = svc["Checks"]
        new_checks = []
        for i, chk in enumerate(defs):
            cid = str(
                chk.get("CheckID")
                or (f"service:{sid}:{i + 1}" if len(defs) > 1 else f"service:{sid}")
            )
            new_checks.append(self._new_check(chk, cid, service, f"Service '{name}' check", token))
            new_checks[-1].persist = persist
        definition = {k: v for k, v in svc.items() if k not in ("Check", "Checks", "Token")}
        with self.lock:
            old = self.services.get(sid)
            self.services[sid] = ServiceState(
                service,
                token,
                in_sync=bool(old and not old.deleted and old.service == service and old.in_sync),
                persist=persist,
                definition=definition,
            )
            if replace_checks:
                keep = {c.check["CheckID"] for c in new_checks}
                for cid, c in list(self.live_checks().items()):
                    if c.check["ServiceID"] == sid and c.kind != MAINT and cid not in keep:
                        self._remove_check(cid)
            for cs in new_checks:
                self._install_check(cs, restored)
            for c in self.live_checks().values():  # a renamed service renames its checks' service
                if c.check["ServiceID"] == sid:
                    c.check["ServiceName"], c.check["ServiceTags"] = name, list(service["Tags"])
        self.log.debug("agent", "added local service", service=sid)
        self.save()
        self.trigger_sync()
        return sid

    def remove_service(self, sid: str) -> None:
        with self.lock:
            state = self.services.get(sid)
            if state is None or state.deleted:
                raise unknown_service(sid)
            state.deleted = True
            state.in_sync = False
            for cid, c in list(self.live_checks().items()):
                if c.check["ServiceID"] == sid:
                    self._remove_check(cid)
        self.log.info("agent", "removed service", service=sid)
        self.save()
        self.trigger_sync()

    # -- checks ------------------------------------------------------------------------
    def _new_check(
        self, chk: dict, cid: str, service: dict | None, default_name: str, token: str
    ) -> CheckState:
        kind = check_kind(chk)
        if kind == "script" and not self.script_checks:
            raise ApiError(
                500,
                "Scripts are disabled on this agent; to enable, configure "
                "'enable_script_checks' or 'enable_local_script_checks' to true",
            )
        definition: dict[str, Any] = {}
        for key in (
            "HTTP",
            "Header",
            "Method",
            "Body",
            "TLSServerName",
            "TLSSkipVerify",
            "TCP",
            "GRPC",
        ):
            if chk.get(key):
                definition[key] = chk[key]
        if chk.get("Args"):
            definition["ScriptArgs"] = chk["Args"]
        for key in ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter"):
            if chk.get(key) not in (None, "") and parse_duration(chk[key]):
                definition[key] = format_duration(parse_duration(chk[key]))
        interval = parse_duration(chk["Interval"]) if chk.get("Interval") else 0.0
        timeout = parse_duration(chk["Timeout"]) if chk.get("Timeout") else 0.0
        check = {
            "Node": self.node,
            "CheckID": cid,
            "Name": str(chk.get("Name") or default_name),
            "Status": chk.get("Status") or CRITICAL,
            "Notes": str(chk.get("Notes") or ""),
            "Output": "",
            "ServiceID": service["ID"] if service else "",
            "ServiceName": service["Service"] if service else "",
            "ServiceTags": list(service["Tags"]) if service else [],
            "Type": kind,
            "Interval": format_duration(interval) if kind in INTERVAL_KINDS else "",
            "Timeout": format_duration(timeout) if timeout else "",
            "ExposedPort": 0,
            "Definition": definition,
        }
        cs = CheckState(check, token, definition=dict(chk), kind=kind)
        if check["Status"] == CRITICAL:
            cs.critical_since = time.monotonic()
        limit = (
            parse_duration(chk["DeregisterCriticalServiceAfter"])
            if chk.get("DeregisterCriticalServiceAfter")
            else 0.0
        )
        if 0 < limit < DEREGISTER_INTERVAL_MIN:
            self.log.warn(
                "agent",
                "check has deregister interval below minimum",
                check=cid,
                minimum_interval=format_duration(DEREGISTER_INTERVAL_MIN),
            )
            limit = DEREGISTER_INTERVAL_MIN
        cs.reap_after = limit
        return cs

    def _install_check(self, cs: CheckState, restored: bool) -> None:
        """Add or replace a check and start its runner (caller holds the lock)."""
        cid = cs.check["CheckID"]
        prev = self.checks.get(cid)
        if prev is not None:
            self._stop(prev)
        self.checks[cid] = cs
        if prev is not None and not prev.deleted and not restored:
            # agent.go addCheckLocked: "snapshot the current state of the health check
            # to avoid potential flapping".
            self.update_check(cid, prev.check["Status"], prev.check["Output"], direct=True)
        if restored:
            cs.check["Status"] = CRITICAL
            cs.critical_since = time.monotonic()
        self._start_runner(cs, restored)

    def _start_runner(self, cs: CheckState, restored: bool) -> None:
        cid = cs.check["CheckID"]
        if cs.kind in INTERVAL_KINDS:
            interval = parse_duration(cs.definition["Interval"])
            if interval < MIN_INTERVAL:
                self.log.warn(
                    "agent",
                    "check has interval below minimum",
                    check=cid,
                    minimum_interval=format_duration(MIN_INTERVAL),
                )
                interval = MIN_INTERVAL
            cs.runner = CheckRunner(
                cid, cs.kind, cs.definition, interval, self.runner_result, self.log
            )
            cs.runner.start()
        elif cs.kind == "ttl":
            timer = TTLTimer(cid, parse_duration(cs.definition["TTL"]), self.ttl_result, self.log)
            cs.runner = timer
            saved = self.ttl_state.get(cid) if restored else None
            if saved and saved["expires"] > time.time():
                cs.check["Status"], cs.check["Output"] = saved["status"], saved["output"]
                cs.critical_since = time.monotonic() if saved["status"] == CRITICAL else None
                timer.last_output = saved["output"]
            timer.start()

    @staticmethod
    def _stop(cs: CheckState) -> None:
        if cs.runner:
            cs.runner.stop()
        if cs.defer_timer:
            cs.defer_timer.cancel()
            cs.defer_timer = None

    def _remove_check(self, cid: str) -> None:
        cs = self.checks[cid]
        self._stop(cs)
        cs.deleted, cs.in_sync = True, False
        self.ttl_state.pop(cid, None)

    def add_check(self, body: dict, token: str, persist: bool, restored: bool = False) -> str:
        chk = normalize_check_definition(body)
        name = chk.get("Name")
        if not name:
            raise ApiError(400, "Missing check name")
        cid = str(chk.get("CheckID") or name)
        sid = str(chk.get("ServiceID") or "")
        with self.lock:
            service = None
            if sid:
                state = self.services.get(sid)
                if state is None or state.deleted:
                    raise ApiError(400, f'ServiceID "{sid}" does not exist')
                service = state.service
            cs = self._new_check(chk, cid, service, str(name), token)
            cs.persist = persist
            self._install_check(cs, restored)
        self.save()
        self.trigger_sync()
        return cid

    def remove_check(self, cid: str) -> None:
        with self.lock:
            cs = self.checks.get(cid)
            if cs is None or cs.deleted:
                raise unknown_check(cid)
            self._remove_check(cid)
        self.save()
        self.trigger_sync()

    def runner_result(self, cid: str, status: str, output: str) -> None:
        """checks.StatusHandler: SuccessBeforePassing / FailuresBeforeCritical, then update."""
        with self.lock:
            cs = self.checks.get(cid)
            if cs is None or cs.deleted:
                return
            if status in (PASSING, WARNING):
                cs.successes, cs.failures = cs.successes + 1, 0
                if cs.successes < int(cs.definition.get("SuccessBeforePassing") or 0):
                    self.log.warn(
                        "agent",
                        "Check passed but has not reached success threshold",
                        check=cid,
                        status=status,
                    )
                    return
            else:
                cs.failures, cs.successes = cs.failures + 1, 0
                if cs.failures < int(cs.definition.get("FailuresBeforeCritical") or 0):
                    self.log.warn(
                        "agent",
                        "Check failed but has not reached failure threshold",
                        check=cid,
                        status=status,
                    )
                    return
        if status == CRITICAL:
            self.log.warn("agent", "Check is now critical", check=cid)
        elif status == WARNING:
            self.log.warn("agent", "Check is now warning", check=cid)
        self.update_check(cid, status, output)

    def ttl_result(self, cid: str, status: str, output: str) -> None:
        self.update_check(cid, status, output)

    def update_ttl(self, cid: str, status: str, output: str) -> None:
        """agent.updateTTLCheck (pass/warn/fail/update endpoints)."""
        with self.lock:
            cs = self.checks.get(cid)
            if cs is None or cs.deleted:
                raise unknown_check(cid)
            if not isinstance(cs.runner, TTLTimer):
                raise ApiError(500, f'CheckID "{cid}" does not have associated TTL')
            timer = cs.runner
        output = timer.set_status(status, output)
        with self.lock:
            self.ttl_state[cid] = {
                "status": status,
                "output": output,
                "expires": time.time() + timer.ttl,
            }
        self.save()

    def update_check(self, cid: str, status: str, output: str, direct: bool = False) -> None:
        """local/state.go UpdateCheck."""
        with self.lock:
            cs = self.checks.get(cid)
            if cs is None or cs.deleted:
                return
            output = output[:OUTPUT_MAX_SIZE] if not direct else output
            if status == CRITICAL:
                if cs.critical_since is None:
                    cs.critical_since = time.monotonic()
            else:
                cs.critical_since = None
            check = cs.check
            if check["Status"] == status and check["Output"] == output:
                return
            if self.check_update_interval > 0 and check["Status"] == status:
                check["Output"] = output
                if cs.defer_timer is None:
                    d = self.check_update_interval
                    cs.defer_timer = threading.Timer(
                        d / 2 + random_stagger(d), self._deferred, [cs]
                    )
                    cs.defer_timer.daemon = True
                    cs.defer_timer.start()
                return
            check["Status"], check["Output"] = status, output
            cs.in_sync = False
        self.trigger_sync()

    def _deferred(self, cs: CheckState) -> None:
        with self.lock:
            cs.defer_timer = None
            if cs.deleted:
                return
            cs.in_sync = False
        self.trigger_sync()

    # -- maintenance -------------------------------------------------------------------
    def set_maintenance(
        self, cid: str, name: str, notes: str, service: dict | None, token: str, enable: bool
    ) -> None:
        with self.lock:
            present = cid in self.live_checks()
            if enable and not present:
                cs = CheckState(
                    {
                        "Node": self.node,
                        "CheckID": cid,
                        "Name": name,
                        "Status": CRITICAL,
                        "Notes": notes,
                        "Output": "",
                        "ServiceID": service["ID"] if service else "",
                        "ServiceName": service["Service"] if service else "",
                        "ServiceTags": list(service["Tags"]) if service else [],
                        "Type": "",
                        "Interval": "",
                        "Timeout": "",
                        "ExposedPort": 0,
                        "Definition": {},
                    },
                    token,
                    persist=True,
                    kind=MAINT,
                )
                self.checks[cid] = cs
            elif not enable and present:
                self._remove_check(cid)
            else:
                return
        self.save()
        self.trigger_sync()

    # -- reaper (agent.go reapServicesInternal) ------------------------------------------
    def reap(self) -> list[tuple[str, str]]:
        """Services whose check has been critical longer than its deregister-after."""
        now = time.monotonic()
        doomed: dict[str, str] = {}
        with self.lock:
            for cid, cs in self.live_checks().items():
                sid = cs.check["ServiceID"]
                if (
                    sid
                    and sid not in doomed
                    and cs.reap_after
                    and cs.critical_since is not None
                    and now - cs.critical_since > cs.reap_after
                ):
                    doomed[sid] = cid
        return list(doomed.items())

    # -- persistence ---------------------------------------------------------------------
    def save(self) -> None:
        if not self.data_dir:
            return
        with self.lock:
            data = {
                "services": [
                    {"definition": s.definition, "token": s.token}
                    for s in self.live_services().values()
                    if s.persist
                ],
                "checks": [
                    {
                        "definition": dict(
                            c.definition,
                            CheckID=cid,
                            Name=c.check["Name"],
                            ServiceID=c.check["ServiceID"],
                        ),
                        "token": c.token,
                        "maintenance": c.kind == MAINT,
                        "notes": c.check["Notes"],
                    }
                    for cid, c in self.live_checks().items()
                    if c.persist
                ],
                "ttl_state": self.ttl_state,
            }
        with self._save_lock:
            tmp = os.path.join(self.data_dir, STATE_FILE + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, os.path.join(self.data_dir, STATE_FILE))

    def load(self) -> dict:
        if not self.data_dir:
            return {}
        try:
            with open(os.path.join(self.data_dir, STATE_FILE), encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        self.ttl_state = dict(data.get("ttl_state") or {})
        return data

    def restore(self, config_services: list[dict], config_checks: list[dict]) -> None:
        """agent.go loadServices / loadChecks: config first, then what the API registered."""
        data = self.load()
        config_ids = {self.add_service(s, "", True, persist=False) for s in config_services}
        for entry in data.get("services", []):
            definition = entry["definition"]
            if str(definition.get("ID") or definition.get("Name")) in config_ids:
                continue
            try:
                self.add_service(definition, entry["token"], True, persist=True, restored=True)
            except ApiError as e:
                self.log.warn("agent", "failed to restore persisted service", error=e.message)
        for entry in data.get("checks", []):
            definition = entry["definition"]
            try:
                if entry.get("maintenance"):
                    self._restore_maintenance(definition, entry)
                elif definition["CheckID"] not in self.live_checks():
                    self.add_check(definition, entry["token"], persist=True, restored=True)
            except ApiError as e:
                self.log.warn("agent", "failed to restore persisted check", error=e.message)
        for chk in config_checks:
            try:
                self.add_check(chk, "", persist=False)
            except ApiError as e:
                self.log.warn("agent", "failed to register check from config", error=e.message)

    def _restore_maintenance(self, definition: dict, entry: dict) -> None:
        cid = definition["CheckID"]
        if cid == NODE_MAINT_ID:
            self.set_maintenance(
                cid, "Node Maintenance Mode", entry["notes"], None, entry["token"], True
            )
            return
        state = self.live_services().get(cid.removeprefix(SERVICE_MAINT_PREFIX))
        if state is not None:
            self.set_maintenance(
                cid, "Service Maintenance Mode", entry["notes"], state.service, entry["token"], True
            )
