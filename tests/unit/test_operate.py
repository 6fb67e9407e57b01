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
