"""labctl.security against the Consul stand-in: the gossip key, the bootstrap done once,
least-privilege tokens that can do what their part needs and nothing more, agent tokens,
and the one sentence for a lost token file.

One stand-in server (bootstrap_expect 1, ACLs deny by default) on 127.0.0.61:8500, the
port labctl uses; a lab spec whose one host is that address. Consul's messages and status
codes are 1.11's (see the stand-in's README).
"""

from __future__ import annotations

import base64
import json
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labctl import lifecycle, security
from labctl.converge import ConvergeResult
from labctl.spec import parse_spec
from roles.contract import CONSUL_HTTP_PORT
from tests.support.consul_standin import FAST_RAFT, AgentProc, call, free_port, wait_for

ADDRESS = "127.0.0.61"
BASE = f"http://{ADDRESS}:{CONSUL_HTTP_PORT}"
ACL = {"enabled": True, "default_policy": "deny", "enable_token_persistence": True}
GLOBAL_MANAGEMENT = "00000000-0000-0000-0000-000000000001"


def lab_spec(**overrides):
    data = {
        "name": "labsecurity",
        "provider": "ssh",
        "hosts": [{"name": "node1", "address": ADDRESS, "consul": "server", "lb": True}],
        **overrides,
    }
    return parse_spec(data)[0]


@pytest.fixture
def secrets_home(tmp_path, monkeypatch) -> Path:
    """The lab's .lab/<name>/ in a temporary directory."""
    monkeypatch.setattr(security, "lab_dir", lambda spec: tmp_path / spec.name)
    return tmp_path / "labsecurity" / "secrets"


# The new leader's gap before its ACLs exist (the stand-in's README), made long enough
# that labctl, which polls for a leader once a second, always bootstraps inside it.
ACL_INIT_GAP_S = 4


@pytest.fixture(scope="module")
def consul(tmp_path_factory) -> Iterator[AgentProc]:
    agent = AgentProc(tmp_path_factory.mktemp("security"), "node1", ADDRESS, CONSUL_HTTP_PORT,
                      free_port([ADDRESS]), dict(FAST_RAFT, acl=ACL))  # fmt: skip
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CONSUL_STANDIN_ACL_INIT_GAP", str(ACL_INIT_GAP_S))
            agent.start("-server", "-bootstrap-expect=1")
        yield agent
    finally:
        agent.kill()


def as_token(secret: str | None, method: str, path: str, body=None) -> tuple[int, object]:
    status, _, text = call(method, BASE + path, body, token=secret or "")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode()


def registration(service: str, sid: str) -> dict:
    return {"ID": sid, "Name": service, "Address": ADDRESS, "Port": 18080}


@pytest.fixture(scope="module")
def made(consul, tmp_path_factory) -> dict:
    """ensure_acls run once on the fresh server: what it made and the tokens it saved."""
    home = tmp_path_factory.mktemp("lab")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(security, "lab_dir", lambda spec: home / spec.name)
        spec = lab_spec()
        reported: list[str] = []
        made = security.ensure_acls(spec, reported.append)
        missed = security.set_agent_tokens(spec, lambda line: None)
        again = security.ensure_acls(spec, lambda line: None)
        tokens = security.saved_tokens(spec)
    return {"made": made, "again": again, "missed": missed, "tokens": tokens,
            "reported": reported, "dir": home / "labsecurity" / "secrets"}  # fmt: skip


def test_the_gossip_key_is_32_random_bytes_kept_0600_and_made_once(secrets_home):
    spec = lab_spec()
    assert security.gossip_key(spec) is None  # not made yet
    key = security.gossip_key(spec, create=True)
    assert len(base64.b64decode(key)) == 32
    assert security.gossip_key(spec, create=True) == key
    assert stat.S_IMODE((secrets_home / security.GOSSIP_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets_home.stat().st_mode) == 0o700
    assert security.gossip_key(lab_spec(security="seed"), create=True) is None


def test_the_bootstrap_happens_once_and_every_token_is_made_once(made):
    assert made["made"][0] == "ACL bootstrap"
    names = {"management", "agent-node1", "registration-node1", "consul-template", "read"}
    assert set(made["tokens"]) == names
    assert made["again"] == []  # a second run makes nothing
    assert made["missed"] == {}
    for name in ("", security.TOKENS):
        mode = stat.S_IMODE((made["dir"] / name).stat().st_mode)
        assert mode == (0o600 if name else 0o700), name


def test_a_bootstrap_inside_the_new_leaders_gap_is_asked_again(made):
    """Consul names a new leader before that leader has created the global-management
    policy (leader.go initializeACLs), and a bootstrap in between answers 500; labctl
    polls for a leader once a second, so with the gap made longer than that its first
    bootstrap is always inside it, is answered 500, and is asked again until it works."""
    gap = "500 failed inserting bootstrap token: No such policy with ID: " + GLOBAL_MANAGEMENT
    retries = [line for line in made["reported"] if "not ready for the ACL bootstrap" in line]
    assert retries and all(gap in line for line in retries), made["reported"]
    assert made["made"][0] == "ACL bootstrap"


def test_a_second_bootstrap_is_refused_by_consul(made):
    """acl_endpoint.go ACLBootstrap: 403 once the bootstrap is used up."""
    status, text = as_token(None, "PUT", "/v1/acl/bootstrap")
    assert status == 403 and text.startswith("Permission denied: ACL bootstrap no longer allowed")


def test_anonymous_may_neither_register_nor_see_the_instances(made):
    status, text = as_token(None, "PUT", "/v1/agent/service/register",
                            registration("zhibo_service", "rogue"))  # fmt: skip
    assert status == 403 and text == "Permission denied"
    assert as_token(None, "GET", "/v1/health/service/consul") == (200, [])


def test_each_token_may_do_what_its_part_needs_and_nothing_more(made):
    tokens = {name: t["secret"] for name, t in made["tokens"].items()}
    register = "/v1/agent/service/register"
    # The host's registration token: the lab's demo services, and only them.
    assert as_token(tokens["registration-node1"], "PUT", register,
                    registration("zhibo_service", "zhibo-1"))[0] == 200  # fmt: skip
    assert as_token(tokens["registration-node1"], "PUT", register,
                    registration("other", "other-1"))[0] == 403  # fmt: skip
    # consul-template's and the person's tokens read, but cannot register.
    for reader in ("consul-template", "read"):
        assert as_token(tokens[reader], "PUT", register,
                        registration("zhibo_service", "zhibo-9"))[0] == 403  # fmt: skip

        def listed(reader=reader) -> bool:
            status, entries = as_token(tokens[reader], "GET", "/v1/health/service/zhibo_service")
            return status == 200 and [e["Service"]["ID"] for e in entries] == ["zhibo-1"]

        # Anti-entropy brings the registration to the catalog (with its token).
        wait_for(listed, 30, f"zhibo-1 visible to the {reader} token")
    # Only the person's token reads the agent and the operator's view.
    assert as_token(tokens["read"], "GET", "/v1/operator/raft/configuration")[0] == 200
    assert as_token(tokens["consul-template"], "GET", "/v1/operator/raft/configuration")[0] == 403
    assert as_token(tokens["read"], "GET", "/v1/acl/tokens")[0] == 403
    as_token(tokens["registration-node1"], "PUT", "/v1/agent/service/deregister/zhibo-1")


def test_the_agent_token_lets_the_agent_sync_its_node(made):
    tokens = {name: t["secret"] for name, t in made["tokens"].items()}

    def node_in_catalog():
        status, nodes = as_token(tokens["read"], "GET", "/v1/catalog/nodes")
        return status == 200 and "node1" in {n["Node"] for n in nodes}

    wait_for(node_in_catalog, 30, "node1's node info synced with its agent token")


def test_a_lost_token_file_is_one_sentence_naming_the_fix(made, secrets_home):
    with pytest.raises(security.AclError) as error:
        security.ensure_acls(lab_spec(), lambda line: None)
    message = str(error.value)
    assert "bootstrapped already" in message and str(secrets_home / security.TOKENS) in message
    assert "`labctl down` and `labctl up`" in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_the_seeds_open_lab_has_no_tokens(secrets_home):
    spec = lab_spec(security="seed")
    assert security.ensure_acls(spec, lambda line: None) == []
    assert security.token(spec, "read") is None
    assert not secrets_home.exists()


def test_rules_are_the_least_each_part_needs():
    rules = {t.name: t.rules for t in security.token_specs(lab_spec())}
    assert rules["agent-node1"] == (
        'node "node1" { policy = "write" }\nservice_prefix "" { policy = "read" }\n'
    )
    assert rules["registration-node1"] == 'service "zhibo_service" { policy = "write" }\n'
    assert rules["consul-template"] == (
        'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
    )
    assert "write" not in rules["read"] and 'operator = "read"' in rules["read"]


def test_a_service_leaving_the_spec_keeps_its_write_until_its_instances_are_gone(made, consul,
                                                                                 monkeypatch):
    """Consul's anti-entropy deregisters an instance from the catalog with the token it
    was registered with (agent/local/state.go deleteService), so the registration token
    may lose a service only after its instances are deregistered: labctl apply widens
    with `leaving`, converges, then narrows."""
    monkeypatch.setattr(security, "lab_dir", lambda spec: made["dir"].parent.parent / spec.name)
    both = lab_spec(services=[{"name": "zhibo_service"}, {"name": "danmu_service", "port": 9080}])
    security.ensure_acls(both, lambda line: None)
    secret = security.saved_tokens(both)["registration-node1"]["secret"]
    read = security.saved_tokens(both)["read"]["secret"]

    def in_catalog() -> bool:
        return as_token(read, "GET", "/v1/catalog/service/danmu_service")[1] != []

    assert as_token(secret, "PUT", "/v1/agent/service/register",
                    registration("danmu_service", "danmu-1"))[0] == 200  # fmt: skip
    wait_for(in_catalog, 30, "danmu-1 synced to the catalog")

    one = lab_spec()
    leaving = security.leaving_services(one)
    assert leaving == ["danmu_service"]
    # Widened by what is leaving, the tokens are what they were: no Consul call.
    assert security.ensure_acls(one, lambda line: None, check_servers=False, leaving=leaving) == []
    assert as_token(secret, "PUT", "/v1/agent/service/deregister/danmu-1")[0] == 200
    wait_for(lambda: not in_catalog(), 30, "danmu-1 out of the catalog")

    # After the converge, narrowed: the token no longer writes the service.
    assert security.ensure_acls(one, lambda line: None, check_servers=False) == [
        "policy lab-registration-node1"
    ]
    assert security.leaving_services(one) == []
    assert as_token(secret, "PUT", "/v1/agent/service/register",
                    registration("danmu_service", "danmu-2"))[0] == 403  # fmt: skip


# --- answers that are not what they seem: a stand-in behind a transport that injects them


class FaultyConsul:
    """labctl's requests go to the stand-in, except that `faults[(method, path)]` lists
    answers (status, text) given instead of the stand-in's, one per matching request."""

    def __init__(self) -> None:
        self.faults: dict[tuple[str, str], list[tuple[int, str]]] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        answers = self.faults.get((request.method, request.url.path))
        if answers:
            status, text = answers.pop(0)
            return httpx.Response(status, text=text)
        with REAL_CLIENT(timeout=30, trust_env=False) as client:
            answer = client.request(request.method, request.url, headers=request.headers,
                                    content=request.read())  # fmt: skip
        return httpx.Response(answer.status_code, content=answer.content)


REAL_CLIENT = httpx.Client


@pytest.fixture
def faulty(made, monkeypatch) -> FaultyConsul:
    """labctl.security against the module's stand-in, with `made`'s saved tokens."""
    monkeypatch.setattr(security, "lab_dir", lambda spec: made["dir"].parent.parent / spec.name)
    consul = FaultyConsul()
    transport = httpx.MockTransport(consul.handle)
    monkeypatch.setattr(httpx, "Client", lambda **kw: REAL_CLIENT(transport=transport, **kw))
    return consul


def lab_tokens() -> list[dict]:
    """Every token Consul holds, read with the saved management token."""
    management = security.saved_tokens(lab_spec())["management"]["secret"]
    status, tokens = as_token(management, "GET", "/v1/acl/tokens")
    assert status == 200, tokens
    return tokens


def test_a_transient_500_on_a_token_read_is_asked_again_not_taken_for_a_lost_token(faulty):
    """A 500 ("No cluster leader": the servers between two leaders) says nothing about
    the token: labctl asks again and keeps it, where reading it as "missing" made a
    second token for the same part."""
    before = security.saved_tokens(lab_spec())["read"]["accessor"]
    path = f"/v1/acl/token/{before}"
    faulty.faults[("GET", path)] = [(500, "rpc error making call: No cluster leader")] * 2
    reported: list[str] = []
    assert security.ensure_acls(lab_spec(), reported.append) == []
    assert faulty.faults[("GET", path)] == []  # both were given, and asked past
    assert sum("No cluster leader" in line and "asking again" in line for line in reported) == 2
    assert security.saved_tokens(lab_spec())["read"]["accessor"] == before
    described = [t for t in lab_tokens() if t["Description"].startswith("a person")]
    assert [t["AccessorID"] for t in described] == [before]


def test_a_500_that_does_not_pass_stops_with_one_sentence(faulty, monkeypatch):
    monkeypatch.setattr(security, "TRANSIENT_TIMEOUT", 1.0)
    monkeypatch.setattr(security, "RETRY_INTERVAL", 0.1)
    accessor = security.saved_tokens(lab_spec())["read"]["accessor"]
    faulty.faults[("GET", f"/v1/acl/token/{accessor}")] = [(500, "No cluster leader")] * 100
    before = lab_tokens()
    with pytest.raises(security.AclError) as error:
        security.ensure_acls(lab_spec(), lambda line: None)
    message = str(error.value)
    assert message.startswith("Consul answered 500 No cluster leader to a read of token read")
    assert message.count(". ") == 0 and message.endswith("then `labctl apply`.")
    assert lab_tokens() == before  # nothing made


def test_a_403_that_is_not_acl_not_found_is_one_sentence_and_nothing_is_made(faulty):
    """403 "Permission denied" is a refusal, not a missing policy: creating the policy
    would fail (or, for a token, make a duplicate); the run stops and names the answer."""
    faulty.faults[("GET", "/v1/acl/policy/name/lab-read")] = [(403, "Permission denied")]
    before = lab_tokens()
    with pytest.raises(security.AclError) as error:
        security.ensure_acls(lab_spec(), lambda line: None)
    message = str(error.value)
    assert "answered 403 Permission denied to a read of policy lab-read" in message
    assert message.count(". ") == 0 and message.endswith(".")
    assert lab_tokens() == before


def test_a_token_consul_no_longer_has_is_made_again(faulty):
    """Consul 1.11 answers 403 "ACL not found" (the whole answer) for a token it does
    not have: that one, and only that one, is made again."""
    spec = lab_spec()
    management = security.saved_tokens(spec)["management"]["secret"]
    lost = security.saved_tokens(spec)["consul-template"]["accessor"]
    assert as_token(management, "DELETE", f"/v1/acl/token/{lost}")[0] == 200
    assert as_token(management, "GET", f"/v1/acl/token/{lost}") == (403, "ACL not found")
    assert security.ensure_acls(spec, lambda line: None) == ["token consul-template"]
    assert security.saved_tokens(spec)["consul-template"]["accessor"] != lost


def test_a_management_token_consul_does_not_know_is_one_sentence(made, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(made["dir"].parent, home / "labsecurity")
    monkeypatch.setattr(security, "lab_dir", lambda spec: home / spec.name)
    tokens = security.saved_tokens(lab_spec())
    tokens["management"]["secret"] = "9d3f7c1e-1111-4222-8333-444455556666"
    (home / "labsecurity" / "secrets" / security.TOKENS).write_text(json.dumps(tokens))
    with pytest.raises(security.AclError) as error:
        security.ensure_acls(lab_spec(), lambda line: None)
    message = str(error.value)
    assert "does not know the management token saved in" in message
    assert message.endswith("run `labctl down` and `labctl up` to start afresh.")
    assert message.count(". ") == 0


# --- agent tokens: every apply hands them out, so an agent that lost its token has it back

CLIENT_ADDRESS = "127.0.0.62"
DEAD_ADDRESS = "127.0.0.63"  # no agent there


def two_hosts(*more: dict):
    return lab_spec(hosts=[
        {"name": "node1", "address": ADDRESS, "consul": "server", "lb": True},
        {"name": "node2", "address": CLIENT_ADDRESS, "consul": "client"},
        *more,
    ])  # fmt: skip


@pytest.fixture
def apply_without_hosts(made, monkeypatch):
    """lifecycle.apply with what concerns the hosts (images, apt cache, the converge)
    stubbed out: the agents are stand-in processes on loopback, started by the test."""
    monkeypatch.setattr(security, "lab_dir", lambda spec: made["dir"].parent.parent / spec.name)
    monkeypatch.setattr(lifecycle, "read_state", lambda spec: {"provider": "ssh"})
    monkeypatch.setattr(lifecycle, "not_up_problem", lambda spec: None)
    monkeypatch.setattr(lifecycle, "write_state", lambda spec, **values: None)
    monkeypatch.setattr(lifecycle, "hosts_arch", lambda spec, provider, report: {})
    monkeypatch.setattr(lifecycle.delivery, "prepare", lambda *args, **kwargs: {})
    monkeypatch.setattr(lifecycle.aptcache, "ensure", lambda *args: None)
    monkeypatch.setattr(lifecycle, "converge_lab", lambda spec, report, *args: ConvergeResult())
    return lambda spec: lifecycle.apply(spec, lambda line: None)


def client_agent(workdir: Path) -> AgentProc:
    """node2's agent (not started): a client with the lab's ACL settings."""
    serf = free_port([CLIENT_ADDRESS])
    return AgentProc(workdir, "node2", CLIENT_ADDRESS, CONSUL_HTTP_PORT, serf,
                     dict(FAST_RAFT, acl=ACL))  # fmt: skip


def agent_token_held(agent: AgentProc) -> str | None:
    """The agent token the agent keeps in its data directory (enable_token_persistence)."""
    try:
        return json.loads((agent.data_dir / "acl-tokens.json").read_text()).get("agent")
    except FileNotFoundError:
        return None


def test_apply_gives_an_agent_that_lost_its_data_its_token_again(consul, apply_without_hosts,
                                                                 tmp_path):  # fmt: skip
    """An agent whose data volume was wiped starts without its token, and nothing on the
    outside says so; apply hands every agent its token on every run, so the next apply
    repairs it (it used to only when it had made new tokens)."""
    spec = two_hosts()
    client = client_agent(tmp_path)
    try:
        client.start(f"-retry-join={consul.serf_addr}")
        apply_without_hosts(spec)  # makes node2's tokens, then hands them out
        secret = security.saved_tokens(spec)["agent-node2"]["secret"]
        assert agent_token_held(client) == secret

        client.kill()  # the data volume wiped: a fresh agent, without its token
        shutil.rmtree(client.data_dir)
        client.start(f"-retry-join={consul.serf_addr}")
        wait_for(lambda: "Node info update blocked by ACLs" in client.log().rsplit(
            "Consul agent running", 1)[-1], 60, "node2 refused its node info")  # fmt: skip
        assert agent_token_held(client) is None

        apply_without_hosts(spec)  # makes nothing: the saved tokens are current
        assert agent_token_held(client) == secret
    finally:
        client.kill()


def test_an_agent_that_does_not_take_its_token_stops_apply_with_one_sentence(
    consul, apply_without_hosts, tmp_path
):
    spec = two_hosts({"name": "node3", "address": DEAD_ADDRESS, "consul": "client"})
    client = client_agent(tmp_path)
    try:
        client.start(f"-retry-join={consul.serf_addr}")
        with pytest.raises(lifecycle.LifecycleError) as error:
            apply_without_hosts(spec)
    finally:
        client.kill()
    message = str(error.value)
    assert message.startswith("the Consul agent token did not reach node3 (node3: not answering: ")
    assert "run `labctl apply` once the agent answers" in message
    assert message.count(". ") == 0 and message.endswith(".")
    assert agent_token_held(client) == security.saved_tokens(spec)["agent-node2"]["secret"]
