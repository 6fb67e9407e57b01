"""The HTTP API v1: routing, tokens, query options, and the catalog/health/status reads.

Reads become server RPCs (forwarded to the leader unless ?stale) and carry
X-Consul-Index, X-Consul-KnownLeader, X-Consul-LastContact and, when ACLs
left something out for an authenticated request, X-Consul-Results-Filtered-
By-ACLs (agent/http.go, 1.11). Agent endpoints live in http_agent.py, ACL
endpoints in http_acl.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import http_acl, http_agent
from .http_server import Request, Response, json_response, text_response
from .rpc_endpoints import MAX_QUERY_TIME
from .util import (
    CRITICAL,
    PASSING,
    WARNING,
    ApiError,
    RPCError,
    parse_duration,
    rpc_error_status,
)

if TYPE_CHECKING:
    from .agent import Agent

Handler = Callable[..., Response]


class HttpApi:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.routes: list[tuple[frozenset, re.Pattern, Handler]] = []
        for methods, pattern, handler in (
            ("GET", r"/v1/status/leader", self.status_leader),
            ("GET", r"/v1/status/peers", self.status_peers),
            ("GET", r"/v1/catalog/datacenters", self.catalog_datacenters),
            ("GET", r"/v1/catalog/services", self.catalog_services),
            ("GET", r"/v1/catalog/service/(?P<name>.+)", self.catalog_service),
            ("GET", r"/v1/catalog/nodes", self.catalog_nodes),
            ("GET", r"/v1/catalog/node/(?P<node>.+)", self.catalog_node),
            ("GET", r"/v1/health/service/(?P<name>.+)", self.health_service),
            ("GET", r"/v1/health/checks/(?P<name>.+)", self.health_checks),
            ("GET", r"/v1/health/state/(?P<state>.+)", self.health_state),
            ("GET", r"/v1/health/node/(?P<node>.+)", self.health_node),
            ("GET", r"/v1/operator/raft/configuration", self.raft_configuration),
            *http_agent.routes(self),
            *http_acl.routes(self),
        ):
            self.routes.append((frozenset(methods.split()), re.compile(pattern), handler))

    # -- dispatch ---------------------------------------------------------------------
    def dispatch(self, req: Request) -> Response:
        path = req.path
        for methods, pattern, handler in self.routes:
            m = pattern.fullmatch(path)
            if not m:
                continue
            # Like Go's mux, the first route whose path matches decides.
            if req.method not in methods and not (req.method == "HEAD" and "GET" in methods):
                if req.method == "OPTIONS":
                    return Response(
                        200, b"", "text/plain; charset=utf-8", {"Allow": ",".join(sorted(methods))}
                    )
                raise ApiError(405, f"method {req.method} not allowed")
            return handler(req, **m.groupdict())
        if self.agent.rc.ui and (path in ("/", "/ui") or path.startswith("/ui/")):
            return Response(
                200,
                b"<!doctype html><title>Consul stand-in</title><p>Consul stand-in: no UI.</p>",
                "text/html; charset=utf-8",
            )
        if path == "/v1/kv" or path.startswith("/v1/kv/"):
            raise ApiError(501, "the KV store is not implemented by the Consul stand-in")
        return text_response("404 page not found\n", 404)

    # -- request helpers ------------------------------------------------------------------
    def token(self, req: Request) -> str:
        """http.go parseTokenInternal: ?token=, X-Consul-Token, Authorization: Bearer, default."""
        if req.q("token"):
            return req.q("token")
        if req.header("X-Consul-Token"):
            return req.header("X-Consul-Token")
        parts = req.header("Authorization").split(" ")
        if len(parts) > 1 and parts[0].lower() == "bearer":
            value = " ".join(parts[1:]).strip().split(" ")[0].strip()
            if value:
                return value
        return self.agent.tokens.user_token()

    def query_options(self, req: Request) -> dict:
        dc = req.q("dc")
        if dc and dc != self.agent.rc.datacenter:
            raise ApiError(500, "No path to datacenter")
        if "stale" in req.query and "consistent" in req.query:
            raise ApiError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        opts: dict[str, Any] = {"Token": self.token(req), "AllowStale": "stale" in req.query}
        if req.q("wait"):
            try:
                opts["MaxQueryTime"] = min(parse_duration(req.q("wait")), MAX_QUERY_TIME)
            except ValueError:
                raise ApiError(400, "Invalid wait time") from None
        if req.q("index"):
            try:
                opts["MinQueryIndex"] = int(req.q("index"))
            except ValueError:
                raise ApiError(400, "Invalid index") from None
        return opts

    def rpc(self, method: str, args: dict) -> dict:
        try:
            return self.agent.rpc(method, args)
        except RPCError as e:
            raise ApiError(rpc_error_status(str(e)), str(e)) from None

    def read(
        self, req: Request, method: str, args: dict, shape: Callable[[Any], Any] = lambda r: r
    ) -> Response:
        opts = self.query_options(req)
        reply = self.rpc(method, dict(args, **opts))
        headers = {
            "X-Consul-Index": str(reply.get("Index", 1)),
            "X-Consul-KnownLeader": "true" if reply.get("KnownLeader") else "false",
            "X-Consul-LastContact": str(reply.get("LastContact", 0)),
            "X-Consul-Effective-Consistency": "stale" if opts["AllowStale"] else "leader",
        }
        if reply.get("Filtered") and opts["Token"]:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return json_response(shape(reply.get("Result")), req, headers=headers)

    def authorize(self, req: Request) -> Any:
        try:
            return self.agent.resolve(self.token(req))
        except RPCError as e:
            raise ApiError(rpc_error_status(str(e)), str(e)) from None

    # -- status / catalog / health ------------------------------------------------------
    def status_leader(self, req: Request) -> Response:
        return json_response(self.rpc("Status.Leader", {})["Result"], req)

    def status_peers(self, req: Request) -> Response:
        return json_response(self.rpc("Status.Peers", {})["Result"], req)

    def catalog_datacenters(self, req: Request) -> Response:
        return json_response([self.agent.rc.datacenter], req)

    def catalog_services(self, req: Request) -> Response:
        return self.read(req, "Catalog.ListServices", {})

    def catalog_service(self, req: Request, name: str) -> Response:
        return self.read(
            req,
            "Catalog.ServiceNodes",
            {"ServiceName": name, "ServiceTags": req.query.get("tag", [])},
        )

    def catalog_nodes(self, req: Request) -> Response:
        return self.read(req, "Catalog.ListNodes", {})

    def catalog_node(self, req: Request, node: str) -> Response:
        return self.read(req, "Catalog.NodeServices", {"Node": node})

    def health_service(self, req: Request, name: str) -> Response:
        return self.read(
            req,
            "Health.ServiceNodes",
            {
                "ServiceName": name,
                "ServiceTags": req.query.get("tag", []),
                "Passing": req.qbool("passing"),
            },
        )

    def health_checks(self, req: Request, name: str) -> Response:
        return self.read(req, "Health.ServiceChecks", {"ServiceName": name})

    def health_state(self, req: Request, state: str) -> Response:
        if state not in ("any", PASSING, WARNING, CRITICAL):
            raise ApiError(400, f"Invalid state: {state}")
        return self.read(req, "Health.ChecksInState", {"State": state})

    def health_node(self, req: Request, node: str) -> Response:
        return self.read(req, "Health.NodeChecks", {"Node": node})

    def raft_configuration(self, req: Request) -> Response:
        opts = self.query_options(req)
        opts.pop("MinQueryIndex", None)  # not a blocking endpoint
        reply = self.rpc("Operator.RaftGetConfiguration", opts)
        return json_response(reply["Result"], req)
