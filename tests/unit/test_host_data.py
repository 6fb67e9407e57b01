"""The host data labctl hands the roles (labctl/host_data.py, roles/contract.py): pyinfra
groups and each host's LabHost, derived from the spec."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import typing
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

from labctl.connections import connection_data, ssh_data_from_vagrant
from labctl.host_data import groups
from labctl.spec import load_spec, parse_spec
from roles.contract import LAB_HOST, Image, ImagePlan, LabHost
from tests.conftest import PROJECT_ROOT


def names(group) -> list[str]:
    return [name for name, _ in group]


def lab_hosts(spec, state: dict | None = None) -> dict[str, LabHost]:
    """Each host's LabHost, as the roles read it."""
    return {name: data[LAB_HOST] for name, data in groups(spec, {}, state)["lab"]}


def test_default_spec_groups_and_data():
    spec, _ = load_spec(PROJECT_ROOT / "lab.yaml")
    g = groups(spec, {})
    assert names(g["lab"]) == ["server1", "server2", "server3"]
    assert names(g["consul_servers"]) == ["server1", "server2"]
    assert names(g["consul_clients"]) == ["server3"]
    assert names(g["lb"]) == ["server3"]
    assert names(g["demo"]) == ["server1", "server2", "server3"]
    data = lab_hosts(spec)
    assert data["server1"].consul.server is True
    assert data["server3"].consul.server is False
    assert data["server3"].lb is not None and data["server1"].lb is None
    # Consul's advice: every server expects all servers.
    assert {d.consul.servers for d in data.values()} == {2}
    assert data["server3"].consul.join == ("192.168.56.2", "192.168.56.3")
    assert data["server2"].address == "192.168.56.3"
    # Every host knows every LB, for the rolling waits.
    assert {d.lb_addresses for d in data.values()} == {("192.168.56.4",)}


def test_five_host_spec():
    spec, _ = load_spec(PROJECT_ROOT / "examples" / "five-hosts.yaml")
    g = groups(spec, {})
    assert len(g["lab"]) == 5
    assert names(g["consul_servers"]) == ["consul1", "consul2", "consul3"]
    assert names(g["consul_clients"]) == ["web1", "web2"]
    assert names(g["lb"]) == ["web1"]
    assert names(g["demo"]) == ["web1", "web2"]
    data = lab_hosts(spec)
    assert [i.id for i in data["web2"].instances] == ["zhibo-5", "zhibo-5-2", "zhibo-5-3"]
    assert [i.port for i in data["web2"].instances] == [8080, 8081, 8082]
    assert {d.consul.servers for d in data.values()} == {3}
    assert data["web1"].consul.join == ("192.168.57.11", "192.168.57.12", "192.168.57.13")


def test_bootstrap_server_is_joined_first_even_when_listed_later():
    spec, _ = parse_spec(
        {
            "hosts": [
                {"name": "a1", "address": "192.168.56.2", "consul": "server"},
                {"name": "b1", "address": "192.168.56.3", "consul": "server", "bootstrap": True},
                {"name": "c1", "address": "192.168.56.4", "consul": "server"},
            ]
        }
    )
    assert lab_hosts(spec)["a1"].consul.join[0] == "192.168.56.3"


def test_ssh_provider_connection_data_needs_no_vagrant():
    spec, _ = parse_spec(
        {
            "provider": "ssh",
            "ssh": {"user": "admin", "key": "~/.ssh/lab"},
            "hosts": [
                {"name": "a1", "address": "10.0.0.5", "consul": "server"},
                {"name": "b1", "address": "10.0.0.6", "ssh_host": "b1.example", "ssh_port": 2200},
            ],
        }
    )
    data = connection_data(spec, "ssh")
    assert data["a1"] == {
        "ssh_hostname": "10.0.0.5",
        "ssh_user": "admin",
        "ssh_port": 22,
        "ssh_key": str(Path.home() / ".ssh" / "lab"),
        # The key given is the only one tried.
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "ssh_strict_host_key_checking": "accept-new",
        "ssh_known_hosts_file": str(Path.home() / ".ssh" / "known_hosts"),
        "_sudo": True,
    }
    assert data["b1"]["ssh_hostname"] == "b1.example"
    assert data["b1"]["ssh_port"] == 2200


def test_vagrant_ssh_config_maps_to_pyinfra_keys():
    conf = {"HostName": "172.17.0.3", "Port": "22", "User": "vagrant", "IdentityFile": "/k"}
    assert ssh_data_from_vagrant(conf) == {
        "ssh_hostname": "172.17.0.3",
        "ssh_port": 22,
        "ssh_user": "vagrant",
        "ssh_key": "/k",
        "ssh_strict_host_key_checking": "no",
        "ssh_known_hosts_file": "/dev/null",
        "_sudo": True,
    }


def test_pyinfra_loads_inventory_py(write_spec):
    """pyinfra itself reads inventory.py: groups and data, as a user would see them."""
    path = write_spec(
        {
            "name": "invtest",
            "provider": "ssh",
            "hosts": [
                {"name": "a1", "address": "192.168.56.2", "consul": "server", "demo": 2},
                {"name": "b1", "address": "192.168.56.3", "lb": True},
            ],
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "pyinfra", "inventory.py", "debug-inventory", "--json"],
        cwd=PROJECT_ROOT,
        env=os.environ | {"LAB_SPEC": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    hosts = {host["name"]: host for host in json.loads(result.stdout)}
    assert set(hosts) == {"a1", "b1"}
    assert "consul_servers" in hosts["a1"]["groups"] and "demo" in hosts["a1"]["groups"]
    assert "lb" in hosts["b1"]["groups"] and "consul_clients" in hosts["b1"]["groups"]
    assert len(hosts["a1"]["data"][LAB_HOST]["instances"]) == 2
    assert hosts["b1"]["data"]["ssh_hostname"] == "192.168.56.3"
    # Secrets are named, never shown (the gossip key is made at `up`; here: none yet).
    assert hosts["b1"]["data"][LAB_HOST]["consul"]["gossip_key"] is None


def test_ssh_paths_in_a_spec_are_relative_to_its_folder(write_spec):
    path = write_spec(
        {
            "provider": "ssh",
            "ssh": {"key": "keys/lab", "known_hosts": "known_hosts"},
            "hosts": [{"name": "a1", "address": "10.0.0.5", "consul": "server"}],
        }
    )
    spec, _ = load_spec(path)
    data = connection_data(spec, "ssh")["a1"]
    assert data["ssh_key"] == str(path.parent / "keys" / "lab")
    assert data["ssh_known_hosts_file"] == str(path.parent / "known_hosts")
    assert "_sudo" not in data  # root needs no sudo


def test_host_data_carries_the_delivery_and_each_hosts_own_plan():
    spec, _ = load_spec(PROJECT_ROOT / "lab.yaml")
    state = {
        "delivery": "hosts",
        "images": {"consul": {"ref": "hashicorp/consul:1.11.3", "id": None}},
        "image_plans": {"server1": {"images": {}, "base_image": "debian:bookworm", "bundle": None}},
    }
    data = lab_hosts(spec, state)
    assert data["server1"].images.delivery == "hosts"
    assert data["server1"].images.plan == ImagePlan(images={}, base_image="debian:bookworm",
                                                    bundle=None)  # fmt: skip
    assert data["server2"].images.plan is None
    assert data["server1"].images.images == {"consul": Image("hashicorp/consul:1.11.3", None)}


def test_registry_mirrors_reach_the_hosts_engines_with_a_scheme():
    spec, _ = parse_spec(
        {
            "images": {"registry_mirrors": ["mirror.local:5000", "http://10.0.0.1:5000"]},
            "hosts": [{"name": "a1", "address": "192.168.56.2", "consul": "server"}],
        }
    )
    data = dict(groups(spec, {})["lab"])["a1"]
    assert data["docker_registry_mirrors"] == ["https://mirror.local:5000", "http://10.0.0.1:5000"]


def test_each_host_gets_its_own_token_and_only_the_lb_host_consul_templates(
    tmp_path, monkeypatch
):
    from labctl import security

    monkeypatch.setattr(security, "lab_dir", lambda spec: tmp_path)
    spec, _ = load_spec(PROJECT_ROOT / "lab.yaml")
    security.gossip_key(spec, create=True)
    tokens = {t.name: {"accessor": f"a-{t.name}", "secret": f"s-{t.name}"}
              for t in security.token_specs(spec)}  # fmt: skip
    security._save_tokens(spec, tokens)
    data = lab_hosts(spec)
    assert {h: d.consul.registration_token for h, d in data.items()} == {
        h: f"s-registration-{h}" for h in ("server1", "server2", "server3")
    }
    assert {h: d.lb and d.lb.consul_token for h, d in data.items()} == {
        "server1": None, "server2": None, "server3": "s-consul-template"
    }  # fmt: skip
    assert {d.consul.gossip_key for d in data.values()} == {security.gossip_key(spec)}
    assert {d.consul.acl for d in data.values()} == {True}
    # No host is handed the management token or another host's.
    every_value = str([asdict(d) for d in data.values()])
    assert "s-registration" in every_value
    assert "management" not in every_value and "s-agent" not in every_value
    # Nor shows any secret when its data is printed.
    for shown in (repr(data), json.dumps([d.to_json() for d in data.values()])):
        assert "s-registration" not in shown and "s-consul-template" not in shown
        assert security.gossip_key(spec) not in shown


def test_the_seeds_open_lab_hands_out_no_secret():
    host = {"name": "a1", "address": "192.168.56.2", "consul": "server", "lb": True}
    spec, _ = parse_spec({"security": "seed", "hosts": [host]})
    (data,) = lab_hosts(spec).values()
    assert data.consul.acl is False
    assert data.consul.gossip_key is data.consul.registration_token is data.lb.consul_token is None


# --- no dead keys: every field of the host data is read by a role ---------------------


def _read_attributes() -> set[str]:
    """Every attribute name the roles and deploy.py read (`x.name`), the contract aside."""
    files = [*(PROJECT_ROOT / "roles").glob("*.py"), PROJECT_ROOT / "deploy.py"]
    return {
        node.attr
        for path in files
        if path.name != "contract.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
    }


def _host_data_types(cls: type, found: dict[str, type]) -> dict[str, type]:
    """LabHost and every dataclass its fields hold, by name."""
    found[cls.__name__] = cls
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        for inner in (hints[f.name], *typing.get_args(hints[f.name])):
            for candidate in (inner, *typing.get_args(inner)):
                if is_dataclass(candidate) and candidate.__name__ not in found:
                    _host_data_types(candidate, found)
    return found


# Dataclasses a role hands whole to an operation (dataclasses.asdict): their fields are
# the operation's arguments.
PASSED_WHOLE = {"ImagePlan", "ObtainedImage"}
# ServiceInstance is also the spec's instance (labctl.services): labctl reads its host
# (which host runs it); a host's LabHost holds only its own instances.
READ_BY_LABCTL = {("ServiceInstance", "host")}


def test_every_field_of_the_host_data_is_read_by_a_role():
    read = _read_attributes()
    dead = [
        f"{name}.{f.name}"
        for name, cls in sorted(_host_data_types(LabHost, {}).items())
        if name not in PASSED_WHOLE
        for f in fields(cls)
        if f.name not in read and (name, f.name) not in READ_BY_LABCTL
    ]
    assert dead == []


def test_the_dead_key_check_sees_the_host_data_whole():
    expected = {"LabHost", "ConsulAgent", "LoadBalancer", "HostImages", "Image",
                "ServiceInstance", "Registration", "HealthCheck", *PASSED_WHOLE}  # fmt: skip
    assert expected <= set(_host_data_types(LabHost, {}))
