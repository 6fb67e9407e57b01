"""The /v1/agent endpoints, with the ACL each one requires (agent_endpoint.go, 1.11).

agent:read for /agent/self, node:read filters /agent/members, service:read
filters /agent/services and /agent/checks, service:write registers and
deregisters a service (and its checks), node:write a node check or node
maintenance, agent:write joins and leaves, acl:write sets agent tokens.
A refusal is 403 "Permission denied".
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from .acl import Authorizer
from .definitions import canon_keys, normalize_check_definition, normalize_service_definition
from .http_server import Request, Response, empty_ok, json_response, text_response
from .local_state import (
    NODE_MAINT_ID,
    SERVICE_MAINT_PREFIX,
    CheckState,
    unknown_check,
    unknown_service,
)
from .util import (
    CRITICAL,
    MAINT,
    PASSING,
    PERMISSION_DENIED,
    REVISION,
    VERSION,
    WARNING,
    ApiError,
    format_duration,
    go_bool,
    multierror,
)

if TYPE_CHECKING:
    from .http_api import HttpApi

_HEALTH_CODES = {PASSING: 200, WARNING: 429, CRITICAL: 503, MAINT: 503}
_ORDER = {PASSING: 0, WARNING: 1, CRITICAL: 2, MAINT: 3}


def _denied() -> ApiError:
    return ApiError(403, PERMISSION_DENIED)


class AgentEndpoints:
    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self.agent = api.agent
        self.local = api.agent.local

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", r"/v1/agent/self", self.self),
            ("GET", r"/v1/agent/members", self.members),
            ("PUT", r"/v1/agent/service/register", self.service_register),
            ("PUT", r"/v1/agent/service/deregister/(?P<sid>.+)", self.service_deregister),
            ("PUT", r"/v1/agent/service/maintenance/(?P<sid>.+)", self.service_maintenance),
            ("GET", r"/v1/agent/services", self.services),
            ("GET", r"/v1/agent/service/(?P<sid>.+)", self.service),
            ("PUT", r"/v1/agent/maintenance", self.node_maintenance),
            ("GET", r"/v1/agent/checks", self.checks),
            ("PUT", r"/v1/agent/check/register", self.check_register),
            ("PUT", r"/v1/agent/check/deregister/(?P<cid>.+)", self.check_deregister),
            ("PUT", r"/v1/agent/check/(?P<op>pass|warn|fail)/(?P<cid>.+)", self.check_ttl),
            ("PUT", r"/v1/agent/check/update/(?P<cid>.+)", self.check_update),
            ("GET", r"/v1/agent/health/service/name/(?P<name>.+)", self.health_by_name),
            ("GET", r"/v1/agent/health/service/id/(?P<sid>.+)", self.health_by_id),
            ("PUT", r"/v1/agent/leave", self.leave),
            ("PUT", r"/v1/agent/join/(?P<addr>.+)", self.join),
        ]

    def _filtered_header(self, req: Request, filtered: bool) -> dict:
        if filtered and self.api.token(req):
            return {"X-Consul-Results-Filtered-By-ACLs": "true"}
        return {}

    # -- self and members ------------------------------------------------------------
    def self(self, req: Request) -> Response:
        if not self.api.authorize(req).agent_read(self.agent.name):
            raise _denied()
        agent, rc = self.agent, self.agent.rc
        local = agent.local_member().public()
        stats: dict[str, dict] = {
            "agent": {
                "check_monitors": "0",
                "check_ttls": str(
                    sum(1 for c in self.local.live_checks().values() if c.kind == "ttl")
                ),
                "checks": str(len(self.local.live_checks())),
                "services": str(len(self.local.live_services())),
            },
            "build": {
                "prerelease": "",
                "revision": REVISION,
                "version": VERSION,
                "version_metadata": "",
            },
            "consul": {
                "server": str(rc.server).lower(),
                "known_servers": str(len(agent.known_servers())),
                "bootstrap": str(rc.bootstrap).lower(),
                "known_datacenters": "1",
            },
            "serf_lan": {
                "members": str(len(agent.memberlist.member_list())),
                "encrypted": str(agent.transport.encrypted).lower(),
            },
        }
        if agent.server:
            leader_addr, _ = agent.server.raft.leader()
            stats["consul"].update(
                {"leader": str(agent.server.raft.is_leader()).lower(), "leader_addr": leader_addr}
            )
            stats["raft"] = agent.server.raft.stats()
        body = {
            "Config": {
                "Datacenter": rc.datacenter,
                "PrimaryDatacenter": rc.datacenter,
                "NodeName": agent.name,
                "NodeID": agent.node_id,
                "Revision": REVISION,
                "Server": rc.server,
                "Version": VERSION,
                "BuildDate": "2022-02-11T00:00:00Z",
            },
            "DebugConfig": {
                "AdvertiseAddrLAN": rc.advertise_addr,
                "BindAddr": rc.bind_addr,
                "Bootstrap": rc.bootstrap,
                "BootstrapExpect": rc.bootstrap_expect,
                "ClientAddrs": list(rc.client_addrs),
                "DataDir": rc.data_dir,
                "Datacenter": rc.datacenter,
                "DevMode": rc.dev,
                "HTTPPort": rc.http_port,
                "LeaveOnTerm": rc.leave_on_terminate,
                "LogLevel": rc.log_level,
                "NodeID": agent.node_id,
                "NodeName": agent.name,
                "RejoinAfterLeave": rc.rejoin_after_leave,
                "RetryJoinIntervalLAN": format_duration(rc.retry_interval),
                "RetryJoinLAN": list(rc.retry_join),
                "SerfPortLAN": rc.serf_lan_port,
                "ServerMode": rc.server,
                "ServerPort": rc.server_port,
                "SkipLeaveOnInt": rc.skip_leave_on_interrupt,
                "StartJoinAddrsLAN": list(rc.start_join),
                "UIConfig": {"Enabled": rc.ui},
                "EnableLocalScriptChecks": rc.enable_script_checks,
                "EnableRemoteScriptChecks": rc.enable_script_checks,
                "DNSPort": rc.dns_port,
                "GRPCPort": rc.grpc_port,
                "ACLsEnabled": rc.acl.enabled,
                "CheckUpdateInterval": format_duration(rc.check_update_interval),
            },
            "Coord": {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
            "Member": local,
            "Stats": stats,
            "Meta": agent.node_meta(),
            "xDS": {"SupportedProxies": {"envoy": []}, "Port": -1},
        }
        return json_response(body, req)

    def members(self, req: Request) -> Response:
        authz = self.api.authorize(req)
        members = sorted(self.agent.memberlist.member_list(), key=lambda m: m.name)
        if req.qbool("wan"):
            if not self.agent.rc.server:
                raise ApiError(500, "Must be a server to get WAN members")
            out = []
            for m in members:
                if m.tags.get("role") == "consul":
                    w = m.public()
                    w["Name"] = f"{m.name}.{self.agent.rc.datacenter}"
                    w["Port"] = int(m.tags.get("wan_join_port", "8302"))
                    out.append(w)
        else:
            out = [m.public() for m in members]
        kept = [
            m
            for m in out
            if authz.node_read(m["Name"].split(".")[0] if req.qbool("wan") else m["Name"])
        ]
        return json_response(kept, req, headers=self._filtered_header(req, len(kept) != len(out)))

    # -- services --------------------------------------------------------------------
    def _service_out(self, svc: dict) -> dict:
        out = {k: copy_of(svc[k]) for k in ("ID", "Service", "Tags", "Meta", "Port", "Address")}
        if svc.get("TaggedAddresses"):
            out["TaggedAddresses"] = copy_of(svc["TaggedAddresses"])
        out.update(
            {
                "Weights": dict(svc["Weights"]),
                "EnableTagOverride": svc["EnableTagOverride"],
                "Datacenter": self.agent.rc.datacenter,
            }
        )
        return out

    def service_register(self, req: Request) -> Response:
        token = self.api.token(req)
        authz = self.api.authorize(req)
        body = req.json()
        svc = normalize_service_definition(body)
        if not authz.service_write(svc["Name"]):
            raise _denied()
        existing = self.local.live_services().get(str(svc["ID"]))
        if existing is not None and not authz.service_write(existing.service["Service"]):
            raise _denied()
        self.local.add_service(
            body, token, replace_checks=req.qbool("replace-existing-checks"), persist=True
        )
        return empty_ok()

    def _service_for_write(self, req: Request, sid: str) -> Any:
        authz = self.api.authorize(req)
        state = self.local.live_services().get(sid)
        if state is None:
            raise unknown_service(sid)
        if not authz.service_write(state.service["Service"]):
            raise _denied()
        return state

    def service_deregister(self, req: Request, sid: str) -> Response:
        self._service_for_write(req, sid)
        self.local.remove_service(sid)
        return empty_ok()

    @staticmethod
    def _parse_enable(req: Request) -> bool:
        if "enable" not in req.query:
            raise ApiError(400, "Missing value for enable")
        raw = req.q("enable")
        try:
            return go_bool(raw)
        except ValueError:
            raise ApiError(400, f'Invalid value for enable: "{raw}"') from None

    def service_maintenance(self, req: Request, sid: str) -> Response:
        enable = self._parse_enable(req)
        state = self._service_for_write(req, sid)
        notes = req.q("reason") or (
            "Maintenance mode is enabled for this service, but no reason "
            "was provided. This is a default message."
        )
        self.local.set_maintenance(
            SERVICE_MAINT_PREFIX + sid,
            "Service Maintenance Mode",
            notes,
            state.service,
            self.api.token(req),
            enable,
        )
        word = "entered" if enable else "left"
        self.agent.log.info("agent", f"Service {word} maintenance mode", service=sid)
        return empty_ok()

    def node_maintenance(self, req: Request) -> Response:
        enable = self._parse_enable(req)
        if not self.api.authorize(req).node_write(self.agent.name):
            raise _denied()
        notes = req.q("reason") or (
            "Maintenance mode is enabled for this node, but no reason "
            "was provided. This is a default message."
        )
        self.local.set_maintenance(
            NODE_MAINT_ID, "Node Maintenance Mode", notes, None, self.api.token(req), enable
        )
        self.agent.log.info("agent", f"Node {'entered' if enable else 'left'} maintenance mode")
        return empty_ok()

    def services(self, req: Request) -> Response:
        authz = self.api.authorize(req)
        live = self.local.live_services()
        out = {
            sid: self._service_out(s.service)
            for sid, s in sorted(live.items())
            if authz.service_read(s.service["Service"])
        }
        return json_response(out, req, headers=self._filtered_header(req, len(out) != len(live)))

    def service(self, req: Request, sid: str) -> Response:
        authz = self.api.authorize(req)
        state = self.local.live_services().get(sid)
        if state is None:
            raise ApiError(404, f"unknown service ID: {sid}")
        if not authz.service_read(state.service["Service"]):
            raise _denied()
        out = self._service_out(state.service)
        digest = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[:16]
        out["ContentHash"] = digest
        return json_response(out, req, headers={"X-Consul-ContentHash": digest})

    # -- checks ------------------------------------------------------------------------
    def _check_allowed(self, authz: Authorizer, cs: CheckState, write: bool) -> bool:
        sid = cs.check["ServiceID"]
        if sid:
            name = cs.check["ServiceName"]
            return authz.service_write(name) if write else authz.service_read(name)
        return authz.node_write(self.agent.name) if write else authz.node_read(self.agent.name)

    def checks(self, req: Request) -> Response:
        authz = self.api.authorize(req)
        live = self.local.live_checks()
        out = {
            cid: dict(c.check)
            for cid, c in sorted(live.items())
            if self._check_allowed(authz, c, write=False)
        }
        return json_response(out, req, headers=self._filtered_header(req, len(out) != len(live)))

    def check_register(self, req: Request) -> Response:
        authz = self.api.authorize(req)
        body = req.json()
        chk = normalize_check_definition(body)
        sid = str(chk.get("ServiceID") or "")
        if sid:
            state = self.local.live_services().get(sid)
            if state is not None and not authz.service_write(state.service["Service"]):
                raise _denied()
        elif not authz.node_write(self.agent.name):
            raise _denied()
        self.local.add_check(body, self.api.token(req), persist=True)
        return empty_ok()

    def _check_for_write(self, req: Request, cid: str) -> None:
        authz = self.api.authorize(req)
        cs = self.local.live_checks().get(cid)
        if cs is None:
            raise unknown_check(cid)
        if not self._check_allowed(authz, cs, write=True):
            raise _denied()

    def check_deregister(self, req: Request, cid: str) -> Response:
        self._check_for_write(req, cid)
        self.local.remove_check(cid)
        return empty_ok()

    def check_ttl(self, req: Request, op: str, cid: str) -> Response:
        self._check_for_write(req, cid)
        status = {"pass": PASSING, "warn": WARNING, "fail": CRITICAL}[op]
        self.local.update_ttl(cid, status, req.q("note"))
        return empty_ok()

    def check_update(self, req: Request, cid: str) -> Response:
        body = canon_keys(req.json() or {}, {"status": "Status", "output": "Output"})
        status = body.get("Status", "")
        if status not in (PASSING, WARNING, CRITICAL):
            raise ApiError(400, f"Invalid check status: '{status}'")
        self._check_for_write(req, cid)
        self.local.update_ttl(cid, status, str(body.get("Output", "")))
        return empty_ok()

    # -- local health (agent_endpoint.go AgentHealthServiceBy*) -------------------------
    def _aggregate(self, sid: str) -> tuple[str, list[dict]]:
        checks = sorted(
            (c for c in self.local.live_checks().values() if c.check["ServiceID"] in ("", sid)),
            key=lambda c: c.check["CheckID"],
        )
        status = PASSING
        for c in checks:
            if c.kind == MAINT:
                status = MAINT
                break
            if c.check["Status"] == CRITICAL:
                status = CRITICAL
            elif c.check["Status"] == WARNING and status == PASSING:
                status = WARNING
        return status, [dict(c.check) for c in checks]

    def health_by_id(self, req: Request, sid: str) -> Response:
        authz = self.api.authorize(req)
        state = self.local.live_services().get(sid)
        if state is None:
            return text_response(f"ServiceId {sid} not found", 404)
        if not authz.service_read(state.service["Service"]):
            raise _denied()
        status, checks = self._aggregate(sid)
        if req.q("format") == "text":
            return text_response(status, _HEALTH_CODES[status])
        body = {
            "AggregatedStatus": status,
            "Service": self._service_out(state.service),
            "Checks": checks,
        }
        return json_response(body, req, _HEALTH_CODES[status])

    def health_by_name(self, req: Request, name: str) -> Response:
        if not self.api.authorize(req).service_read(name):
            raise _denied()
        matches = sorted(
            (s for s in self.local.live_services().values() if s.service["Service"] == name),
            key=lambda s: s.service["ID"],
        )
        if not matches:
            return text_response(f"ServiceName {name} Not Found", 404)
        worst, entries = PASSING, []
        for state in matches:
            status, checks = self._aggregate(state.service["ID"])
            worst = max(worst, status, key=_ORDER.__getitem__)
            entries.append(
                {
                    "AggregatedStatus": status,
                    "Service": self._service_out(state.service),
                    "Checks": checks,
                }
            )
        if req.q("format") == "text":
            return text_response(worst, _HEALTH_CODES[worst])
        return json_response(entries, req, _HEALTH_CODES[worst])

    # -- join / leave ------------------------------------------------------------------
    def leave(self, req: Request) -> Response:
        if not self.api.authorize(req).agent_write(self.agent.name):
            raise _denied()

        def _do_leave() -> None:
            time.sleep(0.1)  # let the HTTP answer go out first
            self.agent.leave()
            self.agent.exit_code = 0
            self.agent.stop_event.set()

        threading.Thread(target=_do_leave, daemon=True).start()
        return empty_ok()

    def join(self, req: Request, addr: str) -> Response:
        if not self.api.authorize(req).agent_write(self.agent.name):
            raise _denied()
        joined, errors = self.agent.join([addr])
        if not joined:
            raise ApiError(500, multierror(errors or [f"Failed to join {addr}: no address"]))
        return empty_ok()


def copy_of(value: Any) -> Any:
    return json.loads(json.dumps(value))


def routes(api: HttpApi) -> list[tuple[str, str, Any]]:
    return AgentEndpoints(api).routes()
