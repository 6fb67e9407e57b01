"""Consul cluster, demo live-stream services, health-checked registration."""

from __future__ import annotations

import time

import httpx
import pytest

from labctl import lifecycle
from labctl.services import SEED_SERVICE as SERVICE
from labctl.spec import load_spec
from labctl.verify import verify
from tests.e2e.conftest import (
    E2E_SUBNET,
    e2e_spec_data,
    finish_lab,
    labctl,
    noimage_spec_data,
    start_lab,
    wait_for,
    write_spec,
)
from tests.e2e.probes import consul, on_host

# Check interval + timeout (the seed's 10 s and 5 s) + a margin for the poll itself.
CHECK_DEADLINE = 10 + 5 + 10


def check_status(spec, service_id: str) -> str | None:
    for check in consul(spec, f"/v1/health/checks/{SERVICE}"):
        if check["ServiceID"] == service_id:
            return check["Status"]
    return None


def test_members_alive_with_the_spec_roles_and_a_leader(lab):
    spec, _, _ = lab
    members = {m["Name"]: m for m in consul(spec, "/v1/agent/members")}
    assert {name: m["Status"] for name, m in members.items()} == {
        "node1": 1, "node2": 1, "node3": 1
    }  # fmt: skip
    roles = {name: m["Tags"]["role"] for name, m in members.items()}
    assert roles == {"node1": "consul", "node2": "consul", "node3": "node"}
    leader = consul(spec, "/v1/status/leader")
    assert leader in {f"{h.address}:8300" for h in spec.consul_servers}


def test_three_instances_passing_at_the_spec_addresses(lab):
    spec, _, _ = lab
    entries = consul(spec, f"/v1/health/service/{SERVICE}?passing=1")
    found = sorted((e["Service"]["ID"], e["Service"]["Address"], e["Service"]["Port"])
                   for e in entries)  # fmt: skip
    assert found == [
        ("zhibo-1", f"{E2E_SUBNET}.2", 8080),
        ("zhibo-2", f"{E2E_SUBNET}.3", 8080),
        ("zhibo-3", f"{E2E_SUBNET}.4", 8080),
    ]
    for entry in entries:
        assert entry["Service"]["Tags"] == ["primary", "v2"]
        # Each instance is registered with the agent on its own host.
        assert entry["Node"]["Address"] == entry["Service"]["Address"]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_each_instance_answers_its_own_line(lab, n):
    response = httpx.get(f"http://{E2E_SUBNET}.{n + 1}:8080/", timeout=10)
    assert response.text == f"<h1>直播服务API{n} #IP:{E2E_SUBNET}.{n + 1}</h1>"
    assert response.headers["content-type"] == "text/html; charset=utf-8"


def test_verify_passes(lab, e2e_spec):
    result = labctl(e2e_spec, "verify", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # 3 members, a leader, 3 x (registered, answers), 3 x via LB, nginx -t.
    assert result.stdout.count(" ok ") == 3 + 1 + 6 + 3 + 1, result.stdout


def test_stopped_instance_goes_critical_then_passes_after_start(lab):
    spec, connections, _ = lab
    on_host(connections, "node2", "docker stop zhibo-2")
    stopped = time.monotonic()
    try:
        wait_for(lambda: check_status(spec, "zhibo-2") == "critical", CHECK_DEADLINE,
                 "zhibo-2's check turning critical after its container stopped")  # fmt: skip
        print(f"critical {time.monotonic() - stopped:.1f} s after docker stop")
        passing = {
            e["Service"]["ID"] for e in consul(spec, f"/v1/health/service/{SERVICE}?passing")
        }
        assert passing == {"zhibo-1", "zhibo-3"}
    finally:
        on_host(connections, "node2", "docker start zhibo-2")
    wait_for(lambda: check_status(spec, "zhibo-2") == "passing", CHECK_DEADLINE,
             "zhibo-2's check passing again after its container started")  # fmt: skip


def test_more_instances_on_one_host_changes_only_that_host(lab, e2e_spec, e2e_images, tmp_path):
    spec, _, _ = lab
    data = e2e_spec_data(e2e_images)
    data["hosts"][1]["demo"] = 2
    scaled, _ = load_spec(write_spec(tmp_path / "scaled.yaml", data))
    result = lifecycle.apply(scaled, lambda line: None)
    changed_hosts = {h for _, hosts in result.changed for h in hosts}
    assert changed_hosts == {"node2"}, result.describe_changes()

    def new_instance_passing():
        checks = {(c.what, c.target): c for c in verify(scaled)}
        return all(c.ok for c in checks.values()) and ("registered", "zhibo-2-2") in checks

    wait_for(new_instance_passing, CHECK_DEADLINE, "zhibo-2-2 registered and passing")
    response = httpx.get(f"http://{E2E_SUBNET}.3:8081/", timeout=10)
    assert response.text == f"<h1>直播服务API2-2 #IP:{E2E_SUBNET}.3</h1>"

    # Back to the spec: the extra instance is deregistered and its container removed.
    original, _ = load_spec(e2e_spec)
    result = lifecycle.apply(original, lambda line: None)
    assert {h for _, hosts in result.changed for h in hosts} == {"node2"}
    ids = {e["Service"]["ID"] for e in consul(spec, f"/v1/health/service/{SERVICE}")}
    assert ids == {"zhibo-1", "zhibo-2", "zhibo-3"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{E2E_SUBNET}.3:8081/", timeout=5)


def test_apply_after_all_that_changes_nothing(lab, e2e_spec):
    result = labctl(e2e_spec, "apply", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "no changes" in result.stderr, result.stderr


def test_an_image_that_cannot_be_had_stops_up_before_any_host_changes(tmp_path):
    import docker

    spec_file = write_spec(tmp_path / "noimage.yaml", noimage_spec_data())
    spec = start_lab(spec_file)
    try:
        result = labctl(spec_file, "up", timeout=600)
        assert result.returncode == 2, result.stdout + result.stderr
        message = " ".join(result.stderr.split())
        assert "image registry.invalid/hashicorp/consul:9.9.9 cannot be had" in message
        assert "docker load" in message and "--bundle" in message and "registry" in message
        label = {"label": f"io.labctl.lab={spec.name}"}
        assert docker.from_env().containers.list(all=True, filters=label) == []
        assert not (lifecycle.lab_dir(spec) / "state.json").exists()
    finally:
        finish_lab(spec_file)
