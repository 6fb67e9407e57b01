"""The /v1/acl endpoints (placeholder until ACLs are implemented)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .http_api import HttpApi


def routes(api: HttpApi) -> list[tuple[str, str, Any]]:
    return []
