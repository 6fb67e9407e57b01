"""ACL tokens and policies on the servers (placeholder until ACLs are implemented)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .acl import ALLOW_ALL, Authorizer

if TYPE_CHECKING:
    from .server import ConsulServer


class ACLServer:
    def __init__(self, server: ConsulServer) -> None:
        self.server = server
        self.handlers: dict[str, Callable[[Any, dict], dict]] = {}

    def initialize(self) -> None:
        pass

    def resolve(self, token: str) -> Authorizer:
        return ALLOW_ALL
