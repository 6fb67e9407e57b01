"""Inventory groups and host data derived from the spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from labctl.connections import connection_data, ssh_data_from_vagrant
from labctl.host_data import groups
from labctl.spec import load_spec, parse_spec
from tests.conftest import PROJECT_ROOT


def names(group) -> list[str]:
    return [name for name, _ in group]


def test_default_spec_groups_and_data():
    spec, _ = load_spec(PROJECT_ROOT / "lab.yaml")
    g = groups(spec, {})
    assert names(g["lab"]) == ["server1", "server2", "server3"]
    assert names(g["consul_servers"]) == ["server1", "server2"]
    assert names(g["consul_clients"]) == ["server3"]
    assert names(g["lb"]) == ["server3"]
    assert names(g["demo"]) == ["server1", "server2", "server3"]
    data = dict(g["lab"])
    assert data["server1"]["consul_bootstrap"] is True
    assert data["server3"]["consul_server"] is False
    assert data["server3"]["lb"] is True
    # Consul's advice: every server expects all servers.
    assert {d["consul_bootstrap_expect"] for d in data.values()} == {2}
    assert data["server3"]["consul_join"] == ["192.168.56.2", "192.168.56.3"]
    assert data["server2"]["lab_peers"] == ["192.168.56.2", "192.168.56.4"]
    assert data["server2"]["lab_address"] == "192.168.56.3"


def test_five_host_spec():
    spec, _ = load_spec(PROJECT_ROOT / "examples" / "five-hosts.yaml")
    g = groups(spec, {})
    assert len(g["lab"]) == 5
    assert names(g["consul_servers"]) == ["consul1", "consul2", "consul3"]
    assert names(g["consul_clients"]) == ["web1", "web2"]
    assert names(g["lb"]) == ["web1"]
    assert names(g["demo"]) == ["web1", "web2"]
    data = dict(g["lab"])
    ids = [i["id"] for i in data["web2"]["demo_instances"]]
    assert ids == ["zhibo-5", "zhibo-5-2", "zhibo-5-3"]
    assert [i["port"] for i in data["web2"]["demo_instances"]] == [8080, 8081, 8082]
    assert {d["consul_bootstrap_expect"] for d in data.values()} == {3}
    assert data["web1"]["consul_join"] == ["192.168.57.11", "192.168.57.12", "192.168.57.13"]
    assert len(data["consul2"]["lab_peers"]) == 4


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
    assert dict(groups(spec, {})["lab"])["a1"]["consul_join"][0] == "192.168.56.3"


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
    assert len(hosts["a1"]["data"]["demo_instances"]) == 2
    assert hosts["b1"]["data"]["ssh_hostname"] == "192.168.56.3"


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
        "image_plans": {"server1": {"images": {}, "base_image": "debian:bookworm"}},
    }
    data = dict(groups(spec, {}, state)["lab"])
    assert data["server1"]["lab_image_delivery"] == "hosts"
    assert data["server1"]["lab_image_plan"] == state["image_plans"]["server1"]
    assert data["server2"]["lab_image_plan"] is None


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
    data = dict(groups(spec, {})["lab"])
    assert {h: d["consul_token"] for h, d in data.items()} == {
        h: f"s-registration-{h}" for h in ("server1", "server2", "server3")
    }
    assert {h: d["lb_consul_token"] for h, d in data.items()} == {
        "server1": None, "server2": None, "server3": "s-consul-template"
    }  # fmt: skip
    assert {d["consul_encrypt"] for d in data.values()} == {security.gossip_key(spec)}
    assert {d["consul_acl"] for d in data.values()} == {True}
    # No host is handed the management token or another host's.
    assert not any("management" in str(d) or "s-agent" in str(d) for d in data.values())


def test_the_seeds_open_lab_hands_out_no_secret():
    host = {"name": "a1", "address": "192.168.56.2", "consul": "server", "lb": True}
    spec, _ = parse_spec({"security": "seed", "hosts": [host]})
    (data,) = dict(groups(spec, {})["lab"]).values()
    assert data["consul_acl"] is False
    assert data["consul_encrypt"] is data["consul_token"] is data["lb_consul_token"] is None
