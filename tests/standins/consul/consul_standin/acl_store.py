"""ACL tokens and policies on the servers: bootstrap, CRUD RPCs, token resolution.

Follows agent/consul/acl_endpoint.go and leader.go initializeACLs (1.11):
the leader creates the global-management policy, the anonymous token
(00000000-0000-0000-0000-000000000002) and the acl.tokens.initial_management
token (which uses up the one-time bootstrap); /v1/acl/bootstrap works once,
then "ACL bootstrap no longer allowed (reset index: N)". Writes need
acl:write, reads acl:read (secrets are "<hidden>" without acl:write); an
unknown token is "ACL not found". Tokens and policies live in the state store,
so they replicate to every server with it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .acl import (
    ALLOW_ALL,
    ANONYMOUS_ACCESSOR,
    GLOBAL_MANAGEMENT_ID,
    GLOBAL_MANAGEMENT_RULES,
    Authorizer,
    PolicyError,
    Rule,
    parse_rules,
)
from .util import ACL_NOT_FOUND, PERMISSION_DENIED, RPCError

if TYPE_CHECKING:
    from .server import ConsulServer
    from .state_store import StateStore

_POLICY_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,128}$")
_IDENTITY_NAME = re.compile(r"^[a-z0-9]([a-z0-9\-_]*[a-z0-9])?$")
REDACTED = "<hidden>"
BOOTSTRAP_NOT_ALLOWED = "ACL bootstrap no longer allowed"
# How long a new leader of a fresh cluster takes to create the global-management policy
# (see ACLServer.initialize); CONSUL_STANDIN_ACL_INIT_GAP changes it (seconds).
ACL_INIT_GAP_S = float(os.environ.get("CONSUL_STANDIN_ACL_INIT_GAP", "2"))


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z")


def _hash(*parts: Any) -> str:
    return base64.b64encode(hashlib.sha256(json.dumps(parts).encode()).digest()).decode()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def service_identity_rules(name: str) -> list[Rule]:
    """structs.ACLServiceIdentity.SyntheticPolicy."""
    return [
        Rule("service", name, False, "write"),
        Rule("service", f"{name}-sidecar-proxy", False, "write"),
        Rule("service", "", True, "read"),
        Rule("node", "", True, "read"),
    ]


def node_identity_rules(name: str) -> list[Rule]:
    """structs.ACLNodeIdentity.SyntheticPolicy."""
    return [Rule("node", name, False, "write"), Rule("service", "", True, "read")]


def agent_recovery_authorizer(node: str) -> Authorizer:
    """acl.tokens.agent_recovery: agent write on this node, node read everywhere (agent.go)."""
    return Authorizer(
        [Rule("agent", node, False, "write"), Rule("node", "", True, "read")],
        "deny",
        "agent-recovery",
    )


class ACLServer:
    def __init__(self, server: ConsulServer) -> None:
        self.server = server
        self.rc = server.agent.rc
        self.log = server.log
        self.handlers: dict[str, Callable[[Any, dict], dict]] = {
            "ACL.Authorize": lambda s, a: self.authorize(a),
            "ACL.Bootstrap": lambda s, a: self.bootstrap(a),
            "ACL.PolicySet": lambda s, a: self.policy_set(a),
            "ACL.PolicyRead": lambda s, a: self.policy_read(a),
            "ACL.PolicyList": lambda s, a: self.policy_list(a),
            "ACL.PolicyDelete": lambda s, a: self.policy_delete(a),
            "ACL.TokenSet": lambda s, a: self.token_set(a),
            "ACL.TokenRead": lambda s, a: self.token_read(a),
            "ACL.TokenList": lambda s, a: self.token_list(a),
            "ACL.TokenDelete": lambda s, a: self.token_delete(a),
        }

    @property
    def store(self) -> StateStore:
        return self.server.store

    # -- leader.go initializeACLs -------------------------------------------------------
    def initialize(self) -> None:
        if not self.rc.acl.enabled:
            return
        acl = self.store.acl
        if GLOBAL_MANAGEMENT_ID not in acl["policies"]:
            # The gap a fresh cluster opens after its first election: the leader is named
            # at once, but the policy exists only once this write is committed, and a
            # bootstrap before that fails (see bootstrap). Consul's gap is a barrier and
            # this Raft write, milliseconds to seconds with the disk and the load; the
            # stand-in holds the write ACL_INIT_GAP_S, so every client that bootstraps as
            # soon as a leader is named meets it here, not one run in twenty there.
            if self.server.stop_event.wait(ACL_INIT_GAP_S) or not self.server.raft.is_leader():
                return
            self.server.raft.apply(
                lambda s: self._put_policy(
                    s,
                    {
                        "ID": GLOBAL_MANAGEMENT_ID,
                        "Name": "global-management",
                        "Description": "Builtin Policy that grants unlimited access",
                        "Rules": GLOBAL_MANAGEMENT_RULES,
                    },
                )
            )
            self.log.info("agent.leader", "Created ACL 'global-management' policy")
        secret = self.rc.acl.initial_management
        if secret and self._by_secret(secret) is None:
            token = self._new_token(secret, "Initial Management Token", [GLOBAL_MANAGEMENT_ID])
            bootstrapped = acl["bootstrap_index"] == 0
            self.server.raft.apply(lambda s: self._put_token(s, token, bootstrap=bootstrapped))
            word = "Bootstrapped" if bootstrapped else "Created"
            self.log.info("agent.leader", f"{word} ACL initial management token from configuration")
        if ANONYMOUS_ACCESSOR not in acl["tokens"]:
            anonymous = self._new_token("anonymous", "Anonymous Token", [])
            anonymous["AccessorID"] = ANONYMOUS_ACCESSOR
            self.server.raft.apply(lambda s: self._put_token(s, anonymous))
            self.log.info("agent.leader", "Created ACL anonymous token from configuration")

    # -- records -------------------------------------------------------------------------
    @staticmethod
    def _new_token(secret: str, description: str, policies: list[str]) -> dict:
        return {
            "AccessorID": str(uuid.uuid4()),
            "SecretID": secret or str(uuid.uuid4()),
            "Description": description,
            "Policies": [{"ID": p} for p in policies],
            "ServiceIdentities": [],
            "NodeIdentities": [],
            "Local": False,
            "CreateTime": _now(),
        }

    @staticmethod
    def _put_token(s: StateStore, token: dict, bootstrap: bool = False) -> None:
        token = dict(
            token,
            Hash=_hash(
                token["Description"],
                token["Policies"],
                token["ServiceIdentities"],
                token["NodeIdentities"],
            ),
        )
        if s._upsert(s.acl["tokens"], token["AccessorID"], token):
            s.bump("acl-tokens")
        if bootstrap:
            s.acl["bootstrap_index"] = s._txn_index
            s.bump("acl-token-bootstrap")

    @staticmethod
    def _put_policy(s: StateStore, policy: dict) -> None:
        policy = dict(policy, Datacenters=policy.get("Datacenters") or [])
        policy["Hash"] = _hash(policy["Name"], policy["Description"], policy["Rules"])
        if s._upsert(s.acl["policies"], policy["ID"], policy):
            s.bump("acl-policies")

    def _by_secret(self, secret: str) -> dict | None:
        with self.store.lock:
            return next(
                (t for t in self.store.acl["tokens"].values() if t["SecretID"] == secret), None
            )

    def _policy_by_name(self, name: str) -> dict | None:
        with self.store.lock:
            return next((p for p in self.store.acl["policies"].values() if p["Name"] == name), None)

    def token_out(self, token: dict, redact: bool = False) -> dict:
        """The token as the API shows it: policy links with their current names."""
        policies = self.store.acl["policies"]
        out = {
            "AccessorID": token["AccessorID"],
            "SecretID": REDACTED if redact else token["SecretID"],
            "Description": token["Description"],
            "Policies": [
                {"ID": p["ID"], "Name": policies[p["ID"]]["Name"]}
                for p in token["Policies"]
                if p["ID"] in policies
            ],
        }
        if token["ServiceIdentities"]:
            out["ServiceIdentities"] = token["ServiceIdentities"]
        if token["NodeIdentities"]:
            out["NodeIdentities"] = token["NodeIdentities"]
        out.update(
            {
                "Local": token["Local"],
                "CreateTime": token["CreateTime"],
                "Hash": token["Hash"],
                "CreateIndex": token["CreateIndex"],
                "ModifyIndex": token["ModifyIndex"],
            }
        )
        return out

    # -- resolution (acl.go ACLResolver) ---------------------------------------------------
    def resolve(self, secret: str) -> Authorizer:
        if not self.rc.acl.enabled:
            return ALLOW_ALL
        if secret and secret == self.rc.acl.agent_recovery:
            return agent_recovery_authorizer(self.server.agent.name)
        token = self._by_secret(secret or "anonymous")
        if token is None:
            if not secret:  # the leader has not created the anonymous token yet
                return Authorizer([], self.rc.acl.default_policy, ANONYMOUS_ACCESSOR)
            raise RPCError(ACL_NOT_FOUND)
        rules: list[Rule] = []
        with self.store.lock:
            policies = self.store.acl["policies"]
            for link in token["Policies"]:
                if link["ID"] == GLOBAL_MANAGEMENT_ID:
                    return Authorizer.manage(token["AccessorID"])
                if link["ID"] in policies:
                    rules.extend(parse_rules(policies[link["ID"]]["Rules"]))
        for si in token["ServiceIdentities"]:
            rules.extend(service_identity_rules(si["ServiceName"]))
        for ni in token["NodeIdentities"]:
            rules.extend(node_identity_rules(ni["NodeName"]))
        return Authorizer(rules, self.rc.acl.default_policy, token["AccessorID"])

    def _require(self, args: dict, write: bool) -> Authorizer:
        if not self.rc.acl.enabled:
            raise RPCError("ACL support disabled")
        authz = self.resolve(args.get("Token") or "")
        if not (authz.acl_write() if write else authz.acl_read()):
            raise RPCError(PERMISSION_DENIED)
        return authz

    def authorize(self, args: dict) -> dict:
        """The stand-in's stand-in for ACL.TokenRead + ACL.PolicyResolve: a compiled token."""
        authz = self.resolve(args.get("Token") or "")
        return {"Result": authz.wire()}

    def _meta(self, index: int) -> dict:
        return {"Index": max(index, 1), **self.server.query_meta()}

    # -- bootstrap -------------------------------------------------------------------------
    def bootstrap(self, args: dict) -> dict:
        if not self.rc.acl.enabled:
            raise RPCError("ACL support disabled")
        token = self._new_token("", "Bootstrap Token (Global Management)", [GLOBAL_MANAGEMENT_ID])

        def write(s: StateStore) -> None:  # the one-time check belongs to the write itself
            if s.acl["bootstrap_index"]:
                raise RPCError(f"{BOOTSTRAP_NOT_ALLOWED} (reset index: {s.acl['bootstrap_index']})")
            # state/acl.go ACLBootstrap -> aclTokenSetTxn -> resolveTokenPolicyLinks: the
            # token links the global-management policy, which the leader makes only in
            # initializeACLs (see initialize): a bootstrap before that fails.
            if GLOBAL_MANAGEMENT_ID not in s.acl["policies"]:
                missing = f"No such policy with ID: {GLOBAL_MANAGEMENT_ID}"
                raise RPCError(f"failed inserting bootstrap token: {missing}")
            self._put_token(s, token, bootstrap=True)

        self.server.raft.apply(write)
        self.log.info("agent.server.acl", "ACL bootstrap completed")
        with self.store.lock:
            return {"Result": self.token_out(self.store.acl["tokens"][token["AccessorID"]])}

    # -- policies --------------------------------------------------------------------------
    def policy_set(self, args: dict) -> dict:
        self._require(args, write=True)
        policy = args["Policy"]
        name = str(policy.get("Name") or "")
        if not name:
            raise RPCError("Invalid Policy: no Name is set")
        if not _POLICY_NAME.match(name):
            raise RPCError(
                "Invalid Policy: invalid Name. Only alphanumeric characters, "
                "'-' and '_' are allowed"
            )
        pid = str(policy.get("ID") or "")
        same_name = self._policy_by_name(name)
        with self.store.lock:
            existing = self.store.acl["policies"].get(pid) if pid else None
        if not pid:
            if same_name is not None:
                raise RPCError(f'Invalid Policy: A Policy with Name "{name}" already exists')
            pid = str(uuid.uuid4())
        else:
            if not _is_uuid(pid):
                raise RPCError("Policy ID invalid UUID")
            if existing is None:
                raise RPCError(f"cannot find policy {pid}")
            if existing["Name"] != name and same_name is not None:
                raise RPCError(f'Invalid Policy: A policy with name "{name}" already exists')
            if pid == GLOBAL_MANAGEMENT_ID and policy.get("Rules", "") != existing["Rules"]:
                raise RPCError(
                    "Changing the Rules for the builtin global-management policy is not permitted"
                )
        rules = str(policy.get("Rules") or "")
        try:
            parse_rules(rules)
        except PolicyError as e:
            raise RPCError(str(e)) from None
        record = {
            "ID": pid,
            "Name": name,
            "Description": str(policy.get("Description") or ""),
            "Rules": rules,
            "Datacenters": list(policy.get("Datacenters") or []),
        }
        self.server.raft.apply(lambda s: self._put_policy(s, record))
        with self.store.lock:
            return {"Result": dict(self.store.acl["policies"][pid])}

    def policy_read(self, args: dict) -> dict:
        """A missing policy is no error here but a None Result, as in acl_endpoint.go
        PolicyRead (reply.Policy = policy); the HTTP endpoint turns it into 403 "ACL not
        found" itself, so no server relaying the RPC puts "rpc error making call:" in front."""
        self._require(args, write=False)
        with self.store.lock:
            if args.get("PolicyID"):
                policy = self.store.acl["policies"].get(args["PolicyID"])
            else:
                policy = self._policy_by_name(args.get("PolicyName", ""))
            return {
                "Result": dict(policy) if policy is not None else None,
                **self._meta(self.store.max_index("acl-policies")),
            }

    def policy_list(self, args: dict) -> dict:
        self._require(args, write=False)
        with self.store.lock:
            stubs = [
                {
                    k: p[k]
                    for k in (
                        "ID",
                        "Name",
                        "Description",
                        "Datacenters",
                        "Hash",
                        "CreateIndex",
                        "ModifyIndex",
                    )
                }
                for p in sorted(self.store.acl["policies"].values(), key=lambda p: p["Name"])
            ]
            return {"Result": stubs, **self._meta(self.store.max_index("acl-policies"))}

    def policy_delete(self, args: dict) -> dict:
        self._require(args, write=True)
        pid = args["PolicyID"]
        with self.store.lock:
            policy = self.store.acl["policies"].get(pid)
        if policy is None:
            return {"Result": ""}
        if pid == GLOBAL_MANAGEMENT_ID:
            raise RPCError("Delete operation not permitted on the builtin global-management policy")

        def write(s: StateStore) -> None:
            del s.acl["policies"][pid]
            s.bump("acl-policies")

        self.server.raft.apply(write)
        return {"Result": policy["Name"]}

    # -- tokens ----------------------------------------------------------------------------
    def _policy_links(self, links: list[dict]) -> list[dict]:
        out: list[dict] = []
        for link in links or []:
            if link.get("ID"):
                with self.store.lock:
                    if link["ID"] not in self.store.acl["policies"]:
                        raise RPCError(f'No such ACL policy with ID "{link["ID"]}"')
                pid = link["ID"]
            else:
                policy = self._policy_by_name(str(link.get("Name") or ""))
                if policy is None:
                    raise RPCError(f'No such ACL policy with name "{link.get("Name", "")}"')
                pid = policy["ID"]
            if {"ID": pid} not in out:
                out.append({"ID": pid})
        return out

    def token_set(self, args: dict) -> dict:
        self._require(args, write=True)
        body = args["ACLToken"]
        accessor = str(body.get("AccessorID") or "")
        secret = str(body.get("SecretID") or "")
        with self.store.lock:
            existing = self.store.acl["tokens"].get(accessor) if accessor else None
        if not accessor or args.get("Create"):
            if accessor and not _is_uuid(accessor):
                raise RPCError("Invalid Token: AccessorID is not a valid UUID")
            if existing is not None:
                raise RPCError("Invalid Token: AccessorID is already in use")
            if secret and not _is_uuid(secret):
                raise RPCError("Invalid Token: SecretID is not a valid UUID")
            if secret and self._by_secret(secret) is not None:
                raise RPCError("Invalid Token: SecretID is already in use")
            token = self._new_token(secret, "", [])
            if accessor:
                token["AccessorID"] = accessor
        else:
            if existing is None:
                raise RPCError(f'Cannot find token "{accessor}"')
            if secret and secret != existing["SecretID"]:
                raise RPCError("Changing a tokens SecretID is not permitted")
            token = dict(existing)
        token["Description"] = str(body.get("Description") or "")
        token["Local"] = bool(body.get("Local", token["Local"]))
        token["Policies"] = self._policy_links(body.get("Policies") or [])
        token["ServiceIdentities"] = self._identities(body, "ServiceIdentities", "ServiceName")
        token["NodeIdentities"] = self._identities(body, "NodeIdentities", "NodeName")
        self.server.raft.apply(lambda s: self._put_token(s, token))
        with self.store.lock:
            return {"Result": self.token_out(self.store.acl["tokens"][token["AccessorID"]])}

    @staticmethod
    def _identities(body: dict, key: str, name_key: str) -> list[dict]:
        out = []
        for ident in body.get(key) or []:
            name = str(ident.get(name_key) or "")
            kind = "Service" if key == "ServiceIdentities" else "Node"
            if not name:
                raise RPCError(
                    f"{kind} identity is missing the {kind.lower()} name field on this token"
                )
            if not _IDENTITY_NAME.match(name):
                raise RPCError(
                    f'{kind} identity "{name}" has an invalid name. Only alphanumeric '
                    "characters, '-' and '_' are allowed"
                )
            if kind == "Node" and not ident.get("Datacenter"):
                raise RPCError("Node identity is missing the datacenter field on this token")
            out.append(dict(ident))
        return out

    def token_read(self, args: dict) -> dict:
        if not self.rc.acl.enabled:
            raise RPCError("ACL support disabled")
        redact = False
        if args.get("TokenIDType") == "secret":  # /v1/acl/token/self: the secret is enough
            token = self._by_secret(args.get("TokenID") or "anonymous")
            if token is None:
                raise RPCError(ACL_NOT_FOUND)
        else:
            authz = self._require(args, write=False)
            redact = not authz.acl_write()
            with self.store.lock:
                token = self.store.acl["tokens"].get(args.get("TokenID", ""))
            if token is None:  # as policy_read: the HTTP endpoint says "ACL not found"
                return {"Result": None, **self._meta(self.store.max_index("acl-tokens"))}
        with self.store.lock:
            return {
                "Result": self.token_out(token, redact),
                **self._meta(self.store.max_index("acl-tokens")),
            }

    def token_list(self, args: dict) -> dict:
        authz = self._require(args, write=False)
        redact = not authz.acl_write()
        with self.store.lock:
            tokens = sorted(self.store.acl["tokens"].values(), key=lambda t: t["CreateIndex"])
            stubs = [self.token_out(t, redact) for t in tokens]
            return {"Result": stubs, **self._meta(self.store.max_index("acl-tokens"))}

    def token_delete(self, args: dict) -> dict:
        self._require(args, write=True)
        accessor = str(args.get("TokenID") or "")
        if not _is_uuid(accessor):
            raise RPCError("Accessor ID is missing or an invalid UUID")
        if accessor == ANONYMOUS_ACCESSOR:
            raise RPCError("Delete operation not permitted on the anonymous token")
        with self.store.lock:
            token = self.store.acl["tokens"].get(accessor)
        if token is None:
            return {"Result": ""}
        if args.get("Token") == token["SecretID"]:
            raise RPCError("Deletion of the request's authorization token is not permitted")

        def write(s: StateStore) -> None:
            del s.acl["tokens"][accessor]
            s.bump("acl-tokens")

        self.server.raft.apply(write)
        return {"Result": accessor}
