"""The /v1/acl endpoints and /v1/agent/token/<kind> (agent/acl_endpoint.go, 1.11).

With ACLs disabled every one answers 401 "ACL support disabled". A missing
policy or token is 403 "ACL not found", exactly: the RPC finds nothing without
an error and the endpoint itself returns acl.ErrNotFound (ACLPolicyRead, ACLTokenGet:
`if out.Policy == nil { return nil, acl.ErrNotFound }`), which http.go answers
403 with its text (seen on 1.8 and 1.9: hashicorp/consul#8428, #9933);
a second bootstrap is 403 "Permission denied: ACL bootstrap no longer allowed
(reset index: N)"; other refusals from the servers are 500 with their text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .http_server import Request, Response, empty_ok, json_response
from .tokens import TOKEN_KINDS
from .util import ACL_NOT_FOUND, PERMISSION_DENIED, ApiError, RPCError, rpc_error_status

if TYPE_CHECKING:
    from .http_api import HttpApi


class ACLEndpoints:
    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self.agent = api.agent

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("PUT", r"/v1/acl/bootstrap", self.bootstrap),
            ("PUT", r"/v1/acl/policy", self.policy_create),
            ("GET", r"/v1/acl/policies", self.policy_list),
            ("GET", r"/v1/acl/policy/name/(?P<name>.+)", self.policy_by_name),
            ("GET PUT DELETE", r"/v1/acl/policy/(?P<pid>.+)", self.policy),
            ("PUT", r"/v1/acl/token", self.token_create),
            ("GET", r"/v1/acl/tokens", self.token_list),
            ("GET", r"/v1/acl/token/self", self.token_self),
            ("GET PUT DELETE", r"/v1/acl/token/(?P<accessor>.+)", self.token),
            ("PUT", r"/v1/agent/token/(?P<kind>.+)", self.agent_token),
        ]

    def _enabled(self) -> None:
        if not self.agent.rc.acl.enabled:
            raise ApiError(401, "ACL support disabled")

    def _rpc(self, method: str, args: dict) -> dict:
        self._enabled()
        return self.api.rpc(method, args)

    def _read(self, req: Request, method: str, args: dict) -> Response:
        self._enabled()
        return self.api.read(req, method, args, _found)

    # -- bootstrap --------------------------------------------------------------------
    def bootstrap(self, req: Request) -> Response:
        self._enabled()
        try:
            reply = self.agent.rpc("ACL.Bootstrap", {})
        except RPCError as e:
            if "ACL bootstrap no longer allowed" in str(e):
                raise ApiError(403, f"{PERMISSION_DENIED}: {e}") from None
            raise ApiError(rpc_error_status(str(e)), str(e)) from None
        token = reply["Result"]
        return json_response(dict({"ID": token["SecretID"]}, **token), req)

    # -- policies ----------------------------------------------------------------------
    def _policy_body(self, req: Request) -> dict:
        body = req.json()
        if not isinstance(body, dict):
            raise ApiError(400, "Policy decoding failed: expected a JSON object")
        return body

    def policy_create(self, req: Request) -> Response:
        self._enabled()
        body = self._policy_body(req)
        if body.get("ID"):
            raise ApiError(400, "Cannot specify the ID when creating a new policy")
        reply = self._rpc("ACL.PolicySet", {"Token": self.api.token(req), "Policy": body})
        return json_response(reply["Result"], req)

    def policy_list(self, req: Request) -> Response:
        return self._read(req, "ACL.PolicyList", {})

    def policy_by_name(self, req: Request, name: str) -> Response:
        return self._read(req, "ACL.PolicyRead", {"PolicyName": name})

    def policy(self, req: Request, pid: str) -> Response:
        self._enabled()
        if req.method in ("GET", "HEAD"):
            return self._read(req, "ACL.PolicyRead", {"PolicyID": pid})
        if req.method == "DELETE":
            self._rpc("ACL.PolicyDelete", {"Token": self.api.token(req), "PolicyID": pid})
            return json_response(True, req)
        body = self._policy_body(req)
        if body.get("ID") and body["ID"] != pid:
            raise ApiError(400, "Policy ID in URL and payload do not match")
        body["ID"] = pid
        reply = self._rpc("ACL.PolicySet", {"Token": self.api.token(req), "Policy": body})
        return json_response(reply["Result"], req)

    # -- tokens ------------------------------------------------------------------------
    def _token_body(self, req: Request) -> dict:
        body = req.json()
        if not isinstance(body, dict):
            raise ApiError(400, "Token decoding failed: expected a JSON object")
        return body

    def token_create(self, req: Request) -> Response:
        self._enabled()
        reply = self._rpc(
            "ACL.TokenSet",
            {"Token": self.api.token(req), "Create": True, "ACLToken": self._token_body(req)},
        )
        return json_response(reply["Result"], req)

    def token_list(self, req: Request) -> Response:
        return self._read(req, "ACL.TokenList", {})

    def token_self(self, req: Request) -> Response:
        self._enabled()
        return self.api.read(
            req, "ACL.TokenRead", {"TokenID": self.api.token(req), "TokenIDType": "secret"}
        )

    def token(self, req: Request, accessor: str) -> Response:
        self._enabled()
        if req.method in ("GET", "HEAD"):
            return self.api.read(req, "ACL.TokenRead", {"TokenID": accessor}, _found)
        if req.method == "DELETE":
            self._rpc("ACL.TokenDelete", {"Token": self.api.token(req), "TokenID": accessor})
            return json_response(True, req)
        body = self._token_body(req)
        if body.get("AccessorID") and body["AccessorID"] != accessor:
            raise ApiError(400, "Token Accessor ID in URL and payload do not match")
        body["AccessorID"] = accessor
        reply = self._rpc("ACL.TokenSet", {"Token": self.api.token(req), "ACLToken": body})
        return json_response(reply["Result"], req)

    # -- agent tokens (agent_endpoint.go AgentToken) -------------------------------------
    def agent_token(self, req: Request, kind: str) -> Response:
        self._enabled()
        if not self.api.authorize(req).acl_write():
            raise ApiError(403, PERMISSION_DENIED)
        body = req.json()
        slot = TOKEN_KINDS.get(kind)
        if slot is None:
            raise ApiError(404, f'Token "{kind}" is unknown')
        self.agent.tokens.set(slot, str((body or {}).get("Token") or ""))
        if slot in ("default", "agent"):
            self.agent.syncer.sync_full.set()  # the node and services are re-synced with it
        self.agent.log.info("agent", "Updated agent's ACL token", token=kind)
        return empty_ok()


def _found(result: Any) -> Any:
    """A read's result, or 403 "ACL not found" when the servers found nothing."""
    if result is None:
        raise ApiError(403, ACL_NOT_FOUND)
    return result


def routes(api: HttpApi) -> list[tuple[str, str, Any]]:
    return ACLEndpoints(api).routes()
