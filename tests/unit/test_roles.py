"""What the consul and demo_service roles derive from host data.

The data is what pyinfra hands a role: the role's DEFAULTS overlaid with the host
data labctl's inventory produces for a spec (labctl.host_data.groups).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from labctl.host_data import groups
from labctl.spec import load_spec
from roles import consul
from roles import registrator as registrator_role
from roles.consul import agent_config
from roles.contract import DEMO_SERVICE_ROLE, LAB_HOST, LabHost
from roles.demo_service import registration, registrator_labels
from roles.registrator import registrator_command
from tests.conftest import PROJECT_ROOT


def lab_host(host: str, spec_file: str = "lab.yaml") -> LabHost:
    spec, _ = load_spec(PROJECT_ROOT / spec_file)
    return dict(groups(spec, {})["lab"])[host][LAB_HOST]


def consul_data(host: str, spec_file: str = "lab.yaml", acl: bool = True, **overrides):
    lab = lab_host(host, spec_file)
    lab = replace(lab, consul=replace(lab.consul, acl=acl))
    return SimpleNamespace(**(consul.DEFAULTS | {LAB_HOST: lab} | overrides))


# --- consul.agent_config ----------------------------------------------------------


def test_bootstrap_server_config():
    assert agent_config(consul_data("server1")) == {
        "datacenter": "dc1",
        "node_name": "server1",
        "server": True,
        "bind_addr": "192.168.56.2",
        "advertise_addr": "192.168.56.2",
        "client_addr": "0.0.0.0",
        "data_dir": "/consul/data",
        "log_level": "INFO",
        "ui_config": {"enabled": True},
        "retry_join": ["192.168.56.3"],
        "retry_interval": "1s",
        "leave_on_terminate": False,
        "disable_update_check": True,
        "bootstrap_expect": 2,
        # Secure by default: deny, tokens kept across restarts; the gossip key is not
        # here but in its own root-only file.
        "acl": {
            "enabled": True,
            "default_policy": "deny",
            "down_policy": "extend-cache",
            "enable_token_persistence": True,
        },
    }


def test_client_config_of_the_seeds_open_lab():
    assert agent_config(consul_data("server3", acl=False)) == {
        "datacenter": "dc1",
        "node_name": "server3",
        "server": False,
        "bind_addr": "192.168.56.4",
        "advertise_addr": "192.168.56.4",
        "client_addr": "0.0.0.0",
        "data_dir": "/consul/data",
        "log_level": "INFO",
        "ui_config": {"enabled": True},
        "retry_join": ["192.168.56.2", "192.168.56.3"],
        "retry_interval": "1s",
        "leave_on_terminate": True,
        "disable_update_check": True,
    }


@pytest.mark.parametrize("host", ["server1", "server2"])
def test_every_server_expects_all_servers(host):
    assert agent_config(consul_data(host))["bootstrap_expect"] == 2


def test_every_server_of_five_hosts_expects_three():
    expectations = {
        h: agent_config(consul_data(h, "examples/five-hosts.yaml")).get("bootstrap_expect")
        for h in ("consul1", "consul2", "consul3", "web1", "web2")
    }
    assert expectations == {"consul1": 3, "consul2": 3, "consul3": 3, "web1": None, "web2": None}


def test_client_has_no_bootstrap_expect():
    assert "bootstrap_expect" not in agent_config(consul_data("server3"))


@pytest.mark.parametrize(
    ("host", "join"),
    [
        ("server1", ["192.168.56.3"]),
        ("server2", ["192.168.56.2"]),
        ("server3", ["192.168.56.2", "192.168.56.3"]),
    ],
)
def test_retry_join_lists_the_servers_but_never_the_host_itself(host, join):
    assert agent_config(consul_data(host))["retry_join"] == join


def test_retry_join_puts_the_bootstrap_server_first():
    config = agent_config(consul_data("web2", "examples/five-hosts.yaml"))
    assert config["retry_join"] == ["192.168.57.11", "192.168.57.12", "192.168.57.13"]


@pytest.mark.parametrize("host", ["server1", "server2", "server3"])
def test_bind_and_advertise_are_the_host_address(host):
    data = consul_data(host)
    config = agent_config(data)
    assert config["bind_addr"] == config["advertise_addr"] == data.lab_host.address


def test_ui_can_be_turned_off():
    assert agent_config(consul_data("server3", consul_ui=False))["ui_config"] == {"enabled": False}


def test_datacenter_and_log_level_come_from_data():
    config = agent_config(consul_data("server1", consul_datacenter="lab", consul_log_level="DEBUG"))
    assert (config["datacenter"], config["log_level"]) == ("lab", "DEBUG")


# --- demo_service.registration ----------------------------------------------------


def test_registration_of_the_first_instance_is_the_seeds():
    lab = lab_host("server1")
    (instance,) = lab.instances
    assert registration(lab, instance) == {
        "ID": "zhibo-1",
        "Name": "zhibo_service",
        "Tags": ["primary", "v2"],
        "Address": "192.168.56.2",
        "Port": 8080,
        "EnableTagOverride": False,
        "Meta": {"lab_managed": "demo_service", "title": "直播服务API1"},
        "Check": {
            "Name": "HTTP http://192.168.56.2:8080/health",
            "HTTP": "http://192.168.56.2:8080/health",
            "Interval": "10s",
            "Timeout": "5s",
            "DeregisterCriticalServiceAfter": "90m",
        },
    }


def test_registration_is_managed_by_the_demo_service_role():
    lab = lab_host("server2")
    (instance,) = lab.instances
    assert registration(lab, instance)["Meta"]["lab_managed"] == DEMO_SERVICE_ROLE


def test_registrations_of_a_host_with_several_instances_use_their_own_ports():
    lab = lab_host("web2", "examples/five-hosts.yaml")
    bodies = [registration(lab, i) for i in lab.instances]
    assert [(b["ID"], b["Address"], b["Port"], b["Check"]["HTTP"]) for b in bodies] == [
        ("zhibo-5", "192.168.57.22", 8080, "http://192.168.57.22:8080/health"),
        ("zhibo-5-2", "192.168.57.22", 8081, "http://192.168.57.22:8081/health"),
        ("zhibo-5-3", "192.168.57.22", 8082, "http://192.168.57.22:8082/health"),
    ]


def test_registration_tags_are_a_copy_of_the_data():
    lab = lab_host("server1")
    (instance,) = lab.instances
    registration(lab, instance)["Tags"].append("extra")
    assert lab.services["zhibo_service"].tags == ("primary", "v2")


def test_a_second_service_registers_under_its_own_name_tags_port_and_check():
    lab = lab_host("server1", "examples/two-services.yaml")
    bodies = {b["ID"]: b for b in (registration(lab, i) for i in lab.instances)}
    assert sorted(bodies) == ["danmu-service-1", "danmu-service-1-2", "zhibo-1"]
    second = bodies["danmu-service-1-2"]
    assert second == {
        "ID": "danmu-service-1-2",
        "Name": "danmu_service",
        "Tags": ["v1"],
        "Address": "192.168.58.2",
        "Port": 9081,
        "EnableTagOverride": False,
        "Meta": {"lab_managed": "demo_service", "title": "danmu_service 1-2"},
        "Check": {
            "Name": "HTTP http://192.168.58.2:9081/health",
            "HTTP": "http://192.168.58.2:9081/health",
            "Interval": "5s",
            "Timeout": "2s",
            "DeregisterCriticalServiceAfter": "90m",
        },
    }
    # The seed's service is as it was, beside it.
    assert bodies["zhibo-1"]["Name"] == "zhibo_service" and bodies["zhibo-1"]["Port"] == 8080


# --- registrator mode (examples/registrator.yaml) -------------------------------------

REGISTRATOR_SPEC = "examples/registrator.yaml"


def test_registrator_runs_beside_every_agent_and_only_where_a_service_is_registrators():
    assert all(lab_host(h, REGISTRATOR_SPEC).registrator for h in ("server1", "server2", "server3"))
    assert lab_host("server1").registrator is None  # the seed's lab: no registrator
    modes = {n: r.mode for n, r in lab_host("server1", REGISTRATOR_SPEC).services.items()}
    assert modes == {"zhibo_service": "lab", "danmu_service": "registrator"}


def test_registrator_mode_instances_carry_registrators_labels_for_the_service_s_check():
    lab = lab_host("server1", REGISTRATOR_SPEC)
    instance = next(i for i in lab.instances if i.service == "danmu_service")
    assert registrator_labels(lab.services["danmu_service"], instance) == {
        "SERVICE_NAME": "danmu_service",
        "SERVICE_TAGS": "v1",
        "SERVICE_CHECK_HTTP": "/health",
        "SERVICE_CHECK_INTERVAL": "5s",
        "SERVICE_CHECK_TIMEOUT": "2s",
        "SERVICE_CHECK_DEREGISTER_AFTER": "1m",
    }


def test_registrator_gets_its_tags_reversed_so_it_registers_them_in_the_spec_s_order():
    lab = lab_host("server1", REGISTRATOR_SPEC)
    instance = next(i for i in lab.instances if i.service == "danmu_service")
    service = replace(lab.services["danmu_service"], tags=("a", "b", "c"))
    assert registrator_labels(service, instance)["SERVICE_TAGS"] == "c,b,a"


def test_the_registrator_command_is_the_docs_advice_with_no_token_on_it():
    lab = lab_host("server2", REGISTRATOR_SPEC)
    command = registrator_command(lab, 10)
    assert command == [
        "-explicit", "-ip", "192.168.59.3", "-resync", "10", "-cleanup",
        "-retry-attempts", "-1", "consul://127.0.0.1:8500",
    ]  # fmt: skip
    assert registrator_role.DOCKER_SOCKET_MOUNT.endswith(":ro")
