"""Validation of the lab spec: every bad input gives one sentence naming the field and the fix."""

from __future__ import annotations

import copy

import pytest
import yaml
from typer.testing import CliRunner

from labctl.cli import app
from labctl.paths import lab_dir
from labctl.spec import LabSpec, SpecError, file_problems, load_spec, parse_spec
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
    assert [h.first_service_count for h in spec.hosts] == [1, 1, 1]
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


def test_instances_need_a_local_agent():
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
    assert [(i.id, i.title, i.address, i.port) for i in spec.instances()] == [
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


# --- what YAML and pydantic would take silently ----------------------------------------


def problems_of_file(path, content: bytes) -> list[str]:
    path.write_bytes(content)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return caught.value.problems


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "lab.yaml"
    assert problems_of_file(path, b"name: one\nhosts: []\nname: two\n") == [
        f"{path}: line 3: the key 'name' is written twice in one mapping (first at line 1); "
        "keep one."
    ]


def test_a_merge_key_may_repeat_what_it_merges(tmp_path):
    """YAML's `<<` merge is not a second writing of the keys it brings: a host that takes
    another's settings and writes its own name over them is no duplicate."""
    path = tmp_path / "lab.yaml"
    path.write_text(
        "hosts:\n"
        "  - &first {name: server1, address: 192.168.56.2, consul: server, bootstrap: true}\n"
        "  - <<: *first\n"
        "    name: server2\n"
        "    address: 192.168.56.3\n"
        "    bootstrap: false\n"
        "    lb: true\n"
    )
    spec, _ = load_spec(path)
    assert [(h.name, h.consul, h.bootstrap) for h in spec.hosts] == [
        ("server1", "server", True), ("server2", "server", False)]  # fmt: skip


def test_a_spec_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "lab.yaml"
    raw = "name: dynlb\nhosts:\n  - name: s\xe9rver1\n".encode("latin-1")
    assert problems_of_file(path, raw) == [
        f"{path}: line 3 is not UTF-8 (byte 0xe9); save the file as UTF-8."
    ]


@pytest.mark.parametrize(("where", "value", "wanted"), [
    (("hosts", 0, "demo"), True, "a valid integer; write a whole number without quotes"),
    (("hosts", 0, "demo"), "2", "a valid integer; write a whole number without quotes"),
    (("hosts", 0, "demo"), 1.0, "a valid integer; write a whole number without quotes"),
    (("hosts", 0, "lb"), 1, "a valid boolean; write true or false, without quotes"),
    (("hosts", 0, "bootstrap"), "yes", "a valid boolean; write true or false, without quotes"),
    (("virtualbox", "memory"), "2048", "a valid integer; write a whole number without quotes"),
    (("ssh", "port"), "22", "a valid integer; write a whole number without quotes"),
    (("network", "allow_any_subnet"), "yes", "a valid boolean; write true or false"),
])  # fmt: skip
def test_a_value_of_another_type_is_not_coerced(where, value, wanted):
    data = seed(virtualbox={}, ssh={}, network={"subnet": "192.168.56.0/24"})
    node = data
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    problem = only_problem(data)
    assert problem.startswith(f"lab.yaml: {where[0]}") and f"= {value!r} is not {wanted}" in (
        problem
    )


def test_an_address_written_as_a_number_is_refused():
    data = seed()
    data["hosts"][1]["address"] = 3232249859  # 192.168.56.3, as YAML reads an unquoted int
    assert only_problem(data) == (
        "lab.yaml: hosts[1].address = 3232249859 is not an address; write it as text, e.g. "
        "192.168.56.2."
    )


def test_a_subnet_with_host_bits_says_which_network_was_meant():
    assert only_problem(seed(network={"subnet": "192.168.56.7/24"})) == (
        "lab.yaml: network.subnet = '192.168.56.7/24' has host bits set; did you mean "
        "192.168.56.0/24?"
    )


@pytest.mark.parametrize(("subnet", "kind"), [("127.0.0.0/24", "loopback"),
                                              ("224.1.1.0/24", "multicast"),
                                              ("169.254.3.0/24", "link-local")])  # fmt: skip
def test_a_subnet_the_kernel_gives_another_meaning_is_refused(subnet, kind):
    first = subnet.rsplit(".", 1)[0]
    data = seed(provider="docker", network={"subnet": subnet})
    for i, host in enumerate(data["hosts"]):
        host["address"] = f"{first}.{i + 2}"
    problem = only_problem(data)
    assert problem.startswith(f"lab.yaml: network.subnet {subnet} overlaps ")
    assert f"the {kind} range" in problem


@pytest.mark.parametrize(("mirror", "why"), [
    ("not a url", "names no host that can be reached"),
    ("ftp://mirror.example", "has scheme ftp; dockerd takes http:// or https:// mirrors only"),
    ("https://mirror.example/v2/x", "has a path, query or fragment, which dockerd refuses"),
    ("https://u:secret@mirror.example", "carries a user or password, which dockerd refuses"),
    ("https://", "names no host that can be reached"),
    ("mirror.example:99999", "is not a URL"),
])  # fmt: skip
def test_a_registry_mirror_dockerd_would_refuse(mirror, why):
    problem = only_problem(seed(images={"registry_mirrors": [mirror]}))
    assert problem.startswith(f"lab.yaml: images.registry_mirrors[0] = {mirror!r} {why}")


@pytest.mark.parametrize("mirror", ["mirror.example:5000", "https://mirror.example/",
                                    "http://10.0.0.1:5000", "https://[fd00::1]:5000"])
def test_a_registry_mirror_dockerd_takes(mirror):
    parse_spec(seed(images={"registry_mirrors": [mirror]}))


def test_a_base_image_docker_cannot_name_is_refused():
    problem = only_problem(seed(docker={"base_image": "Debian:Bookworm"}))
    assert problem.startswith("lab.yaml: docker.base_image = 'Debian:Bookworm' needs a pinned tag")


@pytest.mark.parametrize(("field", "value", "limit"), [("cpus", 65, 64),
                                                      ("memory", 2097153, 2097152)])  # fmt: skip
def test_virtualbox_limits(field, value, limit):
    problem = only_problem(seed(virtualbox={field: value}))
    assert f"virtualbox.{field} = {value} is invalid (input should be less than or equal to " \
           f"{limit})" in problem  # fmt: skip


def test_files_the_spec_names_are_checked_by_the_verbs_that_read_them(tmp_path):
    """A spec loads without them (the Vagrantfile, `down`); `up` and `apply` name them."""
    data = seed(provider="ssh", ssh={"key": "keys/lab"},
                images={"consul_template_binary": str(tmp_path / "ct")})  # fmt: skip
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    spec, _ = load_spec(path)
    assert file_problems(spec) == [
        f"images.consul_template_binary {tmp_path / 'ct'} is not a file here; point it at a "
        "consul-template binary, .zip or .tgz, or remove it to use the release archive.",
        f"ssh.key {tmp_path / 'keys/lab'} is not a file here; point it at the private key that "
        "logs into the machines (relative paths start at the spec's folder).",
    ]
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "lab").write_text("key")
    (tmp_path / "ct").write_text("binary")
    assert file_problems(spec) == []


def test_a_value_yaml_cannot_make_is_named_with_its_line(tmp_path):
    path = tmp_path / "lab.yaml"
    assert problems_of_file(path, b"name: 2024-13-01\nhosts: []\n") == [
        f"{path}: line 1: '2024-13-01' looks like a YAML timestamp but cannot be one (month "
        "must be in 1..12); quote it if it is text, or correct it."
    ]
