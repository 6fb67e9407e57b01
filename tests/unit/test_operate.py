"""Spreading a service's instance count over the hosts (labctl.operate.spread), and what
`scale` refuses before it records anything."""

from __future__ import annotations

import pytest

from labctl import operate, paths
from labctl.operate import scale, scale_request, spread
from labctl.services import SEED_SERVICE as SEED
from labctl.spec import SpecError, load_spec, parse_spec
from roles.contract import lb_serves_again_command
from tests.conftest import PROJECT_ROOT


def spec_from(path: str):
    return load_spec(PROJECT_ROOT / path)[0]


def test_five_over_three_demo_hosts_round_robin_in_spec_order():
    assert spread(spec_from("lab.yaml"), SEED, 5) == {"server1": 2, "server2": 2, "server3": 1}


def test_zero_gives_every_host_none():
    assert spread(spec_from("lab.yaml"), SEED, 0) == {"server1": 0, "server2": 0, "server3": 0}


def test_hosts_without_demo_get_none():
    assert spread(spec_from("examples/five-hosts.yaml"), SEED, 5) == {
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
    assert spread(spec, SEED, 3) == {"s1": 2, "c1": 1, "bare": 0}


def test_a_second_service_spreads_over_its_own_hosts():
    spec = spec_from("examples/two-services.yaml")
    assert spread(spec, "danmu_service", 3) == {"server1": 2, "server2": 1, "server3": 0}


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """The lab state `scale` would write, under tmp_path; scale must refuse before it."""
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path)
    return lambda spec: paths.read_state(spec)


def test_scale_of_an_unknown_service_names_the_lab_services(recorded):
    spec = spec_from("examples/two-services.yaml")
    with pytest.raises(SpecError) as caught:
        scale(spec, "nope", 2, lambda line: None)
    assert caught.value.problems == [
        "unknown service 'nope'; the lab runs zhibo_service, danmu_service."
    ]
    assert recorded(spec) == {}


def test_scale_onto_consuls_rpc_port_is_refused_before_anything_is_recorded(recorded):
    spec = spec_from("lab.yaml")
    with pytest.raises(SpecError) as caught:
        scale(spec, SEED, 3 * 221, lambda line: None)  # 221 per host: 8080..8300
    (problem,) = caught.value.problems
    assert problem.startswith(f"scale {SEED}=663: services[0] ({SEED}): its 221 instances")
    assert "Consul's server RPC port 8300" in problem
    assert recorded(spec) == {}


def test_failing_an_existing_machine_kills_its_lab_containers(monkeypatch, tmp_path):
    """A machine the lab does not own is never powered off (labctl.operate)."""
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


@pytest.mark.parametrize("count", ["99999999999999999999", "9" * 5000, "230000"])
def test_a_count_past_the_ports_is_refused_at_once_whatever_its_size(count):
    """Checked against the ports before any work that grows with it (a loop over a count
    of 10**20 ran for as long as one let it)."""
    with pytest.raises(SpecError) as caught:
        scale_request(spec_from("lab.yaml"), f"{SEED}={count}")
    assert caught.value.problems == [
        f"{SEED}={count}: at most 172368 instances fit on its 3 hosts (one port each, from "
        "8080 to 65535); ask for fewer."
    ]


@pytest.mark.parametrize("text", ["zhibo_service", "=3", "zhibo_service=-1", "zhibo_service=²",
                                  "zhibo_service=٣", "zhibo_service=2.5", "zhibo_service= 3"])
def test_what_is_not_service_equals_a_whole_number(text):
    with pytest.raises(SpecError) as caught:
        scale_request(spec_from("lab.yaml"), text)
    assert caught.value.problems == [
        f"{text!r} is not SERVICE=N with N a whole number; write e.g. zhibo_service=5."
    ]


def test_a_count_that_fits_is_taken_as_a_number():
    assert scale_request(spec_from("lab.yaml"), f"{SEED}=007") == (SEED, 7)


def test_a_huge_spread_is_arithmetic_not_a_loop():
    assert spread(spec_from("lab.yaml"), SEED, 10**18) == dict.fromkeys(
        ("server1", "server2", "server3"), 10**18 // 3) | {"server1": 10**18 // 3 + 1}  # fmt: skip


HANDOVER = "docker exec keepalived vrrp-handover"
# What follows once the stopped LB serves again: the holder (m3, outranked by m2, which
# serves) drained towards m2, then the drains lifted in priority order.
ADDRESS_TO_THE_FIRST_LB = [
    ("m3", f"{HANDOVER} outranked 10.0.0.10 10.0.0.3"),
    ("m3", f"{HANDOVER} drain m3 10.0.0.10 10 10.0.0.3"),
    ("m2", f"{HANDOVER} undrain"),
    ("m3", f"{HANDOVER} undrain"),
]


def pair_spec(provider: str):
    return parse_spec(
        {
            "name": "labpair",
            "provider": provider,
            "network": {"subnet": "10.0.0.0/24", "lb_address": "10.0.0.10",
                        "allow_any_subnet": True},
            "hosts": [
                {"name": "m1", "address": "10.0.0.2", "consul": "server", "bootstrap": True,
                 "demo": 1},
                {"name": "m2", "address": "10.0.0.3", "consul": "server", "lb": True},
                {"name": "m3", "address": "10.0.0.4", "consul": "server", "lb": True},
            ],
        }
    )[0]  # fmt: skip


def record_remote(monkeypatch) -> list[tuple[str, str]]:
    """(host, command) of every command operate runs on a lab host, answered as a pair
    whose address is with m3 while m2 serves."""
    ran = []

    def remote(spec, host, command):
        ran.append((host, command))
        if " outranked " in command:
            return "10.0.0.3\n" if host == "m3" else ""
        return "c0ffee\nbeef\n" if command.startswith("docker ps") else ""

    monkeypatch.setattr(operate, "_remote", remote)
    monkeypatch.setattr(operate, "read_state", lambda spec: {"provider": "ssh"})
    return ran


def test_an_existing_pair_lbs_fail_and_recover_are_planned_moves_both_ways(monkeypatch):
    """On the ssh road `fail` of the LB that holds the shared address hands it over
    before its containers stop; `recover` waits until its LB serves, hands the address
    back from the holder (a planned move: the holder drained towards it, not a drain
    lifted under it), then lifts the drains in priority order (docs/lb-pair.md)."""
    spec = pair_spec("ssh")
    ran = record_remote(monkeypatch)
    operate.fail_or_recover(spec, "m2", True, lambda line: None)
    assert ran == [
        ("m2", f"{HANDOVER} drain m2 10.0.0.10 10 10.0.0.4 && docker stop lb"),
        ("m2", "docker ps -q --filter label=io.labctl.lab=labpair | xargs -r docker kill"),
    ]
    ran.clear()
    operate.fail_or_recover(spec, "m2", False, lambda line: None)
    assert ran == [
        ("m2", "docker ps -aq --filter label=io.labctl.lab=labpair | xargs -r docker start"),
        ("m2", f"{HANDOVER} ready"),
        *ADDRESS_TO_THE_FIRST_LB,
    ]


def test_restart_lb_on_a_pair_hands_the_address_over_from_each_lb_in_turn(monkeypatch):
    """Every LB, in priority order: its address handed over, its LB stopped gracefully and
    started, ready (still drained); then the address to the first LB, the drains lifted."""
    spec = pair_spec("docker")
    ran = record_remote(monkeypatch)
    targets = operate.lb_targets(spec, [])
    assert targets == ["m2", "m3"]
    assert operate.restart_lbs(spec, targets, lambda line: None) == "LB restarted on m2, m3"
    assert ran == [
        ("m2", f"{HANDOVER} drain m2 10.0.0.10 10 10.0.0.4 && docker stop lb"),
        ("m2", f"docker start lb && {HANDOVER} ready"),
        ("m3", f"{HANDOVER} drain m3 10.0.0.10 10 10.0.0.3 && docker stop lb"),
        ("m3", f"docker start lb && {HANDOVER} ready"),
        *ADDRESS_TO_THE_FIRST_LB,
    ]


def test_restart_lb_with_one_lb_restarts_it_and_waits_until_it_serves(monkeypatch):
    spec = spec_from("lab.yaml")
    ran = record_remote(monkeypatch)
    assert operate.restart_lbs(spec, operate.lb_targets(spec, []), lambda line: None) == (
        "LB restarted on server3"
    )
    assert ran == [("server3", f"docker restart lb && {lb_serves_again_command('lb')}")]


def test_restart_lb_names_what_is_not_an_lb_host_in_one_sentence():
    with pytest.raises(SpecError) as caught:
        operate.lb_targets(pair_spec("docker"), ["m1", "m3", "[x]", "m1"])
    assert caught.value.problems == ["'m1', '[x]' run no LB; use one of m2, m3."]
    with pytest.raises(SpecError) as caught:
        operate.lb_targets(pair_spec("docker"), ["m1"])
    assert caught.value.problems == ["'m1' runs no LB; use one of m2, m3."]
