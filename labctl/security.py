"""The lab's secrets and its Consul ACLs, made and kept on the control machine.

Secure by default (the spec's `security`): one gossip key per lab, as `consul keygen`
makes it, and ACLs that deny by default, bootstrapped once with `PUT /v1/acl/bootstrap`,
with a least-privilege token for each part of the lab:

  agent-<node>         node "<node>" write, service_prefix "" read: the agent's own
                       anti-entropy (set through each agent's token API)
  registration-<host>  service write on the demo services: role demo_service and the
                       roles' waits on that host
  registrator-<host>   service write on the registrator-mode services only: registrator
                       on that host (only when a service is registrator's)
  consul-template      service_prefix and node_prefix read: the LB's consul-template
                       (with several LBs, consul-template-<host>: one for each)
  read                 service, node and agent read, operator read: a person (the UI),
                       `labctl verify` and `labctl watch`

Everything secret lives in .lab/<name>/secrets/ (0700, files 0600). labctl talks to
Consul over httpx with the token in a header, so no secret reaches a command line or a
log; hosts get their tokens over pyinfra's file upload into root-only files.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from labctl.paths import lab_dir
from labctl.spec import LabSpec
from roles.contract import CONSUL_HTTP_PORT

if TYPE_CHECKING:
    import httpx

GOSSIP_KEY = "gossip.key"
TOKENS = "tokens.json"
MANAGEMENT = "management"
LEADER_TIMEOUT = 120.0
# How long an answer that may pass (a 5xx: no leader yet, a leader still initializing its
# ACLs) is asked again, once a second, before it stops the run.
TRANSIENT_TIMEOUT = 60.0
RETRY_INTERVAL = 1.0
# Between two asks for the leader (a GET /v1/status/leader to the servers), and for the
# ACL bootstrap while the new leader initializes its ACLs: each ends at any moment, and
# everything after waits for it.
LEADER_POLL = 0.25
# Consul 1.11's whole answer (403) to a read of a policy or token that does not exist
# (agent/acl_endpoint.go returns acl.ErrNotFound); a read with an unknown request token
# says it too, which is why the management token is checked first (_check_management).
# Later releases answer 404 there instead ("... does not exist").
ACL_NOT_FOUND = "ACL not found"
NO_LEADER = "No cluster leader"

Report = Callable[[str], None]


class AclError(Exception):
    """The lab's ACLs cannot be set up or used; the message says why and the way out."""


class AgentUnreachable(AclError):
    """No agent answered at all (`cause`: the connection error's name)."""

    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause


def secrets_dir(spec: LabSpec) -> Path:
    return lab_dir(spec) / "secrets"


def _write_secret(path: Path, text: str) -> None:
    """Write a file only its owner may read, whatever the umask: created 0600, then
    renamed into place, so no other mode is ever visible."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(partial, 0o600)
    partial.rename(path)


def gossip_key(spec: LabSpec, create: bool = False) -> str | None:
    """The lab's gossip key (base64 of 32 random bytes, as `consul keygen`); made once
    when `create`; None when the lab has no gossip encryption or no key yet."""
    if not spec.security.gossip_encryption:
        return None
    path = secrets_dir(spec) / GOSSIP_KEY
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            return None
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    _write_secret(path, key + "\n")
    return key


def saved_tokens(spec: LabSpec) -> dict[str, dict[str, str]]:
    """Token name -> {"accessor", "secret"}, as saved; {} before the bootstrap."""
    try:
        return json.loads((secrets_dir(spec) / TOKENS).read_text())
    except FileNotFoundError:
        return {}


def token(spec: LabSpec, name: str) -> str | None:
    """A saved token's secret, or None (no ACLs, or not made yet)."""
    if not spec.security.acl:
        return None
    return saved_tokens(spec).get(name, {}).get("secret")


@dataclass(frozen=True)
class LabSecrets:
    """What the inventory hands the roles, read once per run."""

    gossip_key: str | None
    tokens: dict[str, dict[str, str]]

    @classmethod
    def of(cls, spec: LabSpec) -> LabSecrets:
        return cls(gossip_key(spec), saved_tokens(spec) if spec.security.acl else {})

    def secret(self, name: str) -> str | None:
        return self.tokens.get(name, {}).get("secret")


def _save_tokens(spec: LabSpec, tokens: dict[str, dict[str, str]]) -> None:
    _write_secret(secrets_dir(spec) / TOKENS, json.dumps(tokens, indent=2) + "\n")


@dataclass(frozen=True)
class TokenSpec:
    name: str
    description: str
    rules: str
    services: tuple[str, ...] = ()  # the services it may write, saved with it


def _rules(*rules: tuple[str, str, str]) -> str:
    """HCL policy rules from (resource, name or None, policy)."""
    lines = []
    for resource, name, policy in rules:
        if name is None:
            lines.append(f'{resource} = "{policy}"')
        else:
            lines.append(f'{resource} "{name}" {{ policy = "{policy}" }}')
    return "\n".join(lines) + "\n"


def lab_services(spec: LabSpec) -> list[str]:
    """The Consul services the lab's hosts register (role demo_service's)."""
    return [service.name for service in spec.services]


def leaving_services(spec: LabSpec) -> list[str]:
    """Services the saved registration tokens may write that the spec no longer has.
    The tokens keep them until a converge has deregistered their instances: Consul's
    anti-entropy deregisters an instance from the catalog with the token it was
    registered with, so a token narrowed first leaves the instance in the catalog,
    still routed to, for good ("Service deregistration blocked by ACLs")."""
    granted = {s for saved in saved_tokens(spec).values() for s in saved.get("services", [])}
    return sorted(granted - set(lab_services(spec)))


def _service_writer(name: str, description: str, services: list[str]) -> TokenSpec:
    """A token that may write these services and nothing else (saved with them)."""
    rules = _rules(*(("service", service, "write") for service in services))
    return TokenSpec(name, description, rules, tuple(services))


def consul_template_token(spec: LabSpec, host: str) -> str:
    """The name of the token of the LB `host`'s consul-template: `consul-template` for the
    lab's only LB, `consul-template-<host>` for each of several, so that every LB follows
    Consul with its own."""
    return f"consul-template-{host}" if spec.lb_pair else "consul-template"


def token_specs(spec: LabSpec, leaving: list[str] | None = None) -> list[TokenSpec]:
    """Every token the lab needs, with the least each part may do; the registration
    tokens also write the `leaving` services (see leaving_services)."""
    in_spec = lab_services(spec)
    services = in_spec + [s for s in leaving or [] if s not in in_spec]
    agents = [h for h in spec.hosts if h.consul != "none"]
    tokens = [
        TokenSpec(
            f"agent-{host.name}",
            f"agent token of node {host.name}: its own anti-entropy",
            _rules(("node", host.name, "write"), ("service_prefix", "", "read")),
        )
        for host in agents
    ]
    tokens += [
        _service_writer(
            f"registration-{host.name}",
            f"registration token of host {host.name}: the lab's demo services",
            services,
        )
        for host in agents
    ]
    tokens += [
        _service_writer(
            f"registrator-{host.name}",
            f"registrator on host {host.name}: the registrator-mode services only",
            spec.registrator_services(),
        )
        for host in spec.registrator_hosts
    ]
    tokens += [
        TokenSpec(
            consul_template_token(spec, host.name),
            f"consul-template on the LB{f' {host.name}' if spec.lb_pair else ''}: reads "
            "services and nodes",
            _rules(("service_prefix", "", "read"), ("node_prefix", "", "read")),
        )
        for host in spec.lb_hosts
    ]
    tokens.append(
        TokenSpec(
            "read",
            "a person, the UI, labctl verify and watch: reads everything but ACLs",
            _rules(
                ("service_prefix", "", "read"),
                ("node_prefix", "", "read"),
                ("agent_prefix", "", "read"),
                ("operator", None, "read"),
            ),
        )
    )
    return tokens


class _Consul:
    """The lab's Consul servers over HTTP, from the control machine."""

    def __init__(self, spec: LabSpec, management: str | None = None):
        import httpx  # here: `status` and `down` start without it

        self.spec = spec
        self.management = management
        self.client = httpx.Client(timeout=10, trust_env=False)

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, address: str | None = None, **kwargs):
        """A request to `address`'s agent, else to the first server that answers."""
        import httpx

        headers = {"X-Consul-Token": self.management} if self.management else {}
        targets = [address] if address else [str(h.address) for h in self.spec.consul_servers]
        error: Exception | None = None
        for target in targets:
            url = f"http://{target}:{CONSUL_HTTP_PORT}{path}"
            try:
                return self.client.request(method, url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                error = exc
        cause = type(error).__name__
        raise AgentUnreachable(
            f"no Consul agent answered at {', '.join(targets)} ({cause}) while setting up "
            "the lab's ACLs; check `labctl status` and `labctl verify`, then `labctl apply`.",
            cause,
        )

    def asking_again(self, method: str, path: str, what: str, report: Report, **kwargs):
        """A request whose answer is asked again while it may pass: any 5xx to a read (no
        leader yet, a follower that lost its leader), and to a write only "No cluster
        leader" (the write reached no leader, so it is safe to send again), until
        TRANSIENT_TIMEOUT. Returns the last answer, whatever it is."""
        deadline = time.monotonic() + TRANSIENT_TIMEOUT
        while True:
            response = self.request(method, path, **kwargs)
            transient = response.status_code >= 500 and (
                method == "GET" or NO_LEADER in response.text
            )
            if not transient or time.monotonic() >= deadline:
                return response
            report(f"Consul answered {_answer(response)} to {what}; asking again")
            time.sleep(RETRY_INTERVAL)

    def wait_for_leader(self, report: Report) -> None:
        deadline = time.monotonic() + LEADER_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/v1/status/leader").json():
                    return
            except (AclError, ValueError):
                pass
            report("waiting for a Consul leader before the ACL bootstrap")
            time.sleep(LEADER_POLL)
        raise AclError(
            f"no Consul leader within {LEADER_TIMEOUT:.0f} s, so the ACLs cannot be "
            "bootstrapped; check `labctl verify` (a majority of servers must run), then "
            "`labctl apply`."
        )


def _answer(response: httpx.Response) -> str:
    """An answer as the sentences quote it: status and the start of the text."""
    return f"{response.status_code} {response.text.strip()[:120]}".strip()


def _checked(response: httpx.Response, what: str) -> dict:
    if response.status_code != 200:
        raise AclError(
            f"Consul refused to {what} ({_answer(response)}); read the servers' logs "
            "(`docker logs consul` on a server), then `labctl apply`."
        )
    return response.json() if response.content else {}


def _read(consul: _Consul, path: str, what: str, report: Report) -> dict | None:
    """GET `path` from the servers: its JSON, or None when Consul says there is no such
    policy or token (403 "ACL not found", the whole answer); a transient answer is asked
    again (_Consul.asking_again), anything else stops in one sentence."""
    response = consul.asking_again("GET", path, f"a read of {what}", report)
    missing = response.status_code == 403 and response.text.strip() == ACL_NOT_FOUND
    if missing or response.status_code == 404:
        return None
    if response.status_code != 200:
        raise AclError(
            f"Consul answered {_answer(response)} to a read of {what}, which labctl cannot "
            "take for present or missing; read the servers' logs (`docker logs consul` on a "
            "server), then `labctl apply`."
        )
    return response.json()


def _bootstrap(consul: _Consul, spec: LabSpec, report: Report) -> dict[str, str]:
    """PUT /v1/acl/bootstrap, asked again while Consul answers 5xx: a new leader names
    itself at once but creates the global-management policy only while it establishes
    its leadership (leader.go initializeACLs), and a bootstrap in that gap answers 500
    "failed inserting bootstrap token: No such policy with ID: ...0001". consul-k8s's
    server-acl-init does the same (subcommand/server-acl-init/servers.go bootstrapACLs:
    untilSucceeds asks again, once a second, on any error but a 403; labctl asks every
    LEADER_POLL, as it asked for the leader). The request may take as long as Consul
    does: a bootstrap answered after the client gave up is done all the same, and its
    token lost (consul-k8s gives that call 5 minutes for it)."""
    deadline = time.monotonic() + LEADER_TIMEOUT
    while True:
        response = consul.request("PUT", "/v1/acl/bootstrap", timeout=LEADER_TIMEOUT)
        if response.status_code == 403 and "no longer allowed" in response.text:
            raise AclError(
                f"the lab's Consul ACLs were bootstrapped already, but its management token "
                f"is not in {secrets_dir(spec) / TOKENS}; without it labctl cannot manage the "
                "lab's tokens: run `labctl down` and `labctl up` to start afresh (or reset the "
                "ACLs as Consul's documentation describes and run `labctl apply`)."
            )
        if response.status_code < 500 or time.monotonic() >= deadline:
            created = _checked(response, "bootstrap the ACLs")
            return {"accessor": created["AccessorID"], "secret": created["SecretID"]}
        report(f"Consul is not ready for the ACL bootstrap yet ({_answer(response)}); asking again")
        time.sleep(LEADER_POLL)


def _check_management(consul: _Consul, spec: LabSpec, report: Report) -> None:
    """The saved management token is one Consul knows (GET /v1/acl/token/self), so that
    "ACL not found" from a later read means the policy or token read is missing."""
    response = consul.asking_again("GET", "/v1/acl/token/self", "the management token", report)
    if response.status_code == 404 or (
        response.status_code == 403 and ACL_NOT_FOUND in response.text
    ):
        raise AclError(
            f"the lab's Consul does not know the management token saved in "
            f"{secrets_dir(spec) / TOKENS} (its ACLs were reset, or its servers lost their "
            "data), so labctl cannot manage the lab's tokens: run `labctl down` and "
            "`labctl up` to start afresh."
        )
    _checked(response, "read the management token")


def _policy(consul: _Consul, wanted: TokenSpec, report: Report) -> bool:
    """Make the token's policy (lab-<name>) hold exactly its rules; True if it changed."""
    name = f"lab-{wanted.name}"
    body = {"Name": name, "Description": wanted.description, "Rules": wanted.rules}
    current = _read(consul, f"/v1/acl/policy/name/{name}", f"policy {name}", report)
    if current is not None:
        if current.get("Rules") == wanted.rules:
            return False
        what = f"update policy {name}"
        _checked(consul.asking_again("PUT", f"/v1/acl/policy/{current['ID']}", what, report,
                                     json=body), what)  # fmt: skip
        return True
    what = f"create policy {name}"
    _checked(consul.asking_again("PUT", "/v1/acl/policy", what, report, json=body), what)
    return True


def _token(
    consul: _Consul, wanted: TokenSpec, saved: dict[str, str] | None, report: Report
) -> dict | None:
    """The saved token if Consul still has it, else a new one (returned)."""
    if saved:
        path = f"/v1/acl/token/{saved['accessor']}"
        if _read(consul, path, f"token {wanted.name}", report) is not None:
            return None
    body = {"Description": wanted.description, "Policies": [{"Name": f"lab-{wanted.name}"}]}
    what = f"create token {wanted.name}"
    created = _checked(consul.asking_again("PUT", "/v1/acl/token", what, report, json=body), what)
    return {"accessor": created["AccessorID"], "secret": created["SecretID"]}


def ensure_acls(
    spec: LabSpec,
    report: Report,
    check_servers: bool = True,
    leaving: list[str] | None = None,
) -> list[str]:
    """Bootstrap once, then make every policy and token the spec needs (the registration
    tokens also writing the `leaving` services); return what was made. With
    `check_servers` False, trust the saved tokens when every one is there with the rules
    it was made for (no Consul call: an apply during a quorum loss); a spec that gained
    or lost a host or a service changes them, and the servers are asked."""
    if not spec.security.acl:
        return []
    tokens = saved_tokens(spec)
    wanted = token_specs(spec, leaving)
    current = MANAGEMENT in tokens and all(
        tokens.get(t.name, {}).get("rules") == t.rules for t in wanted
    )
    if not check_servers and current:
        return []
    made: list[str] = []
    consul = _Consul(spec, tokens.get(MANAGEMENT, {}).get("secret"))
    try:
        consul.wait_for_leader(report)
        made += _ensure_management(consul, spec, tokens, report)
        # Every token at once: each is a few writes, each a Raft commit on the servers.
        saving = threading.Lock()
        with ThreadPoolExecutor(max_workers=8) as pool:
            for token_made in pool.map(
                lambda t: _ensure_token(consul, spec, tokens, t, report, saving), wanted
            ):
                made += token_made
        report(f"ACL tokens in place; made: {', '.join(made) or 'nothing'}")
    finally:
        consul.close()
    return made


def _ensure_management(consul: _Consul, spec: LabSpec, tokens: dict, report: Report) -> list[str]:
    """The management token: made by the ACL bootstrap the first time (and saved at once:
    the bootstrap cannot be done twice), else checked."""
    if MANAGEMENT in tokens:
        _check_management(consul, spec, report)
        return []
    tokens[MANAGEMENT] = _bootstrap(consul, spec, report)
    consul.management = tokens[MANAGEMENT]["secret"]
    _save_tokens(spec, tokens)
    return ["ACL bootstrap"]


def _ensure_token(
    consul: _Consul,
    spec: LabSpec,
    tokens: dict,
    spec_token: TokenSpec,
    report: Report,
    saving: threading.Lock,
) -> list[str]:
    """One token and its policy as `spec_token` says, saved with its rules (under
    `saving`: the tokens are made at once, into one file); what was made."""
    made = []
    if _policy(consul, spec_token, report):
        made.append(f"policy lab-{spec_token.name}")
    new = _token(consul, spec_token, tokens.get(spec_token.name), report)
    if new:
        made.append(f"token {spec_token.name}")
    with saving:
        # The rules saved with the token tell the next apply whether to ask Consul.
        tokens[spec_token.name] = (new or tokens[spec_token.name]) | {
            "rules": spec_token.rules,
            "services": list(spec_token.services),
        }
        _save_tokens(spec, tokens)
    return made


def set_agent_tokens(spec: LabSpec, report: Report) -> dict[str, str]:
    """Give every agent its agent token (PUT /v1/agent/token/agent, a call to the agent
    itself, which needs no leader; Consul keeps it in its data directory and changes
    nothing when the agent has it already). Return the agents that did not take it, each
    with why."""
    if not spec.security.acl:
        return {}
    tokens = saved_tokens(spec)
    consul = _Consul(spec, tokens[MANAGEMENT]["secret"])
    missed: dict[str, str] = {}
    try:
        for host in (h for h in spec.hosts if h.consul != "none"):
            body = {"Token": tokens[f"agent-{host.name}"]["secret"]}
            try:
                response = consul.request("PUT", "/v1/agent/token/agent", str(host.address),
                                          json=body)  # fmt: skip
            except AgentUnreachable as exc:
                missed[host.name] = f"not answering: {exc.cause}"
                continue
            if response.status_code != 200:
                missed[host.name] = f"answered {_answer(response)}"
        if not missed:
            report("every agent has its agent token")
    finally:
        consul.close()
    return missed
