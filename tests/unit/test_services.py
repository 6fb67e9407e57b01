"""The spec's `services` (labctl/services.py): the instances they declare, the counts
`scale` records per service, and one sentence (exit 2) for each way a service would fail:
a duplicate name, a name Consul, consul-template or nginx would take wrongly, ports that
collide on a host, fall on Consul's own or pass 65535."""

from __future__ import annotations

import copy

import pytest
import yaml
from typer.testing import CliRunner

from labctl import paths
from labctl.cli import app
from labctl.paths import forget_removed_services, record_counts, with_state, write_state
from labctl.services import go_duration_ns
from labctl.spec import SpecError, load_spec, parse_spec
from tests.conftest import PROJECT_ROOT, seed_hosts

TWO = PROJECT_ROOT / "examples" / "two-services.yaml"
SECOND = {"name": "danmu_service", "port": 9080, "instances": {"server1": 2, "server2": 1}}


def lab(*services: dict, **host_changes: dict) -> dict:
    """The seed's hosts with these services; host_changes: host name -> keys to set."""
    hosts = copy.deepcopy(seed_hosts())
    for host in hosts:
        host.update(host_changes.get(host["name"], {}))
    data = {"name": "unit", "hosts": hosts}
    if services:
        data["services"] = [copy.deepcopy(s) for s in services]
    return data


def only_problem(data: dict) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, source="lab.yaml")
    assert len(caught.value.problems) == 1, caught.value.problems
    return caught.value.problems[0]


def instances(spec) -> list[tuple]:
    return [(i.service, i.id, i.title, i.address, i.port) for i in spec.instances()]


# --- what the services declare ----------------------------------------------------------


def test_without_services_the_lab_runs_the_seeds_service_from_the_demo_counts():
    spec, _ = parse_spec(lab())
    assert [(s.name, s.tags, s.port) for s in spec.services] == [
        ("zhibo_service", ["primary", "v2"], 8080)
    ]
    assert [i[1:] for i in instances(spec)] == [
        ("zhibo-1", "直播服务API1", "192.168.56.2", 8080),
        ("zhibo-2", "直播服务API2", "192.168.56.3", 8080),
        ("zhibo-3", "直播服务API3", "192.168.56.4", 8080),
    ]


def test_the_example_with_two_services():
    spec, warnings = load_spec(TWO)
    assert instances(spec) == [
        ("zhibo_service", "zhibo-1", "直播服务API1", "192.168.58.2", 8080),
        ("zhibo_service", "zhibo-2", "直播服务API2", "192.168.58.3", 8080),
        ("zhibo_service", "zhibo-3", "直播服务API3", "192.168.58.4", 8080),
        ("danmu_service", "danmu-service-1", "danmu_service 1", "192.168.58.2", 9080),
        ("danmu_service", "danmu-service-1-2", "danmu_service 1-2", "192.168.58.2", 9081),
        ("danmu_service", "danmu-service-2", "danmu_service 2", "192.168.58.3", 9080),
    ]
    assert spec.services[1].tags == ["v1"] and spec.services[1].check.interval == "5s"
    assert spec.instance_hosts() == ["server1", "server2", "server3"]
    assert [w for w in warnings if "even number" not in w] == []


def test_listing_the_seeds_service_keeps_its_tags_ids_and_titles():
    spec, _ = parse_spec(lab({"name": "zhibo_service"}, SECOND))
    assert spec.services[0].tags == ["primary", "v2"]
    assert [i[1] for i in instances(spec)][:3] == ["zhibo-1", "zhibo-2", "zhibo-3"]


def test_the_first_service_can_take_its_counts_from_instances_instead():
    data = lab({"name": "zhibo_service", "instances": {"server2": 2}},
               **{h: {"demo": 0} for h in ("server1", "server2", "server3")})  # fmt: skip
    spec, _ = parse_spec(data)
    assert [i[1] for i in instances(spec)] == ["zhibo-2", "zhibo-2-2"]


# --- one sentence for each problem -------------------------------------------------------


def test_duplicate_service_names():
    problem = only_problem(lab({"name": "zhibo_service"}, SECOND, SECOND | {"port": 9180}))
    assert problem == (
        "lab.yaml: services[2].name 'danmu_service' is already used by services[1]; "
        "give every service its own name."
    )


@pytest.mark.parametrize("name", ["Web", "web.api", "web api", "9web", "web-", "a" * 64, ""])
def test_names_consul_template_or_nginx_would_take_wrongly(name):
    problem = only_problem(lab({"name": "zhibo_service"}, SECOND | {"name": name}))
    assert problem.startswith(f"lab.yaml: services[1].name = {name!r} must be 1-63 lowercase")
    assert "'.' as a tag separator" in problem


@pytest.mark.parametrize(("name", "why"), [("consul", "Consul's own service"),
                                           ("stub_status", "location /stub_status")])
def test_names_the_lb_already_uses(name, why):
    problem = only_problem(lab({"name": "zhibo_service"}, SECOND | {"name": name}))
    assert problem.startswith(f"lab.yaml: services[1].name '{name}' is ") and why in problem


def test_two_services_on_the_same_ports_of_a_host():
    problem = only_problem(lab({"name": "zhibo_service"}, SECOND | {"port": 8079}))
    assert problem == (
        "lab.yaml: services[1] (danmu_service): its 2 instances on server1 take ports "
        "8079-8080, and services[0] (zhibo_service) listens on 8080-8080 there; give one of "
        "them another port."
    )


def test_a_second_service_without_a_port_collides_with_the_seeds_8080():
    second = {k: v for k, v in SECOND.items() if k != "port"}
    assert "zhibo_service) listens on 8080-8080" in only_problem(lab({"name": "zhibo_service"},
                                                                      second))  # fmt: skip


def test_demo_221_puts_an_instance_on_consuls_rpc_port():
    problem = only_problem(lab(server2={"demo": 221}))
    assert problem == (
        "lab.yaml: services[0] (zhibo_service): its 221 instances on server2 take ports "
        "8080-8300, which include Consul's server RPC port 8300; lower the count or move the "
        "service's port."
    )


@pytest.mark.parametrize(("port", "label"), [(8500, "HTTP"), (8600, "DNS"), (8301, "serf LAN")])
def test_every_consul_port_is_refused(port, label):
    problem = only_problem(lab({"name": "zhibo_service", "port": port}))
    assert f"Consul's {label} port {port}" in problem


def test_demo_60000_passes_65535():
    problem = only_problem(lab(server1={"demo": 60000}))
    assert problem == (
        "lab.yaml: services[0] (zhibo_service): its 60000 instances on server1 take ports "
        "8080-68079, past 65535; lower its port or the count."
    )


def test_a_port_past_65535_is_refused_even_without_instances():
    problem = only_problem(lab({"name": "zhibo_service"}, SECOND | {"port": 70000,
                                                                  "instances": {}}))  # fmt: skip
    assert problem == (
        "lab.yaml: services[1] (danmu_service).port = 70000 is past 65535; use 1024-65535."
    )


def test_the_lbs_port_80_and_every_privileged_port_are_refused():
    problem = only_problem(lab({"name": "zhibo_service", "port": 80}))
    assert problem.startswith("lab.yaml: services[0] (zhibo_service).port = 80 is below 1024")
    assert "80 is the LB's" in problem


def test_instances_on_a_host_that_is_not_in_the_spec():
    problem = only_problem(lab({"name": "zhibo_service"}, SECOND | {"instances": {"srv9": 1}}))
    assert problem == (
        "lab.yaml: services[1].instances.srv9 names a host that is not in hosts; use one of "
        "server1, server2, server3."
    )


def test_instances_below_zero():
    problem = only_problem(lab({"name": "zhibo_service"}, SECOND | {"instances": {"server1": -1}}))
    assert "services[1].instances.server1 = -1 is below zero" in problem


def test_instances_on_a_host_without_a_consul_agent():
    data = lab({"name": "zhibo_service"}, SECOND | {"instances": {"server3": 1}},
               server3={"consul": "none", "lb": False, "demo": 0})  # fmt: skip
    assert "services[1].instances.server3 is 1 but that host's consul is 'none'" in only_problem(
        data
    )


def test_the_first_services_counts_in_two_places():
    problem = only_problem(lab({"name": "zhibo_service", "instances": {"server1": 1}}))
    assert problem.startswith(
        "lab.yaml: services[0] (zhibo_service) has instances and hosts server1, server2, "
        "server3 have demo counts"
    )


def test_demo_counts_with_no_service_at_all():
    data = lab()
    data["services"] = []
    assert "have demo counts but services is empty" in only_problem(data)


def test_check_settings_consul_would_refuse():
    bad = SECOND | {"check": {"path": "health", "interval": "10"}}
    with pytest.raises(SpecError) as caught:
        parse_spec(lab({"name": "zhibo_service"}, bad), source="lab.yaml")
    assert caught.value.problems == [
        "lab.yaml: services[1].check.path = 'health' must start with '/'.",
        "lab.yaml: services[1].check.interval = '10' is not a duration; write it as Consul "
        "does, e.g. 10s, 1m30s or 90m (a number and a unit: ns, us, ms, s, m or h).",
    ]


@pytest.mark.parametrize(("a", "b"), [("web_api", "web-api"), ("web", "web-1")])
def test_names_whose_instance_ids_could_be_the_same(a, b):
    problem = only_problem(lab({"name": "zhibo_service"}, SECOND | {"name": a},
                               SECOND | {"name": b, "port": 9180}))  # fmt: skip
    assert problem.startswith(f"lab.yaml: services[1] ({a}) and services[2] ({b}) would give")


def test_an_unknown_service_key_suggests_the_right_one():
    problem = only_problem(lab({"name": "zhibo_service", "prot": 9000}))
    assert "services[0].prot is not a known key" in problem and "'port'" in problem


def test_the_cli_exits_2_with_the_sentence(write_spec):
    path = write_spec(lab(server2={"demo": 221}))
    result = CliRunner().invoke(app, ["--spec", str(path), "apply"])
    assert result.exit_code == 2, result.output
    assert "Consul's server RPC port 8300" in " ".join(result.output.split())


# --- counts per service, as `scale` records them ------------------------------------------


@pytest.fixture
def two(tmp_path, monkeypatch, write_spec):
    """The two-service example, read from a tmp copy, with its state dir under tmp_path."""
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "project")
    spec, _ = load_spec(write_spec(yaml.safe_load(TWO.read_text()), "spec.yaml"))
    return spec


def test_recorded_counts_of_the_second_service_override_only_its_own(two):
    record_counts(two, "danmu_service", {"server1": 0, "server3": 2})
    scaled = with_state(two)
    assert scaled.service_counts("danmu_service") == {"server1": 0, "server2": 1, "server3": 2}
    assert scaled.service_counts("zhibo_service") == two.service_counts("zhibo_service")


def test_an_old_state_files_demo_counts_are_the_first_services(two):
    write_state(two, demo_counts={"server1": 3})
    assert with_state(two).service_counts("zhibo_service") == {
        "server1": 3, "server2": 1, "server3": 1,
    }  # fmt: skip
    record_counts(two, "danmu_service", {"server2": 2})
    state = paths.read_state(two)
    assert "demo_counts" not in state
    assert state["service_counts"] == {"zhibo_service": {"server1": 3},
                                       "danmu_service": {"server2": 2}}  # fmt: skip


def test_a_service_removed_from_the_spec_takes_its_counts_with_it(two, tmp_path, write_spec):
    record_counts(two, "danmu_service", {"server1": 3})
    only_seed = write_spec(lab() | {"name": two.name}, "spec.yaml")  # the second one gone
    spec, _ = load_spec(only_seed)
    assert with_state(spec).service_counts("zhibo_service") == spec.service_counts(
        "zhibo_service"
    )
    forget_removed_services(spec)
    assert paths.read_state(spec)["service_counts"] == {}


@pytest.mark.parametrize(("text", "ns"), [
    ("10s", 10**10), ("1m30s", 90 * 10**9), ("90m", 5400 * 10**9), ("1.5h", 5400 * 10**9),
    (".5s", 5 * 10**8), ("5.s", 5 * 10**9), ("300ms", 3 * 10**8), ("2us", 2000),
    ("2µs", 2000), ("2μs", 2000), ("0", 0), ("-5s", -5 * 10**9), ("+5s", 5 * 10**9),
    ("2562047h", 2562047 * 3600 * 10**9),
    ("10", None), ("", None), ("s", None), ("1d", None), ("10S", None), ("1 s", None),
    ("2562048h", None), ("9999999999h", None), (".s", None), ("-", None),
])  # fmt: skip
def test_durations_as_go_reads_them(text, ns):
    """Go's time.ParseDuration, which Consul uses: `0` alone needs no unit, a fraction may
    have no leading or trailing digits, and past int64 nanoseconds is an error."""
    assert go_duration_ns(text) == ns


@pytest.mark.parametrize(("check", "says"), [
    ({"interval": "0s"}, "interval = '0s': Consul refuses an HTTP check with no interval; "
                         "write 1s or more."),
    ({"interval": "500ms"}, "interval = '500ms': Consul runs an HTTP check at most once a "
                            "second and would silently use 1s; write 1s or more."),
    ({"timeout": "0s"}, "timeout = '0s': Consul reads a timeout of 0 as its default of 10s; "
                        "write the timeout you mean, e.g. 5s."),
    ({"deregister_critical_after": "30s"}, "deregister_critical_after = '30s': Consul "
     "deregisters a critical instance no sooner than a minute and would silently use 1m; write "
     "1m or more (or 0s to never deregister)."),
    ({"interval": "-5s"}, "interval = '-5s' is negative; write a positive duration."),
    ({"interval": "9999999999h"}, "interval = '9999999999h' is not a duration; write it as "
     "Consul does, e.g. 10s, 1m30s or 90m (a number and a unit: ns, us, ms, s, m or h)."),
    ({"path": "/he alth"}, "path = '/he alth' is not a URL path; write it with letters, digits "
     "and /-._~!$&'()*+,;=:@%? only (percent-encode anything else)."),
])  # fmt: skip
def test_check_settings_consul_refuses_or_silently_changes(check, says):
    problem = only_problem(lab({"name": "zhibo_service"}, SECOND | {"check": check}))
    assert problem == f"lab.yaml: services[1].check.{says}"


@pytest.mark.parametrize("check", [{"interval": "1s"}, {"deregister_critical_after": "0s"},
                                   {"deregister_critical_after": "1m"},
                                   {"path": "/health?probe=lb&x=%20"}])  # fmt: skip
def test_check_settings_consul_takes_as_written(check):
    parse_spec(lab({"name": "zhibo_service"}, SECOND | {"check": check}))
