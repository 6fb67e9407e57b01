"""Secure by default: the suite's lab runs with gossip encryption and ACLs that deny by
default. Nobody without a token changes or reads the catalog, each part's token may do
its part only, an agent with another gossip key stays out, and no secret shows in a log,
a progress line, a command line or a container's configuration."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import docker
import pytest

from labctl import security
from labctl.converge import ConvergeError
from labctl.lifecycle import converge_lab, log_file
from labctl.paths import docker_network_name, with_state
from roles.contract import LAB_LABEL
from testbed.ownership import SUITE_LABEL, owner
from tests.e2e.conftest import E2E_SUBNET, labctl, wait_for
from tests.e2e.probes import SERVICE, consul, consul_as, on_host

# On the lab's own network, outside the spec's hosts.
ROGUE_ADDRESS, PLAIN_ROGUE_ADDRESS = f"{E2E_SUBNET}.60", f"{E2E_SUBNET}.61"
INSTANCES = {"zhibo-1", "zhibo-2", "zhibo-3"}


def registered(spec) -> set[str]:
    return {e["Service"]["ID"] for e in consul(spec, f"/v1/health/service/{SERVICE}")}


def test_an_anonymous_register_is_refused_and_changes_nothing(lab):
    spec, _, _ = lab
    rogue = {"ID": "rogue", "Name": SERVICE, "Address": "203.0.113.7", "Port": 80}
    response = consul_as(spec, None, "PUT", "/v1/agent/service/register", json=rogue)
    assert response.status_code == 403 and response.text == "Permission denied"
    assert registered(spec) == INSTANCES


def test_an_anonymous_read_gets_what_default_deny_gives_nothing(lab):
    spec, _, _ = lab
    response = consul_as(spec, None, "GET", f"/v1/health/service/{SERVICE}")
    assert response.status_code == 200 and response.json() == []
    assert consul_as(spec, None, "GET", "/v1/agent/members").json() == []


def test_the_consul_template_token_reads_but_cannot_register(lab):
    spec, _, _ = lab
    reads = consul_as(spec, "consul-template", "GET", f"/v1/health/service/{SERVICE}")
    assert {e["Service"]["ID"] for e in reads.json()} == INSTANCES
    rogue = {"ID": "rogue", "Name": SERVICE, "Address": "203.0.113.7", "Port": 80}
    response = consul_as(spec, "consul-template", "PUT", "/v1/agent/service/register", json=rogue)
    assert response.status_code == 403
    assert registered(spec) == INSTANCES


def test_an_agent_with_another_gossip_key_or_none_does_not_join(lab):
    spec, connections, _ = lab
    other_key = base64.b64encode(os.urandom(32)).decode()
    client = docker.from_env()
    network = client.networks.get(docker_network_name(spec))
    # Each with the refusal the lab's agents log for it (memberlist's own words).
    rogues = {
        "rogue-keyed": (ROGUE_ADDRESS, [f"-encrypt={other_key}"],
                        "No installed keys could decrypt the message"),
        "rogue-plain": (PLAIN_ROGUE_ADDRESS, [],
                        "Encryption is configured but remote state is not encrypted"),
    }  # fmt: skip
    containers = []
    since = int(time.time())  # the agents' log from now on: the refusals of these rogues
    try:
        for node, (address, key_args, _) in rogues.items():
            rogue = client.containers.create(
                spec.consul_image,
                ["agent", f"-node={node}", f"-bind={address}", *key_args,
                 f"-retry-join={spec.hosts[0].address}"],
                name=f"{spec.name}-{node}", network=network.name,
                labels={LAB_LABEL: spec.name, SUITE_LABEL: owner(spec.name)},
            )  # fmt: skip
            containers.append(rogue)
            # On the lab's own network, at an address of ours (the network hands out others).
            network.disconnect(rogue)
            network.connect(rogue, ipv4_address=address)
            rogue.start()
        for node, (_, _, refused) in rogues.items():
            wait_for(lambda refused=refused: refused in on_host(
                connections, "node1", f"docker logs --since {since} consul 2>&1"),
                60, f"node1 refusing {node}'s gossip")  # fmt: skip
        members = {m["Name"] for m in consul(spec, "/v1/agent/members")}
        assert not members & set(rogues), members
    finally:
        for rogue in containers:
            rogue.remove(force=True)


def lab_secrets(spec) -> list[str]:
    tokens = [t["secret"] for t in security.saved_tokens(spec).values()]
    return [security.gossip_key(spec), *tokens]


def test_no_secret_shows_in_logs_progress_command_lines_or_containers(lab):
    spec, connections, up = lab
    secrets = lab_secrets(spec)
    assert len(secrets) == 1 + 1 + 3 * 2 + 2  # gossip key, management, per node x2, LB, read
    shown = up.stdout + up.stderr
    for log in log_file(spec, "converge").parent.glob("*"):
        shown += log.read_text(errors="replace")
    for host in ("node1", "node2", "node3"):
        shown += on_host(connections, host, "ps -eo args")
        shown += on_host(connections, host, "docker inspect $(docker ps -aq)")
    leaked = [s[:6] + "…" for s in secrets if s in shown]
    assert leaked == [], f"secrets shown: {leaked}"


def test_secrets_on_the_hosts_are_files_only_their_reader_may_read(lab):
    """Each file named, so that a missing one fails: every host's registration token
    header, the LB host's consul-template token, every agent's gossip key."""
    spec, connections, _ = lab
    image = spec.consul_image
    expected = {"node1": {"consul.header"}, "node2": {"consul.header"},
                "node3": {"consul.header", "consul-template.token"}}  # fmt: skip
    for host, files in expected.items():
        listing = on_host(connections, host, "ls -A /etc/lab/secrets")
        assert set(listing.split()) == files, (host, listing)
        paths = " ".join(f"/etc/lab/secrets/{name}" for name in sorted(files))
        stats = on_host(connections, host, f"stat -c '%a %U %n' /etc/lab/secrets {paths}")
        modes = {line.split()[2]: line.split()[:2] for line in stats.splitlines()}
        assert modes.pop("/etc/lab/secrets") == ["700", "root"]
        assert modes == {f"/etc/lab/secrets/{name}": ["600", "root"] for name in files}, host
        # The gossip key is read by the agent, which runs as the image's consul user.
        gossip = on_host(connections, host, "stat -c '%a %u' /etc/lab/consul/gossip.json")
        uid_in_image = f"docker run --rm --entrypoint id {image} -u consul"
        consul_uid = on_host(connections, host, uid_in_image)
        assert gossip.split() == ["600", consul_uid.strip()]


def test_secrets_on_the_control_machine_are_files_only_their_owner_may_read(lab):
    spec, _, _ = lab
    folder = security.secrets_dir(spec)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert modes == {"gossip.key": 0o600, "tokens.json": 0o600}, modes


def test_a_log_level_that_prints_the_token_is_refused_with_acls_on(lab):
    """consul-template 0.19 prints its whole configuration, Consul token included, at
    debug and trace (the stand-in as the real one): shown on the LB's own binary with
    its own token, counting the lines that hold it and never printing it. Hence a
    converge with lb_log_level debug or trace is refused before anything changes."""
    spec, connections, _ = lab
    secret = security.token(spec, "consul-template")
    probe = (
        "docker exec lb sh -c 't=$(cat /run/secrets/consul-template.token); "
        "CONSUL_HTTP_TOKEN=$t timeout 60 consul-template -once -dry -log-level={} "
        "-consul-addr=127.0.0.1:8500 -template=/templates/service.ctmpl:/tmp/probe.conf "
        "2>&1 | grep -c -F -e \"$t\"; true'"
    )
    shown = {level: int(on_host(connections, "node3", probe.format(level)).split()[-1])
             for level in ("debug", "trace", "info")}  # fmt: skip
    assert shown["debug"] >= 1 and shown["trace"] >= 1 and shown["info"] == 0, shown

    every_container = "docker ps -aq --no-trunc | sort"
    before = {h: on_host(connections, h, every_container) for h in ("node1", "node2", "node3")}
    log = log_file(spec, "converge")
    for level in ("debug", "TRACE"):
        offset = log.stat().st_size
        with pytest.raises(ConvergeError):
            converge_lab(with_state(spec), lambda line: None,
                         extra_args=("--data", f"lb_log_level={level}"))  # fmt: skip
        written = " ".join(log.read_text(errors="replace")[offset:].split())
        assert (f"node3: lb_log_level {level} makes consul-template 0.19 print its Consul "
                "token in its log; use info (or warn) with ACLs on.") in written, written[-2000:]
    after = {h: on_host(connections, h, every_container) for h in ("node1", "node2", "node3")}
    assert after == before  # nothing was replaced, on any host
    env = on_host(connections, "node3", "docker inspect -f '{{json .Config.Env}}' lb")
    assert "LB_LOG_LEVEL=info" in env
    leaked = secret in on_host(connections, "node3", "docker logs lb 2>&1")
    assert not leaked, "consul-template's token is in the LB's log"  # never the token itself


def test_labctl_token_prints_the_read_token_and_status_says_the_ui_needs_it(lab, e2e_spec):
    spec, _, _ = lab
    printed = labctl(e2e_spec, "token", "read", timeout=60)
    assert printed.returncode == 0 and printed.stdout.strip() == security.token(spec, "read")
    listing = labctl(e2e_spec, "token", timeout=60)
    assert listing.returncode == 0 and "consul-template" in listing.stdout
    assert security.token(spec, "read") not in listing.stdout  # the list shows no secret
    status = labctl(e2e_spec, "status", timeout=120)
    assert "Consul UI" in status.stderr and "labctl token read" in status.stderr


def test_watch_reads_consul_with_the_read_token(lab, e2e_spec):
    shown = labctl(e2e_spec, "watch", "--count", "1", timeout=60)
    assert shown.returncode == 0, shown.stderr
    for instance in INSTANCES:
        assert instance in shown.stdout, shown.stdout
    assert "passing" in shown.stdout


def test_verify_json_reports_every_instance_registered_with_acls_on(lab, e2e_spec):
    result = labctl(e2e_spec, "verify", "--json", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    registered_ok = {c["target"] for c in report["checks"] if c["what"] == "registered" and c["ok"]}
    assert registered_ok == INSTANCES
