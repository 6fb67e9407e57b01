"""Two LBs, one address (docs/lb-pair.md), without hosts: the spec's network.lb_address,
what labctl hands the roles for a pair (and not for one LB), the tokens, and verify's
reading of the LBs' records."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labctl import lb_client, verify
from labctl.host_data import groups
from labctl.images.spec_images import lab_images
from labctl.security import token_specs
from labctl.spec import SpecError, load_spec, parse_spec
from roles.contract import LAB_HOST, Vrrp, VrrpPeer
from tests.conftest import PROJECT_ROOT

PAIR = PROJECT_ROOT / "examples" / "lb-pair.yaml"


def pair_data(**network: object) -> dict:
    return {
        "network": {"subnet": "192.168.56.0/24", **network},
        "hosts": [
            {"name": "server1", "address": "192.168.56.2", "consul": "server",
             "bootstrap": True, "demo": 1},
            {"name": "lb1", "address": "192.168.56.3", "consul": "client", "lb": True},
            {"name": "lb2", "address": "192.168.56.4", "consul": "client", "lb": True},
        ],
    }  # fmt: skip


def test_the_default_lab_has_one_lb_no_keepalived_and_its_one_token():
    spec, _ = load_spec(PROJECT_ROOT / "lab.yaml")
    assert not spec.lb_pair and spec.lb_address == "192.168.56.4"
    assert "keepalived" not in {image.key for image in lab_images(spec)}
    data = {name: d[LAB_HOST] for name, d in groups(spec, {})["lab"]}
    assert data["server3"].lb.vrrp is None
    names = [t.name for t in token_specs(spec)]
    assert [n for n in names if n.startswith("consul-template")] == ["consul-template"]


def test_a_pair_gets_keepalived_on_its_lbs_the_shared_address_and_a_token_each():
    spec, _ = load_spec(PAIR)
    assert spec.lb_pair and spec.lb_address == "192.168.56.10"
    images = {image.key: image.hosts for image in lab_images(spec)}
    assert images["keepalived"] == images["lb"] == ("server3", "lb2")
    data = {name: d[LAB_HOST] for name, d in groups(spec, {})["lab"]}
    vrrp = Vrrp("192.168.56.10", 24, (VrrpPeer("server3", "192.168.56.4"),
                                      VrrpPeer("lb2", "192.168.56.5")))  # fmt: skip
    assert data["server3"].lb.vrrp == data["lb2"].lb.vrrp == vrrp
    assert data["server1"].lb is None
    names = [t.name for t in token_specs(spec)]
    assert [n for n in names if n.startswith("consul-template")] == [
        "consul-template-server3", "consul-template-lb2"]  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=5, max_value=254))
def test_any_free_address_of_the_subnet_is_taken(last):
    spec, _ = parse_spec(pair_data(lb_address=f"192.168.56.{last}"))
    assert spec.lb_address == f"192.168.56.{last}"


@settings(max_examples=50, deadline=None)
@given(st.one_of(
    st.sampled_from(["192.168.56.0", "192.168.56.1", "192.168.56.255", "192.168.56.2",
                     "192.168.56.3", "192.168.56.4"]),
    st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
      .filter(lambda a: ipaddress.IPv4Address(a) not in ipaddress.IPv4Network("192.168.56.0/24")),
))  # fmt: skip
def test_an_address_that_is_not_free_in_the_subnet_is_refused_in_one_sentence(address):
    with pytest.raises(SpecError) as refused:
        parse_spec(pair_data(lb_address=address))
    (problem,) = refused.value.problems
    assert problem.startswith(f"lab spec: network.lb_address {address} is ")


def test_two_lbs_need_the_address_and_one_lb_refuses_it():
    with pytest.raises(SpecError) as missing:
        parse_spec(pair_data())
    assert missing.value.problems == [
        "lab spec: hosts lb1, lb2 all have lb: true but network.lb_address is not set; set it "
        "to a free address inside 192.168.56.0/24, the one clients use and the LBs hand over "
        "between them."
    ]
    one = pair_data(lb_address="192.168.56.10")
    one["hosts"][2]["lb"] = False
    with pytest.raises(SpecError) as extra:
        parse_spec(one)
    assert extra.value.problems == [
        "lab spec: network.lb_address 192.168.56.10 is set but only lb1 has lb: true; remove "
        "it (a single LB answers on its host's own address) or give a second host lb: true."
    ]


def views(*states: tuple[str, bool]) -> list[lb_client.VrrpView]:
    return [
        lb_client.VrrpView(name, f"192.168.56.{3 + i}", state, 200 - 10 * i, 0.0, holds)
        for i, (name, (state, holds)) in enumerate(zip(("lb1", "lb2"), states, strict=True))
    ]


@pytest.fixture
def pair_spec():
    return parse_spec(pair_data(lb_address="192.168.56.10"))[0]


def fake_lbs(monkeypatch, seen: list[lb_client.VrrpView], upstreams: dict[str, dict]) -> None:
    monkeypatch.setattr(lb_client, "vrrp_views", lambda client, spec, connections: seen)
    monkeypatch.setattr(
        lb_client,
        "read_lb_record",
        lambda client, address: lb_client.LbRecord(upstreams[address], 0, 0),
    )


def test_verify_names_the_holder_and_the_lbs_states(monkeypatch, pair_spec):
    same = {"zhibo_service": ["192.168.56.2:8080"]}
    fake_lbs(monkeypatch, views(("MASTER", True), ("BACKUP", False)),
             {"192.168.56.3": same, "192.168.56.4": same})  # fmt: skip
    checks = verify.pair_checks(httpx.Client(), pair_spec, None)
    assert all(c.ok for c in checks), checks
    assert [c.detail for c in checks if c.what == "LB address"] == ["held by lb1"]


def test_verify_names_split_brain_in_one_sentence(monkeypatch, pair_spec):
    same = {"zhibo_service": ["192.168.56.2:8080"]}
    fake_lbs(monkeypatch, views(("MASTER", True), ("MASTER", True)),
             {"192.168.56.3": same, "192.168.56.4": same})  # fmt: skip
    (failed,) = [c for c in verify.pair_checks(httpx.Client(), pair_spec, None) if not c.ok]
    assert failed.detail == (
        "split brain: lb1 and lb2 both hold 192.168.56.10, so their keepalived do not hear "
        "each other; check that VRRP (IP protocol 112) passes between them, or set "
        "network.lb_unicast: true where the network drops its multicast."
    )


def test_verify_fails_an_lb_in_fault_and_lbs_that_differ(monkeypatch, pair_spec):
    fake_lbs(monkeypatch, views(("MASTER", True), ("FAULT", False)),
             {"192.168.56.3": {"zhibo_service": ["192.168.56.2:8080"]},
              "192.168.56.4": {"zhibo_service": []}})  # fmt: skip
    failed = {(c.what, c.target) for c in verify.pair_checks(httpx.Client(), pair_spec, None)
              if not c.ok}  # fmt: skip
    assert failed == {("keepalived", "lb2"), ("LB upstreams", "lb2")}
