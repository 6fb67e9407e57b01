"""Validation of the lab spec: every bad input gives one sentence naming the field and the fix."""

from __future__ import annotations

import copy

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.paths import lab_dir
from labctl.spec import LabSpec, SpecError, load_spec, parse_spec
from tests.conftest import PROJECT_ROOT, seed_hosts


def seed(**overrides) -> dict:
    data = {"name": "unit", "hosts": copy.deepcopy(seed_hosts())}
    data.update(overrides)
    return data


def problems_of(data: dict) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, source="lab.yaml")
    return caught.value.problems


def only_problem(data: dict) -> str:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


def test_default_spec_is_the_seed():
    spec, warnings = load_spec(PROJECT_ROOT / "lab.yaml")
    assert [(h.name, str(h.address), h.consul) for h in spec.hosts] == [
        ("server1", "192.168.56.2", "server"),
        ("server2", "192.168.56.3", "server"),
        ("server3", "192.168.56.4", "client"),
    ]
    assert [h.name for h in spec.hosts if h.bootstrap] == ["server1"]
    assert [h.name for h in spec.hosts if h.lb] == ["server3"]
    assert [h.demo for h in spec.hosts] == [1, 1, 1]
    assert spec.versions.consul == "1.11.3"
    # Two servers: an even count, which the seed has, is a warning, not an error.
    assert len(warnings) == 1 and "even number" in warnings[0]


@pytest.mark.parametrize("example", ["ha.yaml", "five-hosts.yaml", "ssh.yaml"])
def test_examples_are_valid_without_warnings(example):
    spec, warnings = load_spec(PROJECT_ROOT / "examples" / example)
    assert len(spec.consul_servers) == 3
    assert warnings == []


def test_unknown_top_level_key_suggests_the_right_one():
    problem = only_problem(seed(netwrok={"subnet": "192.168.56.0/24"}))
    assert problem.startswith("lab.yaml: netwrok is not a known key")
    assert "did you mean 'network'?" in problem


def test_unknown_host_key_names_the_host_and_suggests():
    data = seed()
    data["hosts"][1]["adress"] = data["hosts"][1].pop("address")
    problems = problems_of(data)
    assert any("hosts[1].adress is not a known key" in p and "'address'" in p for p in problems)
    assert any("hosts[1].address is required" in p for p in problems)


def test_unknown_nested_key_lists_known_keys_when_nothing_is_close():
    problem = only_problem(seed(versions={"zookeeper": "3.8.0"}))
    assert "versions.zookeeper is not a known key" in problem
    assert "consul, consul_template, nginx" in problem


def test_duplicate_host_names():
    data = seed()
    data["hosts"][2]["name"] = "server1"
    problem = only_problem(data)
    assert "hosts[2].name 'server1' is already used by hosts[0]" in problem


def test_duplicate_addresses():
    data = seed()
    data["hosts"][1]["address"] = "192.168.56.2"
    assert "hosts[1].address 192.168.56.2 is already used by hosts[0]" in only_problem(data)


def test_address_outside_the_lab_subnet():
    data = seed()
    data["hosts"][0]["address"] = "192.168.57.2"
    problem = only_problem(data)
    assert "hosts[0].address 192.168.57.2 is outside the lab subnet 192.168.56.0/24" in problem
    assert "change network.subnet" in problem


def test_gateway_address_is_refused():
    data = seed()
    data["hosts"][0]["address"] = "192.168.56.1"
    assert "hosts[0].address 192.168.56.1 is the subnet's first address" in only_problem(data)


def on_subnet_10_20(data: dict) -> dict:
    for i, host in enumerate(data["hosts"]):
        host["address"] = f"10.20.0.{i + 2}"
    return data


def test_subnet_virtualbox_refuses():
    data = on_subnet_10_20(seed(network={"subnet": "10.20.0.0/24"}))
    problem = only_problem(data)
    assert "network.subnet 10.20.0.0/24 is outside 192.168.56.0/21" in problem
    assert "allow_any_subnet" in problem


def test_subnet_outside_virtualbox_range_allowed_when_user_says_so():
    data = on_subnet_10_20(seed(network={"subnet": "10.20.0.0/24", "allow_any_subnet": True}))
    spec, _ = parse_spec(data)
    assert str(spec.network.subnet) == "10.20.0.0/24"


def test_subnet_outside_virtualbox_range_fine_for_docker_provider():
    data = on_subnet_10_20(seed(provider="docker", network={"subnet": "10.20.0.0/24"}))
    parse_spec(data)


def test_no_consul_server():
    data = seed()
    for host in data["hosts"]:
        host["consul"] = "client"
        host.pop("bootstrap", None)
    assert "no host has consul: server" in only_problem(data)


def test_more_than_one_bootstrap_server():
    data = seed()
    data["hosts"][1]["bootstrap"] = True
    problem = only_problem(data)
    assert "hosts server1, server2 all have bootstrap: true" in problem
    assert "mark exactly one" in problem


def test_bootstrap_on_a_client():
    data = seed()
    data["hosts"][2]["bootstrap"] = True
    data["hosts"][0]["bootstrap"] = False
    assert "hosts[2].bootstrap is true but consul is 'client'" in only_problem(data)


def test_even_number_of_servers_is_a_warning():
    data = seed()
    data["hosts"][2]["consul"] = "server"
    data["hosts"].append({"name": "server4", "address": "192.168.56.5", "consul": "server"})
    spec, warnings = parse_spec(data)
    assert len(spec.consul_servers) == 4
    assert warnings and "4 Consul servers is an even number" in warnings[0]


@pytest.mark.parametrize("version", ["0.19.0", "0.19.3"])
def test_a_consul_template_with_the_backoff_overflow_is_a_warning(version):
    data = seed() | {"versions": {"consul_template": version}}
    (warning,) = [w for w in parse_spec(data)[1] if "overflows its retry backoff" in w]
    assert "#1028" in warning and "0.19.4 or later" in warning


@pytest.mark.parametrize("version", ["0.19.4", "0.19.5", "0.20.0"])
def test_a_consul_template_with_the_backoff_fixed_is_no_warning(version):
    data = seed() | {"versions": {"consul_template": version}}
    assert not [w for w in parse_spec(data)[1] if "backoff" in w]


def test_the_default_consul_template_has_the_backoff_fixed():
    spec, _ = parse_spec(seed())
    assert spec.versions.consul_template == "0.19.5"


def test_odd_number_of_servers_has_no_warning():
    data = seed()
    data["hosts"][2]["consul"] = "server"
    assert parse_spec(data)[1] == []


def test_demo_count_below_zero():
    data = seed()
    data["hosts"][1]["demo"] = -1
    problem = only_problem(data)
    assert "hosts[1].demo = -1 is below zero" in problem


@pytest.mark.parametrize("version", ["1.11", "latest", "v1.11.3", "1.11.3-beta"])
def test_malformed_version(version):
    problem = only_problem(seed(versions={"consul": version}))
    assert f"versions.consul = '{version}' is not a pinned release" in problem
    assert "MAJOR.MINOR.PATCH" in problem


def test_wrong_type_names_the_field():
    data = seed()
    data["hosts"][0]["demo"] = "two"
    assert only_problem(data) == (
        "lab.yaml: hosts[0].demo = 'two' is not a valid integer; write a whole number without "
        "quotes, e.g. 2."
    )


def test_unknown_provider():
    problem = only_problem(seed(provider="libvirt"))
    assert "provider = 'libvirt' is invalid" in problem


def test_lb_without_consul_agent():
    data = seed()
    data["hosts"][2]["consul"] = "none"
    data["hosts"][2]["demo"] = 0
    assert "hosts[2].lb is true but consul is 'none'" in only_problem(data)


def test_demo_instances_need_a_local_agent():
    data = seed()
    data["hosts"][1]["consul"] = "none"
    assert "hosts[1].demo is 1 but consul is 'none'" in only_problem(data)


@pytest.mark.parametrize("ref", ["consul", "hashicorp/consul:latest", "Consul:1"])
def test_image_reference_needs_a_pinned_tag(ref):
    assert f"images.consul = '{ref}' needs a pinned tag" in only_problem(
        seed(images={"consul": ref})
    )


def test_demo_instance_ids_and_ports_are_stable_per_host():
    data = seed()
    data["hosts"][0]["demo"] = 2
    spec, _ = parse_spec(data)
    assert [(i.id, i.title, i.address, i.port) for i in spec.demo_instances()] == [
        ("zhibo-1", "直播服务API1", "192.168.56.2", 8080),
        ("zhibo-1-2", "直播服务API1-2", "192.168.56.2", 8081),
        ("zhibo-2", "直播服务API2", "192.168.56.3", 8080),
        ("zhibo-3", "直播服务API3", "192.168.56.4", 8080),
    ]


def test_bad_lab_name():
    assert "name = 'My Lab' must be" in only_problem(seed(name="My Lab"))


def test_every_problem_is_reported_at_once():
    data = seed()
    data["hosts"][1]["demo"] = -2
    data["hosts"][2]["address"] = "192.168.56.2"
    assert len(problems_of(data)) == 2


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nhosts:\n  - name: [a\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert "broken.yaml: not valid YAML at line" in caught.value.problems[0]


def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "nope.yaml")
    assert "cannot read the lab spec" in caught.value.problems[0]


def test_not_a_mapping():
    assert "must be a mapping" in only_problem(["hosts"])  # type: ignore[arg-type]


def test_cli_exits_2_with_the_sentence_and_touches_nothing(write_spec):
    data = seed(name="badspec")
    data["hosts"][0]["demo"] = -1
    path = write_spec(data)
    result = CliRunner().invoke(app, ["--spec", str(path), "up"])
    assert result.exit_code == 2, result.output
    assert "hosts[0].demo = -1 is below zero" in result.output
    assert not lab_dir(LabSpec.model_validate({"name": "badspec", "hosts": []})).exists()
