"""The Consul stand-in's ACL rules: parsing and evaluation as Consul 1.11's acl package does."""

from __future__ import annotations

import pytest

from tests.support.consul_standin import acl

AGENT_TOKEN = """
node "node1" {
  policy = "write"
}
service_prefix "" {
  policy = "read"
}
"""
PERSON_TOKEN = """
# what a person (UI, labctl verify / watch) may read
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
agent_prefix "" { policy = "read" }
operator = "read"
"""


def authz(*rules: str, default: str = "deny") -> acl.Authorizer:
    return acl.Authorizer([r for text in rules for r in acl.parse_rules(text)], default)


def test_hcl_and_json_rules_mean_the_same() -> None:
    """acl/policy.go parses HCL and its JSON form into the same rules."""
    as_json = '{"node": {"node1": {"policy": "write"}}, "service_prefix": {"": {"policy": "read"}}}'
    assert acl.parse_rules(AGENT_TOKEN) == acl.parse_rules(as_json)
    assert acl.parse_rules('operator = "read"\nacl = "write"') == [
        acl.Rule("operator", "", False, "read"),
        acl.Rule("acl", "", False, "write"),
    ]


def test_the_lab_agent_token() -> None:
    a = authz(AGENT_TOKEN)
    assert a.node_write("node1") and a.node_read("node1")
    assert not a.node_write("node2") and not a.node_read("node2")
    assert a.service_read("zhibo_service") and not a.service_write("zhibo_service")
    assert not a.agent_read("node1") and not a.operator_read() and not a.acl_read()


def test_the_lab_person_token_reads_but_writes_nothing() -> None:
    a = authz(PERSON_TOKEN)
    assert a.service_read("x") and a.node_read("n") and a.agent_read("n") and a.operator_read()
    assert not any(
        [
            a.service_write("x"),
            a.node_write("n"),
            a.agent_write("n"),
            a.operator_write(),
            a.acl_read(),
        ]
    )


def test_exact_rule_wins_over_the_longest_prefix() -> None:
    """policy_authorizer.go getPolicy: an exact match wins; otherwise the longest prefix."""
    a = authz(
        'node "db1" { policy = "deny" }',
        'node_prefix "" { policy = "write" }',
        'node_prefix "db" { policy = "read" }',
    )
    assert not a.node_read("db1")
    assert a.node_read("db2") and not a.node_write("db2")
    assert a.node_write("web1")


def test_rules_for_one_name_merge_with_deny_winning() -> None:
    """policy_merger.go takesPrecedenceOver: deny > write > list > read."""
    assert authz(
        'service "a" { policy = "read" }', 'service "a" { policy = "write" }'
    ).service_write("a")
    assert not authz(
        'service "a" { policy = "write" }', 'service "a" { policy = "deny" }'
    ).service_read("a")


def test_default_policy() -> None:
    """With no matching rule the default policy decides; allow-all never manages ACLs."""
    assert not authz(default="deny").service_read("x")
    allow = authz(default="allow")
    assert allow.service_write("x") and allow.operator_write() and not allow.acl_read()
    assert acl.Authorizer.manage().acl_write()


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            'node "a" { policy = "bogus" }',
            'Invalid node policy: &acl.NodeRule{Name:"a", Policy:"bogus"}',
        ),
        ('operator = "list"', 'Invalid operator policy: "list"'),
        (
            'node "a" {',
            "Failed to parse ACL rules: At EOF: object expected closing RBRACE got: EOF",
        ),
    ],
)
def test_bad_rules_are_refused(rules: str, message: str) -> None:
    with pytest.raises(acl.PolicyError) as e:
        acl.parse_rules(rules)
    assert str(e.value) == message
