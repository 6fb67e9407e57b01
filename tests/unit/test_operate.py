"""Spreading a demo instance count over the hosts (labctl.operate.spread)."""

from __future__ import annotations

from labctl.operate import spread
from labctl.spec import load_spec, parse_spec
from tests.conftest import PROJECT_ROOT


def spec_from(path: str):
    return load_spec(PROJECT_ROOT / path)[0]


def test_five_over_three_demo_hosts_round_robin_in_spec_order():
    assert spread(spec_from("lab.yaml"), 5) == {"server1": 2, "server2": 2, "server3": 1}


def test_zero_gives_every_host_none():
    assert spread(spec_from("lab.yaml"), 0) == {"server1": 0, "server2": 0, "server3": 0}


def test_hosts_without_demo_get_none():
    assert spread(spec_from("examples/five-hosts.yaml"), 5) == {
        "consul1": 0,
        "consul2": 0,
        "consul3": 0,
        "web1": 3,
        "web2": 2,
    }


def test_without_demo_hosts_every_consul_host_takes_instances():
    spec, _ = parse_spec(
        {
            "hosts": [
                {"name": "s1", "address": "192.168.56.2", "consul": "server"},
                {"name": "c1", "address": "192.168.56.3", "consul": "client"},
                {"name": "bare", "address": "192.168.56.4", "consul": "none"},
            ]
        }
    )
    assert spread(spec, 3) == {"s1": 2, "c1": 1, "bare": 0}


def test_failing_an_existing_machine_kills_its_lab_containers(monkeypatch, tmp_path):
    """A machine the lab does not own is never powered off (labctl.operate)."""
    from labctl import operate

    spec = parse_spec(
        {
            "name": "labssh",
            "provider": "ssh",
            "hosts": [{"name": "m1", "address": "10.0.0.2", "consul": "server", "demo": 1}],
        }
    )[0]
    ran = []

    def run(ssh, command, timeout=30.0, sudo=False):
        ran.append((command, sudo))
        return 0, "c0ffee\nbeef\n"

    monkeypatch.setattr(operate, "run", run)
    monkeypatch.setattr(operate, "read_state", lambda spec: {"provider": "ssh"})
    failed = operate.fail_or_recover(spec, "m1", True, lambda line: None)
    assert ran[-1] == (
        "docker ps -q --filter label=io.labctl.lab=labssh | xargs -r docker kill",
        True,
    )
    assert failed.startswith(
        "host m1: 2 lab containers killed (an existing machine is not powered off"
    )
    recovered = operate.fail_or_recover(spec, "m1", False, lambda line: None)
    assert ran[-1][0] == "docker ps -aq --filter label=io.labctl.lab=labssh | xargs -r docker start"
    assert recovered == "host m1: 2 lab containers started"
