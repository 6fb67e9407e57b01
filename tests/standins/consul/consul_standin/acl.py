"""ACL policies and authorizers, as Consul 1.11's acl package evaluates them.

Rules come as HCL or JSON (acl/policy.go). For a resource name the exact
rule wins over the longest matching prefix rule (policy_authorizer.go
getPolicy); rules for the same name from several policies merge with
deny > write > list > read (policy_merger.go takesPrecedenceOver). A rule
grants: write -> read, list and write; list -> read and list; read -> read;
deny -> nothing. With no matching rule the default policy decides.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

PREFIXABLE = ("agent", "event", "key", "node", "query", "service", "session")
SINGLE = ("acl", "keyring", "mesh", "operator")
LEVELS = ("read", "list", "write", "deny")
_PRECEDENCE = {"deny": 4, "write": 3, "list": 2, "read": 1}
_GRANTS = {"write": {"read", "list", "write"}, "list": {"read", "list"}, "read": {"read"}}

GLOBAL_MANAGEMENT_ID = "00000000-0000-0000-0000-000000000001"
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
GLOBAL_MANAGEMENT_RULES = """
acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
mesh = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}"""


class PolicyError(Exception):
    pass


# -- HCL (the subset policies use) ---------------------------------------------------
_TOKEN = re.compile(
    r'\s+|#[^\n]*|//[^\n]*|/\*.*?\*/|(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)'
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_.\-]*)|(?P<punct>[={}\[\],])",
    re.S,
)


def _tokens(text: str) -> list[tuple[str, Any, int, int]]:
    out, pos, line, col = [], 0, 1, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise PolicyError(f"At {line}:{col}: illegal char")
        kind = m.lastgroup
        if kind == "str":
            out.append(("str", json.loads(m.group()), line, col))
        elif kind == "num":
            out.append(("num", float(m.group()), line, col))
        elif kind:
            out.append((kind, m.group(), line, col))
        chunk = m.group()
        line += chunk.count("\n")
        col = len(chunk) - chunk.rfind("\n") if "\n" in chunk else col + len(chunk)
        pos = m.end()
    return out


def parse_hcl(text: str) -> list[tuple[str, list[str], Any]]:
    """HCL1 into [(key, labels, value)]; a block's value is its own item list."""
    toks = _tokens(text)
    pos = 0

    def peek() -> tuple | None:
        return toks[pos] if pos < len(toks) else None

    def fail(msg: str) -> PolicyError:
        t = peek()
        where = f"At {t[2]}:{t[3]}" if t else "At EOF"
        return PolicyError(f"{where}: {msg}")

    def body(closing: bool) -> list:
        nonlocal pos
        items = []
        while True:
            t = peek()
            if t is None:
                if closing:
                    raise fail("object expected closing RBRACE got: EOF")
                return items
            if t[0] == "punct" and t[1] == "}" and closing:
                pos += 1
                return items
            if t[0] not in ("ident", "str"):
                raise fail(f"expected: IDENT | STRING got: {t[1]!r}")
            key = t[1]
            pos += 1
            labels = []
            while peek() and peek()[0] == "str":
                labels.append(peek()[1])
                pos += 1
            t = peek()
            if t and t[1] == "=":
                pos += 1
                items.append((key, labels, value()))
            elif t and t[1] == "{":
                pos += 1
                items.append((key, labels, body(True)))
            else:
                raise fail(f"key '{key}' expected start of object ('{{') or assignment ('=')")
            if peek() and peek()[1] == ",":
                pos += 1

    def value() -> Any:
        nonlocal pos
        t = peek()
        if t is None:
            raise fail("expected value")
        pos += 1
        if t[0] in ("str", "num"):
            return t[1]
        if t[0] == "ident" and t[1] in ("true", "false"):
            return t[1] == "true"
        if t[1] == "{":
            return body(True)
        if t[1] == "[":
            values = []
            while peek() and peek()[1] != "]":
                values.append(value())
                if peek() and peek()[1] == ",":
                    pos += 1
            if peek() is None:
                raise fail("list expected closing RBRACK")
            pos += 1
            return values
        raise fail(f"unexpected token {t[1]!r}")

    return body(False)


def _json_items(data: Any) -> list[tuple[str, list[str], Any]]:
    """HCL's JSON form into the same [(key, labels, value)] shape."""
    if not isinstance(data, dict):
        raise PolicyError("JSON rules must be an object")
    items = []
    for key, value in data.items():
        for v in value if isinstance(value, list) else [value]:
            if key in PREFIXABLE or key.removesuffix("_prefix") in PREFIXABLE:
                if not isinstance(v, dict):
                    raise PolicyError(f"{key}: expected an object of names")
                for name, block in v.items():
                    items.append(
                        (key, [name], _json_items(block) if isinstance(block, dict) else block)
                    )
            else:
                items.append((key, [], _json_items(v) if isinstance(v, dict) else v))
    return items


@dataclass(frozen=True)
class Rule:
    resource: str  # node, service, agent, key, ...
    name: str
    prefix: bool
    policy: str


def parse_rules(text: str) -> list[Rule]:
    """A policy's Rules (HCL or JSON) into rules; PolicyError on bad input."""
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("{"):
        try:
            items = _json_items(json.loads(stripped))
        except ValueError as e:
            raise PolicyError(f"Failed to parse ACL rules: {e}") from None
    else:
        try:
            items = parse_hcl(text)
        except PolicyError as e:
            raise PolicyError(f"Failed to parse ACL rules: {e}") from None
    rules = []
    for key, labels, value in items:
        base = key.removesuffix("_prefix")
        if key in SINGLE:
            if value not in LEVELS or (value == "list" and key != "key"):
                raise PolicyError(f'Invalid {key} policy: "{value}"')
            rules.append(Rule(key, "", False, value))
        elif base in PREFIXABLE:
            if len(labels) != 1 or not isinstance(value, list):
                raise PolicyError(f"Failed to parse ACL rules: {key} needs a name and a block")
            fields = {k: v for k, _, v in value}
            policy = fields.get("policy", "")
            allowed = LEVELS if base == "key" else ("read", "write", "deny")
            if policy not in allowed:
                rule = "KeyRule" if base == "key" else f"{base.capitalize()}Rule"
                raise PolicyError(
                    f"Invalid {key.replace('_', ' ')} policy: "
                    f'&acl.{rule}{{Name:"{labels[0]}", Policy:"{policy}"}}'
                )
            rules.append(Rule(base, labels[0], key.endswith("_prefix"), policy))
        # Unknown keys are ignored, as Consul's HCL decoding does.
    return rules


@dataclass
class Authorizer:
    """A token's compiled rules over a default ("allow", "deny" or "manage")."""

    rules: list[Rule] = field(default_factory=list)
    default: str = "deny"
    accessor_id: str = ""

    @classmethod
    def manage(cls, accessor_id: str = "") -> Authorizer:
        return cls([], "manage", accessor_id)

    @classmethod
    def from_wire(cls, data: dict) -> Authorizer:
        rules = [Rule(r[0], r[1], bool(r[2]), r[3]) for r in data.get("rules", [])]
        return cls(rules, data.get("default", "deny"), data.get("accessor_id", ""))

    def wire(self) -> dict:
        rules = [[r.resource, r.name, r.prefix, r.policy] for r in self.rules]
        return {"rules": rules, "default": self.default, "accessor_id": self.accessor_id}

    def _policy(self, resource: str, name: str) -> str | None:
        exact = [
            r.policy
            for r in self.rules
            if r.resource == resource and not r.prefix and r.name == name
        ]
        if exact:
            return max(exact, key=_PRECEDENCE.__getitem__)
        prefixes = [
            r for r in self.rules if r.resource == resource and r.prefix and name.startswith(r.name)
        ]
        if not prefixes:
            return None
        longest = max(len(r.name) for r in prefixes)
        return max(
            (r.policy for r in prefixes if len(r.name) == longest), key=_PRECEDENCE.__getitem__
        )

    def allowed(self, resource: str, name: str, access: str) -> bool:
        if self.default == "manage":
            return True
        policy = self._policy(resource, name)
        if policy is None:
            # acl.AllowAll allows everything but managing ACLs (static_authorizer.go).
            return self.default == "allow" and resource != "acl"
        return access in _GRANTS.get(policy, set())

    def node_read(self, name: str) -> bool:
        return self.allowed("node", name, "read")

    def node_write(self, name: str) -> bool:
        return self.allowed("node", name, "write")

    def service_read(self, name: str) -> bool:
        return self.allowed("service", name, "read")

    def service_write(self, name: str) -> bool:
        return self.allowed("service", name, "write")

    def agent_read(self, name: str) -> bool:
        return self.allowed("agent", name, "read")

    def agent_write(self, name: str) -> bool:
        return self.allowed("agent", name, "write")

    def operator_read(self) -> bool:
        return self.allowed("operator", "", "read")

    def operator_write(self) -> bool:
        return self.allowed("operator", "", "write")

    def acl_read(self) -> bool:
        return self.allowed("acl", "", "read")

    def acl_write(self) -> bool:
        return self.allowed("acl", "", "write")


ALLOW_ALL = Authorizer([], "manage")  # ACLs disabled
