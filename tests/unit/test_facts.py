"""The facts of roles/facts.py: what each makes of its command's output."""

from __future__ import annotations

import json

import pytest

from roles.facts import (
    ConsulAgentServices,
    ConsulPassingServices,
    DockerContainerState,
    DockerImageIds,
    DockerLabelled,
    LoadBalancerHealth,
)


def test_docker_image_ids_maps_each_reference_to_its_id():
    output = [
        "hashicorp/consul:1.11.3 sha256:c1",
        "lab/lb:0123456789ab sha256:l1",
    ]
    assert DockerImageIds().process(output) == {
        "hashicorp/consul:1.11.3": "sha256:c1",
        "lab/lb:0123456789ab": "sha256:l1",
    }


def test_docker_image_ids_skips_lines_that_are_not_reference_and_id():
    output = ["", "only-one-word", "a:b sha256:x extra", "debian:bookworm sha256:d"]
    assert DockerImageIds().process(output) == {"debian:bookworm": "sha256:d"}


def test_docker_image_ids_of_empty_output_and_default_are_empty():
    assert DockerImageIds().process([]) == {}
    assert DockerImageIds.default() == {}


def test_docker_container_state_of_a_running_container():
    assert DockerContainerState().process(["282083e6928e33a9 true"]) == {
        "spec": "282083e6928e33a9",
        "running": True,
    }


def test_docker_container_state_of_a_stopped_container():
    assert DockerContainerState().process(["282083e6928e33a9 false"]) == {
        "spec": "282083e6928e33a9",
        "running": False,
    }


def test_docker_container_state_of_an_absent_container_is_none():
    # `docker inspect ... 2>/dev/null || true` prints nothing for a missing container.
    assert DockerContainerState().process([]) is None
    assert DockerContainerState().process([""]) is None
    assert DockerContainerState().default() is None


def test_docker_container_state_of_a_container_without_the_spec_label_is_present():
    # `{{index .Config.Labels "io.labctl.spec"}}` prints "" for a container that lacks
    # the label (made by hand, or by an older labctl): the line is " true". The
    # container exists, so the operation must remove it before `docker run --name=`.
    assert DockerContainerState().process([" true"]) == {"spec": "", "running": True}


def test_docker_container_state_command_quotes_the_name():
    command = DockerContainerState().command("a b")
    assert "'a b'" in command
    assert command.endswith("2>/dev/null || true")


def test_docker_labelled_lists_names_sorted():
    output = ["zhibo-3", "zhibo-1-2", "  ", "zhibo-1"]
    assert DockerLabelled().process(output) == ["zhibo-1", "zhibo-1-2", "zhibo-3"]


def test_docker_labelled_of_empty_output_and_default_are_empty():
    assert DockerLabelled().process([]) == []
    assert DockerLabelled.default() == []


@pytest.mark.parametrize(
    ("kind", "listing"),
    [
        ("container", "docker ps -a --filter label=io.labctl.lab=a --format '{{.Names}}'"),
        ("volume", "docker volume ls --filter label=io.labctl.lab=a --format '{{.Name}}'"),
        ("network", "docker network ls --filter label=io.labctl.lab=a --format '{{.Name}}'"),
    ],
)
def test_docker_labelled_lists_each_kind_by_its_own_command(kind, listing):
    assert DockerLabelled().command(kind, "io.labctl.lab=a") == listing


def test_consul_agent_services_parses_the_json_over_several_lines():
    output = ['{"zhibo-1": {"ID": "zhibo-1",', '"Meta": {"lab_managed": "demo_service"}}}']
    assert ConsulAgentServices().process(output) == {
        "zhibo-1": {"ID": "zhibo-1", "Meta": {"lab_managed": "demo_service"}}
    }


def test_consul_agent_services_of_empty_output_and_default_are_empty():
    assert ConsulAgentServices().process([]) == {}
    assert ConsulAgentServices.default() == {}


def test_consul_agent_services_command_reads_the_agent_api_and_answers_empty_without_it():
    assert ConsulAgentServices().command("http://127.0.0.1:8500") == (
        "curl -fsS --max-time 10 http://127.0.0.1:8500/v1/agent/services || echo '{}'"
    )


def test_consul_passing_services_are_those_whose_every_check_passes():
    def check(cid: str, sid: str, status: str) -> dict:
        return {"CheckID": cid, "ServiceID": sid, "Status": status}

    checks = {
        "serfHealth": check("serfHealth", "", "passing"),
        "service:zhibo-1": check("service:zhibo-1", "zhibo-1", "passing"),
        "service:zhibo-2": check("service:zhibo-2", "zhibo-2", "critical"),
        "disk": check("disk", "zhibo-3", "passing"),
        "mem": check("mem", "zhibo-3", "warning"),
        "service:zhibo-1-2": check("service:zhibo-1-2", "zhibo-1-2", "passing"),
    }
    assert ConsulPassingServices().process([json.dumps(checks)]) == ["zhibo-1", "zhibo-1-2"]
    assert ConsulPassingServices().process(["{}"]) == []
    assert ConsulPassingServices.default() == []


def test_load_balancer_health_is_what_lb_health_prints_or_none():
    line = '{"nginx": true, "listening": false, "consul_template": true, "config": "stale"}'
    assert LoadBalancerHealth().process([line]) == {
        "nginx": True, "listening": False, "consul_template": True, "config": "stale"
    }  # fmt: skip
    # `docker exec` on an absent or stopped container prints nothing (|| true).
    assert LoadBalancerHealth().process([]) is None
