"""The Consul stand-in secured as the lab will be: gossip encryption, ACLs with default deny.

A module-wide server + client on 127.0.0.41/.42 sharing a gossip key, ACLs enabled with
default_policy deny and acl.tokens.initial_management on the server; the client starts
without an agent token. Messages and status codes are Consul 1.11's (agent/http.go,
acl/errors.go, agent/consul/acl_endpoint.go).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.consul_standin import (
    FAST_RAFT,
    AgentProc,
    call,
    free_port,
    get_json,
    json_if_ok,
    run_cli,
    wait_for,
)

MANAGEMENT = "4b0f5d36-0000-4000-8000-00000000a11c"
KEY = base64.b64encode(b"lab-gossip-key-0123456789abcdef!").decode()


def secure_config(**acl_extra) -> dict:
    return dict(
        FAST_RAFT,
        encrypt=KEY,
        acl={
            "enabled": True,
            "default_policy": "deny",
            "down_policy": "extend-cache",
            "enable_token_persistence": True,
            **acl_extra,
        },
    )


class Secure:
    def __init__(self, server: AgentProc, client: AgentProc) -> None:
        self.server, self.client = server, client

    def put(self, path: str, body: object = None, token: str = MANAGEMENT) -> tuple[int, bytes]:
        status, _, text = call("PUT", self.client.base + path, body, token=token)
        return status, text

    def policy(self, name: str, rules: str) -> dict:
        status, text = self.put("/v1/acl/policy", {"Name": name, "Rules": rules})
        assert status == 200, text
        return json.loads(text)

    def token(self, description: str, *policies: str, **extra: object) -> str:
        body = {"Description": description, "Policies": [{"Name": p} for p in policies], **extra}
        status, text = self.put("/v1/acl/token", body)
        assert status == 200, text
        return json.loads(text)["SecretID"]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    work = tmp_path_factory.mktemp("consul-secure")
    ips = ["127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44"]
    http_port, serf_port = free_port(ips), free_port(ips)
    server = AgentProc(
        work,
        "node1",
        ips[0],
        http_port,
        serf_port,
        secure_config(tokens={"initial_management": MANAGEMENT}),
    )
    client = AgentProc(work, "node3", ips[1], http_port, serf_port, secure_config())
    try:
        server.start("-server", "-bootstrap-expect=1")
        # The initial management token exists once the leader has initialized its ACLs,
        # a while after it is named (test_a_bootstrap_in_the_new_leaders_gap_fails).
        wait_for(lambda: json_if_ok(server.base + "/v1/acl/token/self", MANAGEMENT), 20,
                 "the initial management token")  # fmt: skip
        client.start(f"-retry-join={server.serf_addr}")
        members = server.base + "/v1/agent/members"
        wait_for(lambda: "node3" in {m["Name"] for m in json_if_ok(members, MANAGEMENT) or []},
                 20, "node3 in the pool")  # fmt: skip
        yield Secure(server, client)
    finally:
        server.kill()
        client.kill()


def test_bootstrap_is_used_up_by_the_initial_management_token(secure: Secure) -> None:
    """leader.go initializeACLs bootstraps with acl.tokens.initial_management, so
    /v1/acl/bootstrap answers 403 "Permission denied: ACL bootstrap no longer allowed
    (reset index: N)" (acl_endpoint.go ACLBootstrap)."""
    status, text = secure.put("/v1/acl/bootstrap", token="")
    assert status == 403
    assert text.decode().startswith(
        "Permission denied: rpc error making call: ACL bootstrap no longer allowed (reset index: "
    )


def test_a_bootstrap_in_the_new_leaders_gap_fails_then_works_once(tmp_path: Path) -> None:
    """The gap after a fresh cluster's first election, as Consul 1.11 opens it:
    /v1/status/leader (status_endpoint.go Leader: raft.Leader()) names the leader as soon as
    Raft elects it, but the leader creates the global-management policy only afterwards,
    in leader.go leaderLoop -> a Raft barrier -> establishLeadership -> initializeACLs
    ("Created ACL 'global-management' policy", a raftApply of its own). acl_endpoint.go
    BootstrapTokens waits for none of it, and its token links that policy, so
    state/acl.go ACLBootstrap fails in aclTokenSetTxn -> resolveTokenPolicyLinks:
    500 "failed inserting bootstrap token: No such policy with ID: 0000...0001". Once
    the policy is written the bootstrap works, once."""
    port, serf = free_port(["127.0.0.45"]), free_port(["127.0.0.45"])
    agent = AgentProc(tmp_path, "boot", "127.0.0.45", port, serf, secure_config())
    try:
        agent.start("-server", "-bootstrap-expect=1")
        wait_for(lambda: json_if_ok(agent.base + "/v1/status/leader"), 20, "a leader")
        status, _, body = call("PUT", agent.base + "/v1/acl/bootstrap")
        assert (status, body) == (500, b"failed inserting bootstrap token: No such policy "
                                  b"with ID: 00000000-0000-0000-0000-000000000001")  # fmt: skip

        def bootstrapped() -> tuple[int, bytes] | None:
            status, _, body = call("PUT", agent.base + "/v1/acl/bootstrap")
            return (status, body) if status != 500 else None

        status, body = wait_for(bootstrapped, 20, "the policy, then a bootstrap", interval=0.5)
        assert status == 200, body
        assert "Created ACL 'global-management' policy" in agent.log()
        token = json.loads(body)
        assert token["Description"] == "Bootstrap Token (Global Management)"
        assert token["Policies"] == [
            {"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}
        ]
        assert token["ID"] == token["SecretID"]
        status, _, body = call("PUT", agent.base + "/v1/acl/bootstrap")
        assert status == 403
        assert body.decode().startswith("Permission denied: ACL bootstrap no longer allowed")
        assert get_json(agent.base + "/v1/agent/members", token["SecretID"])
    finally:
        agent.kill()


def test_anonymous_requests_with_default_deny(secure: Secure) -> None:
    """The anonymous token (no policies) with default_policy deny: lists come back empty,
    agent:read and operator:read endpoints refuse, status/leader stays open."""
    base = secure.client.base
    assert get_json(base + "/v1/agent/members") == []
    status, headers, body = call("GET", base + "/v1/catalog/services")
    assert (status, json.loads(body)) == (200, {})
    assert "X-Consul-Results-Filtered-By-ACLs" not in headers  # only for authenticated calls
    assert get_json(base + "/v1/status/leader") == f"{secure.server.ip}:8300"
    assert call("GET", base + "/v1/agent/self")[::2] == (403, b"Permission denied")
    status, _, body = call("GET", base + "/v1/operator/raft/configuration")
    assert (status, body) == (403, b"rpc error making call: Permission denied")


def test_an_unknown_token_is_acl_not_found(secure: Secure) -> None:
    bogus = "9d3f7c1e-1111-4222-8333-444455556666"
    assert call("GET", secure.client.base + "/v1/agent/services", token=bogus)[::2] == (
        403,
        b"ACL not found",
    )
    status, _, body = call("GET", secure.client.base + "/v1/catalog/services", token=bogus)
    assert (status, body) == (403, b"rpc error making call: ACL not found")


def test_tokens_come_from_the_header_bearer_or_query(secure: Secure) -> None:
    """http.go parseTokenInternal: ?token=, X-Consul-Token, Authorization: Bearer."""
    url = secure.client.base + "/v1/agent/members"
    assert get_json(url, MANAGEMENT)
    assert json_if_ok(f"{url}?token={MANAGEMENT}")
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {MANAGEMENT}"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req) as resp:
        assert json.loads(resp.read())


def test_policy_and_token_crud(secure: Secure) -> None:
    policy = secure.policy("crud-read", 'service_prefix "" { policy = "read" }')
    base = secure.client.base
    assert get_json(base + f"/v1/acl/policy/{policy['ID']}", MANAGEMENT)["Name"] == "crud-read"
    assert get_json(base + "/v1/acl/policy/name/crud-read", MANAGEMENT)["ID"] == policy["ID"]
    assert "crud-read" in {p["Name"] for p in get_json(base + "/v1/acl/policies", MANAGEMENT)}
    status, text = secure.put("/v1/acl/policy", {"Name": "crud-read", "Rules": ""})
    assert (status, text) == (
        500,
        b'rpc error making call: Invalid Policy: A Policy with Name "crud-read" already exists',
    )
    status, text = secure.put(
        "/v1/acl/policy", {"Name": "bad", "Rules": 'node "a" { policy = "x" }'}
    )
    assert status == 500 and b"Invalid node policy" in text

    secret = secure.token("crud", "crud-read")
    self_ = get_json(base + "/v1/acl/token/self", secret)
    assert self_["Policies"] == [{"ID": policy["ID"], "Name": "crud-read"}]
    accessor = self_["AccessorID"]
    # acl:read without acl:write sees the secrets hidden.
    reader = secure.token("acl-reader", secure.policy("acl-read", 'acl = "read"')["Name"])
    listed = {t["AccessorID"]: t for t in get_json(base + "/v1/acl/tokens", reader)}
    assert listed[accessor]["SecretID"] == "<hidden>"
    assert get_json(base + f"/v1/acl/token/{accessor}", MANAGEMENT)["SecretID"] == secret
    assert call("GET", base + f"/v1/acl/token/{accessor}", token=secret)[::2] == (
        403,
        b"rpc error making call: Permission denied",
    )
    status, _, body = call("DELETE", base + f"/v1/acl/token/{accessor}", token=MANAGEMENT)
    assert (status, body) == (200, b"true")
    assert call("GET", base + "/v1/acl/token/self", token=secret)[::2] == (
        403,
        b"rpc error making call: ACL not found",
    )
    assert call("DELETE", base + f"/v1/acl/policy/{policy['ID']}", token=MANAGEMENT)[0] == 200
    # A missing policy or token: exactly "ACL not found", also through a client agent (the
    # RPC finds nothing without an error; acl_endpoint.go ACLPolicyRead / ACLTokenGet return
    # acl.ErrNotFound themselves), unlike an unknown request token above.
    assert call("GET", base + "/v1/acl/policy/name/crud-read", token=MANAGEMENT)[::2] == (
        403,
        b"ACL not found",
    )
    assert call("GET", base + f"/v1/acl/token/{accessor}", token=MANAGEMENT)[::2] == (
        403,
        b"ACL not found",
    )


def test_registration_needs_service_write_and_syncs_with_its_token(secure: Secure) -> None:
    """agent_endpoint.go vetServiceRegister needs service:write; the token is stored with the
    service and anti-entropy registers it with that token (local/state.go serviceToken),
    which needs no node:write once the node exists (catalog_endpoint.go vetRegisterWithACL)."""
    secure.policy("svc-web", 'service "web" { policy = "write" }')
    token = secure.token("web registration", "svc-web")
    status, text = secure.put("/v1/agent/service/register", {"Name": "db", "Port": 1}, token)
    assert (status, text) == (403, b"Permission denied")
    status, text = secure.put(
        "/v1/agent/service/register", {"ID": "web-1", "Name": "web", "Port": 8080}, token
    )
    assert status == 200, text
    entries = wait_for(
        lambda: get_json(secure.server.base + "/v1/catalog/service/web", MANAGEMENT),
        15,
        "web-1 in the catalog",
    )
    assert entries[0]["ServiceID"] == "web-1"
    assert "Synced service: service=web-1" in secure.client.log()
    status, text = secure.put("/v1/agent/service/deregister/web-1", token="")
    assert (status, text) == (403, b"Permission denied")
    assert secure.put("/v1/agent/service/deregister/web-1", token=token)[0] == 200


def test_node_info_waits_for_an_agent_token_with_node_write(secure: Secure) -> None:
    """local/state.go syncNodeInfo: without node:write "Node info update blocked by ACLs"
    and no retry until the next full sync; PUT /v1/agent/token/agent (acl:write) sets the
    agent token, persisted with enable_token_persistence, and triggers a full sync."""
    assert "Node info update blocked by ACLs" in secure.client.log()
    node = get_json(secure.server.base + "/v1/catalog/node/node3", MANAGEMENT)["Node"]
    assert node["TaggedAddresses"] == {}
    secure.policy(
        "agent-node3", 'node "node3" { policy = "write" }\nservice_prefix "" { policy = "read" }'
    )
    agent_token = secure.token("node3 agent", "agent-node3")
    status, text = secure.put("/v1/agent/token/agent", {"Token": agent_token}, token="")
    assert (status, text) == (403, b"Permission denied")
    assert secure.put("/v1/agent/token/bogus", {"Token": agent_token})[0] == 404
    assert secure.put("/v1/agent/token/agent", {"Token": agent_token}) == (200, b"")
    wait_for(
        lambda: get_json(secure.server.base + "/v1/catalog/node/node3", MANAGEMENT)["Node"][
            "TaggedAddresses"
        ],
        15,
        "node3's node info synced",
    )
    assert "Updated agent's ACL token: token=agent" in secure.client.log()
    saved = json.loads((secure.client.data_dir / "acl-tokens.json").read_text())
    assert saved == {"agent": agent_token}
    assert agent_token not in secure.client.log()  # secrets never reach the log


def test_read_tokens_for_a_person_and_for_consul_template(secure: Secure) -> None:
    person = secure.token(
        "person",
        secure.policy(
            "person",
            """
        service_prefix "" { policy = "read" }
        node_prefix "" { policy = "read" }
        agent_prefix "" { policy = "read" }
        operator = "read"
    """,
        )["Name"],
    )
    template = secure.token(
        "consul-template",
        secure.policy(
            "template",
            """
        service_prefix "" { policy = "read" }
        node_prefix "" { policy = "read" }
    """,
        )["Name"],
    )
    only_web = secure.token(
        "web reader", secure.policy("web-read", 'service "web" { policy = "read" }')["Name"]
    )
    base = secure.client.base
    assert {m["Name"] for m in get_json(base + "/v1/agent/members", person)} == {"node1", "node3"}
    assert get_json(base + "/v1/agent/self", person)["Config"]["NodeName"] == "node3"
    assert get_json(base + "/v1/operator/raft/configuration", person)["Servers"]
    assert secure.put("/v1/agent/leave", token=person) == (403, b"Permission denied")
    status, headers, body = call("GET", base + "/v1/catalog/services", token=template)
    assert status == 200 and "consul" in json.loads(body)
    assert "X-Consul-Results-Filtered-By-ACLs" not in headers
    assert get_json(base + "/v1/health/service/consul", template)
    status, headers, body = call("GET", base + "/v1/catalog/services", token=only_web)
    assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
    assert "consul" not in json.loads(body)

    env = dict(os.environ, CONSUL_HTTP_TOKEN=person)
    out = run_cli(
        "operator", "raft", "list-peers", f"-http-addr={secure.client.http_addr}", env=env
    )
    assert out.returncode == 0 and "node1" in out.stdout, out.stderr
    out = run_cli("members", f"-http-addr={secure.client.http_addr}", f"-token={template}")
    assert out.returncode == 0 and "node1" in out.stdout, out.stderr
    out = run_cli("operator", "raft", "list-peers", f"-http-addr={secure.client.http_addr}")
    assert out.returncode == 1
    assert "Unexpected response code: 403 (rpc error making call: Permission denied)" in out.stderr


@pytest.mark.parametrize("key", ["other", "none"])
def test_an_agent_without_the_gossip_key_cannot_join(
    secure: Secure, tmp_path: Path, key: str
) -> None:
    """memberlist refuses what no installed key verifies ("No installed keys could decrypt
    the message"; "Encryption is configured but remote state is not encrypted"): an agent
    with another key or none is neither joined nor joinable."""
    config = dict(FAST_RAFT)
    if key == "other":
        config["encrypt"] = base64.b64encode(secrets.token_bytes(32)).decode()
    ip = "127.0.0.43" if key == "other" else "127.0.0.44"
    outsider = AgentProc(
        tmp_path, f"outsider-{key}", ip, secure.server.http_port, secure.server.serf_port, config
    )
    try:
        outsider.start(f"-retry-join={secure.server.serf_addr}")
        wait_for(lambda: "(LAN) couldn't join" in outsider.log(), 15, "a failed join")
        expected = (
            "No installed keys could decrypt the message"
            if key == "other"
            else "Encryption is configured but remote state is not encrypted"
        )
        wait_for(lambda: expected in secure.server.log(), 10, "the server refusing it")
        status, _, _ = call(
            "PUT", secure.server.base + f"/v1/agent/join/{outsider.serf_addr}", token=MANAGEMENT
        )
        assert status == 500
        time.sleep(1)
        names = {m["Name"] for m in get_json(secure.server.base + "/v1/agent/members", MANAGEMENT)}
        assert outsider.name not in names
        assert [m["Name"] for m in get_json(outsider.base + "/v1/agent/members")] == [outsider.name]
    finally:
        outsider.kill()
