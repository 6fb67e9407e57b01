"""The agent's own ACL tokens, and resolving a request's token to an authorizer.

agent/token/store.go (1.11): the `default` (user) token serves requests that
carry none; the `agent` token is the agent's own (node info sync), falling
back to the default one; tokens set through /v1/agent/token/<kind> persist in
data_dir/acl-tokens.json when acl.enable_token_persistence is on.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import TYPE_CHECKING

from .acl import ALLOW_ALL, Authorizer
from .acl_store import agent_recovery_authorizer
from .config import RuntimeConfig
from .util import ACL_NOT_FOUND, Logger, RPCError

if TYPE_CHECKING:
    from .agent import Agent

PERSIST_FILE = "acl-tokens.json"
# /v1/agent/token/<kind>: kind -> slot (the 1.11 names and their deprecated aliases).
TOKEN_KINDS = {
    "default": "default",
    "acl_token": "default",
    "agent": "agent",
    "acl_agent_token": "agent",
    "agent_recovery": "agent_recovery",
    "agent_master": "agent_recovery",
    "acl_agent_master_token": "agent_recovery",
    "replication": "replication",
    "acl_replication_token": "replication",
}


class TokenStore:
    def __init__(self, rc: RuntimeConfig, data_dir: str, log: Logger) -> None:
        self.lock = threading.Lock()
        self.persist = rc.acl.enable_token_persistence and bool(data_dir)
        self.path = os.path.join(data_dir, PERSIST_FILE) if data_dir else ""
        self.tokens = {
            "default": rc.acl.default,
            "agent": rc.acl.agent,
            "agent_recovery": rc.acl.agent_recovery,
            "replication": rc.acl.replication,
        }
        if self.persist and os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    saved = json.load(f)
                self.tokens.update({k: v for k, v in saved.items() if k in self.tokens and v})
            except (OSError, ValueError) as e:
                log.warn("agent", "unable to load persisted tokens", error=str(e))

    def user_token(self) -> str:
        with self.lock:
            return self.tokens["default"]

    def agent_token(self) -> str:
        with self.lock:
            return self.tokens["agent"] or self.tokens["default"]

    def agent_recovery(self) -> str:
        with self.lock:
            return self.tokens["agent_recovery"]

    def set(self, slot: str, secret: str) -> None:
        with self.lock:
            self.tokens[slot] = secret
            if not self.persist:
                return
            saved = {}
            if os.path.exists(self.path):
                with open(self.path, encoding="utf-8") as f:
                    saved = json.load(f)
            saved[slot] = secret
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(saved, f)
            os.replace(tmp, self.path)


class TokenResolver:
    """acl.go ACLResolver on an agent: servers answer from their state; a client asks a
    server and caches the answer for acl.token_ttl (30 s), so a changed or deleted token
    keeps its old rights there that long; when no server answers, acl.down_policy decides
    (extend-cache: the cached answer, else deny)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.lock = threading.Lock()
        self.cache: dict[str, tuple[Authorizer, float]] = {}

    def resolve(self, token: str) -> Authorizer:
        agent, acl = self.agent, self.agent.rc.acl
        if not acl.enabled:
            return ALLOW_ALL
        if token and token == agent.tokens.agent_recovery():
            return agent_recovery_authorizer(agent.name)
        if agent.server:
            return agent.server.acl.resolve(token)
        now = time.monotonic()
        with self.lock:
            cached = self.cache.get(token)
        if cached and now - cached[1] < acl.token_ttl:
            return cached[0]
        try:
            reply = agent.rpc("ACL.Authorize", {"Token": token})
        except RPCError as e:
            if ACL_NOT_FOUND in str(e):
                with self.lock:
                    self.cache.pop(token, None)
                raise RPCError(ACL_NOT_FOUND) from None
            if acl.down_policy in ("extend-cache", "async-cache") and cached:
                return cached[0]
            return Authorizer([], "allow" if acl.down_policy == "allow" else "deny")
        authz = Authorizer.from_wire(reply["Result"])
        with self.lock:
            self.cache[token] = (authz, now)
        return authz

    def accessor_id(self, token: str) -> str:
        """For log lines: the token's accessor ID, never its secret."""
        try:
            return self.resolve(token).accessor_id
        except RPCError:
            return ""
