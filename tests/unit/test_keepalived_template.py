"""templates/keepalived/keepalived.conf.j2, rendered as pyinfra's files.template renders
it (Jinja2, StrictUndefined), each rendering checked by the real keepalived
(`keepalived -t`) in the lab's keepalived image (templates/keepalived), where the track
and notify scripts it names exist, on interfaces of the names the renderings use."""

from __future__ import annotations

import ipaddress
import re

import docker
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import UndefinedError

from testbed.vrrp_pair import LABEL, keepalived_image, put_files, render_keepalived_conf

TWO = [{"name": "server3", "address": "192.168.56.4"},
       {"name": "server2", "address": "192.168.56.3"}]  # fmt: skip
THREE = [{"name": "lb-a", "address": "10.20.0.11"},
         {"name": "lb-b", "address": "10.20.1.12"},
         {"name": "lb-c", "address": "10.20.2.13"}]  # fmt: skip


def variables(**overrides: object) -> dict:
    """The seed's subnet with two LBs, multicast, on the docker road's interface."""
    return {
        "vrrp_hosts": TWO,
        "vrrp_host": "server3",
        "vrrp_address": "192.168.56.10",
        "vrrp_prefixlen": 24,
        "vrrp_interface": "eth1",
        "vrrp_advert_int": 0.2,
        "vrrp_unicast": False,
    } | overrides


# Renderings keepalived must accept: each LB of a pair (multicast, and unicast as on the
# ssh road), each of three LBs on a /16 with unicast, VirtualBox's interface name, and
# keepalived's default 1 s adverts.
CASES = {
    "pair-master": variables(),
    "pair-backup": variables(vrrp_host="server2"),
    "pair-unicast": variables(vrrp_unicast=True),
    "three-unicast-a": variables(vrrp_hosts=THREE, vrrp_host="lb-a", vrrp_address="10.20.9.9",
                                 vrrp_prefixlen=16, vrrp_unicast=True, vrrp_interface="ens4"),
    "three-unicast-c": variables(vrrp_hosts=THREE, vrrp_host="lb-c", vrrp_address="10.20.9.9",
                                 vrrp_prefixlen=16, vrrp_unicast=True, vrrp_interface="ens4"),
    "virtualbox": variables(vrrp_interface="enp0s8"),
    "one-second-adverts": variables(vrrp_advert_int=1),
}  # fmt: skip
# VRRPv3 has no authentication: keepalived reports the block as an error.
WITH_AUTHENTICATION = re.sub(
    r"(advert_int .*\n)",
    r"\1    authentication {\n        auth_type PASS\n        auth_pass secret\n    }\n",
    render_keepalived_conf(**CASES["pair-master"]),
)


def config_test(configs: dict[str, str]) -> dict[str, tuple[int, str]]:
    """`keepalived -t` on every configuration, in one container of the keepalived image
    with the interfaces they name (veth pairs: this kernel may lack the dummy type):
    {name: (exit status, output)}."""
    engine = docker.from_env()
    image = keepalived_image(engine)
    interfaces = sorted({m for c in configs.values() for m in re.findall(r"interface (\S+)", c)})
    container = engine.containers.run(
        image, ["sleep", "infinity"], detach=True, cap_add=["NET_ADMIN"],
        labels={LABEL: "keepalived-template-test"},
    )  # fmt: skip
    try:
        put_files(container, "/tmp", {f"{name}.conf": c.encode() for name, c in configs.items()})
        for number, interface in enumerate(interfaces):
            if container.exec_run(["ip", "link", "show", interface]).exit_code != 0:
                made = container.exec_run(["ip", "link", "add", interface, "type", "veth",
                                           "peer", "name", f"peer{number}"])  # fmt: skip
                assert made.exit_code == 0, made.output.decode()
        results = {}
        for name in configs:
            run = container.exec_run(["keepalived", "-t", "-f", f"/tmp/{name}.conf"])
            results[name] = (run.exit_code, run.output.decode())
        return results
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def checked() -> dict[str, tuple[int, str]]:
    renders = {name: render_keepalived_conf(**case) for name, case in CASES.items()}
    return config_test(renders | {"with-authentication": WITH_AUTHENTICATION})


@pytest.mark.parametrize("case", CASES)
def test_keepalived_accepts_the_rendering(checked, case):
    status, output = checked[case]
    assert status == 0, output


def test_keepalived_refuses_authentication_with_vrrp_version_3(checked):
    status, output = checked["with-authentication"]
    assert status != 0
    assert "VRRP version 3 does not support authentication" in output


def setting(config: str, keyword: str) -> str:
    match = re.search(rf"^\s*{keyword} (.+)$", config, re.M)
    assert match, f"no {keyword} in:\n{config}"
    return match.group(1)


def block(config: str, keyword: str) -> list[str]:
    match = re.search(rf"^\s*{keyword} \{{\n(.*?)\n\s*\}}", config, re.M | re.S)
    assert match, f"no {keyword} block in:\n{config}"
    return [line.strip() for line in match.group(1).splitlines()]


def test_the_first_lb_has_the_highest_priority_and_each_next_ten_less():
    priorities = [
        setting(render_keepalived_conf(**variables(vrrp_hosts=THREE, vrrp_host=h["name"])),
                "priority")
        for h in THREE
    ]  # fmt: skip
    assert priorities == ["200", "190", "180"]


def test_every_lb_starts_as_backup_and_preempts():
    config = render_keepalived_conf(**variables())
    assert setting(config, "state") == "BACKUP"
    assert "nopreempt" not in config and "preempt_delay" not in config


def test_a_drained_lb_ranks_below_every_lb_that_is_not():
    ten = [{"name": f"lb{n}", "address": f"10.0.0.{n}"} for n in range(1, 11)]
    first, tenth = (render_keepalived_conf(**variables(vrrp_hosts=ten, vrrp_host=name))
                    for name in ("lb1", "lb10"))  # fmt: skip
    drain_weight = int(block(first, "track_file")[0].split("weight")[1])
    assert int(setting(first, "priority")) + drain_weight < int(setting(tenth, "priority"))


def test_the_address_and_adverts_are_the_specs():
    config = render_keepalived_conf(**variables(vrrp_advert_int=0.2))
    assert block(config, "virtual_ipaddress") == ["192.168.56.10/24 dev eth1"]
    assert setting(config, "interface") == "eth1"
    assert setting(config, "advert_int") == "0.2"
    assert setting(config, "vrrp_version") == "3"


def test_multicast_names_no_peer():
    config = render_keepalived_conf(**variables(vrrp_unicast=False))
    assert not re.search(r"^\s*(unicast_|check_unicast)", config, re.M)


def test_unicast_sends_from_this_lb_to_every_other():
    config = render_keepalived_conf(
        **variables(vrrp_hosts=THREE, vrrp_host="lb-b", vrrp_unicast=True)
    )
    assert setting(config, "unicast_src_ip") == "10.20.1.12"
    assert block(config, "unicast_peer") == ["10.20.0.11", "10.20.2.13"]
    assert re.search(r"^\s*check_unicast_src$", config, re.M)


def router_id(address: str) -> int:
    return int(setting(render_keepalived_conf(**variables(vrrp_address=address)),
                       "virtual_router_id"))  # fmt: skip


def test_every_lb_of_a_lab_has_the_same_router_id():
    ids = {
        setting(render_keepalived_conf(**variables(vrrp_host=h["name"])), "virtual_router_id")
        for h in TWO
    }
    assert len(ids) == 1


@given(
    st.ip_addresses(v=4).filter(lambda a: int(a) < 2**32 - 255),
    st.integers(min_value=1, max_value=254),
)
def test_two_addresses_less_than_255_apart_never_share_a_router_id(address, distance):
    other = address + distance
    first, second = router_id(str(address)), router_id(str(other))
    assert 1 <= first <= 255 and 1 <= second <= 255
    assert first != second


def test_every_address_of_a_24_has_its_own_router_id():
    subnet = ipaddress.ip_network("192.168.56.0/24")
    ids = [router_id(str(a)) for a in subnet.hosts()]
    assert len(set(ids)) == len(ids)


def test_a_missing_variable_fails_the_rendering():
    incomplete = variables()
    del incomplete["vrrp_unicast"]
    with pytest.raises(UndefinedError):
        render_keepalived_conf(**incomplete)


def test_the_state_file_names_this_host_the_address_and_every_lb():
    config = render_keepalived_conf(**variables(vrrp_host="server2"))
    assert setting(config, "vrrp_notify_fifo_script") == (
        '"/usr/local/bin/vrrp-notify server2 192.168.56.10 '
        'server3=192.168.56.4,server2=192.168.56.3"'
    )
