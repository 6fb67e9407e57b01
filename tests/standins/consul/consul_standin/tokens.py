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
from typing import TYPE_CHECKING

from .acl import ALLOW_ALL, Authorizer
from .config import RuntimeConfig
from .util import Logger

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
    """Resolves secrets to authorizers (placeholder until ACLs are implemented)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def resolve(self, token: str) -> Authorizer:
        return ALLOW_ALL

    def accessor_id(self, token: str) -> str:
        return ""
