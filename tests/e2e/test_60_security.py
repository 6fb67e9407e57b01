"""Secure by default: the suite's lab runs with gossip encryption and ACLs that deny by
default. Nobody without a token changes or reads the catalog, each part's token may do
its part only, an agent with another gossip key stays out, and no secret shows in a log,
a progress line, a command line or a container's configuration."""

from __future__ import annotations

import base64
import json
import os

import docker

from labctl import security
from labctl.lifecycle import log_file
from labctl.paths import LAB_LABEL, docker_network_name
from tests.e2e.conftest import E2E_SUBNET, labctl, wait_for
from tests.e2e.probes import SERVICE, consul, consul_as, on_host
from tests.support.suite_labs import SUITE_LABEL, owner

ROGUE_ADDRESS = f"{E2E_SUBNET}.60"  # on the lab's own network, outside the spec's hosts
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


def test_an_agent_with_another_gossip_key_does_not_join(lab):
    spec, connections, _ = lab
    other_key = base64.b64encode(os.urandom(32)).decode()
    client = docker.from_env()
    network = client.networks.get(docker_network_name(spec))
    rogue = client.containers.create(
        spec.consul_image,
        ["agent", "-node=rogue", f"-bind={ROGUE_ADDRESS}", f"-encrypt={other_key}",
         f"-retry-join={spec.hosts[0].address}"],
        name=f"{spec.name}-rogue-agent", network=network.name,
        labels={LAB_LABEL: spec.name, SUITE_LABEL: owner(spec.name)},
    )  # fmt: skip
    try:
        # On the lab's own network, at an address of ours (the network hands out others).
        network.disconnect(rogue)
        network.connect(rogue, ipv4_address=ROGUE_ADDRESS)
        rogue.start()
        refused = "No installed keys could decrypt the message"
        wait_for(lambda: refused in on_host(connections, "node1", "docker logs consul 2>&1"),
                 60, "node1 refusing the rogue agent's gossip")  # fmt: skip
        assert "rogue" not in {m["Name"] for m in consul(spec, "/v1/agent/members")}
    finally:
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
    spec, connections, _ = lab
    image = spec.consul_image
    stat = "stat -c '%a %U %n'"
    for host in ("node1", "node2", "node3"):
        listing = on_host(connections, host, f"{stat} /etc/lab/secrets /etc/lab/secrets/*")
        modes = {line.split()[2]: line.split()[:2] for line in listing.splitlines()}
        assert modes.pop("/etc/lab/secrets") == ["700", "root"]
        assert set(modes) <= {"/etc/lab/secrets/consul.header",
                              "/etc/lab/secrets/consul-template.token"}  # fmt: skip
        assert all(mode == ["600", "root"] for mode in modes.values()), modes
        # The gossip key is read by the agent, which runs as the image's consul user.
        gossip = on_host(connections, host, "stat -c '%a %u' /etc/lab/consul/gossip.json")
        uid_in_image = f"docker run --rm --entrypoint id {image} -u consul"
        consul_uid = on_host(connections, host, uid_in_image)
        assert gossip.split() == ["600", consul_uid.strip()]


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
