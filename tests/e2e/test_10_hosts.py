"""Lab foundation: three hosts on the docker provider, each with a Docker engine
installed by the deploy, reachable over SSH and over the private network; a
second apply changes nothing. (`down` is checked last, in test_90.)"""

from __future__ import annotations

import json

from labctl.remote import run
from tests.e2e.conftest import labctl


def test_every_host_answers_over_ssh(lab):
    spec, connections, _ = lab
    assert sorted(connections) == ["node1", "node2", "node3"]
    for host in spec.hosts:
        code, output = run(connections[host.name], "hostname")
        assert code == 0 and output.strip() == host.name


def test_docker_engine_is_active_on_every_host(lab):
    spec, connections, _ = lab
    for host in spec.hosts:
        code, output = run(connections[host.name], "systemctl is-active docker")
        assert output.strip() == "active", (host.name, output)
        code, output = run(
            connections[host.name], "docker info --format '{{json .LoggingDriver}}'", sudo=True
        )
        assert code == 0 and json.loads(output) == "json-file", (host.name, output)


def test_daemon_json_comes_from_the_role(lab):
    _, connections, _ = lab
    code, output = run(connections["node1"], "cat /etc/docker/daemon.json")
    assert code == 0
    assert json.loads(output)["log-opts"] == {"max-file": "3", "max-size": "10m"}


def test_hosts_reach_each_other_on_private_addresses(lab):
    spec, connections, _ = lab
    for host in spec.hosts:
        own = run(connections[host.name], "ip -4 -o addr show")[1]
        assert f"{host.address}/24" in own, (host.name, own)
        for peer in spec.hosts:
            if peer is host:
                continue
            code, output = run(connections[host.name], f"ping -c 1 -W 3 {peer.address}")
            assert code == 0, f"{host.name} cannot reach {peer.name} at {peer.address}: {output}"


def test_status_table_shows_running_hosts_with_active_engines(lab, e2e_spec):
    result = labctl(e2e_spec, "status", timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "node" in line]
    assert len(rows) == 3
    for row in rows:
        assert "docker" in row and "running" in row and "active" in row, row


def test_second_apply_changes_nothing(lab, e2e_spec):
    result = labctl(e2e_spec, "apply", timeout=600)
    assert result.returncode == 0, result.stderr
    # On failure the message lists every operation that changed (Molecule's idempotence check).
    assert "no changes" in result.stderr, result.stderr
