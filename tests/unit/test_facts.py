"""The facts of roles/facts.py: what each makes of its command's output."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from roles import facts
from roles.facts import (
    AddressesOnInterfaces,
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
    output = ['{"zhibo-1": {"ID": "zhibo-1",', '"Meta": {"lab_managed": "demo_service"}}}', "200 0"]
    assert ConsulAgentServices().process(output) == {
        "zhibo-1": {"ID": "zhibo-1", "Meta": {"lab_managed": "demo_service"}}
    }


def test_consul_agent_services_without_an_agent_listening_and_default_are_empty():
    # curl exits 7 (could not connect): no agent yet, as on a first converge.
    assert ConsulAgentServices().process(["", "000 7"]) == {}
    assert ConsulAgentServices.default() == {}


@pytest.mark.parametrize(
    ("output", "why"),
    [
        (["ACL not found", "403 0"], "answered 403 (ACL not found) to GET /v1/agent/services"),
        (["No known Consul servers", "500 0"],
         "answered 500 (No known Consul servers) to GET /v1/agent/services"),
        (["", "000 28"], "did not answer GET /v1/agent/services within 10 s"),
        (["", "000 56"], "broke off GET /v1/agent/services (curl exit status 56)"),
        (["<html>", "200 0"], "answered GET /v1/agent/services with something that is not JSON"),
        ([], "broke off GET /v1/agent/services (curl exit status unknown)"),
    ],
    ids=["403", "500", "timeout", "reset", "not-json", "no-output"],
)
def test_an_agent_that_answers_otherwise_is_no_empty_answer_but_why(output, why):
    """A 403, a 500 or no answer in time is not "no services": taken so, the instances
    the spec dropped were stopped without being deregistered first."""
    assert ConsulAgentServices().process(output).startswith(why)
    assert ConsulPassingServices().process(
        [line.replace("services", "checks") for line in output]
    ).startswith(why.replace("services", "checks"))


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
    output = [json.dumps(checks), "200 0"]
    assert ConsulPassingServices().process(output) == ["zhibo-1", "zhibo-1-2"]
    assert ConsulPassingServices().process(["{}", "200 0"]) == []
    assert ConsulPassingServices().process(["", "000 7"]) == []
    assert ConsulPassingServices.default() == []


def test_addresses_on_interfaces_name_every_interface_and_the_prefix_it_holds():
    # `ip -o -4 addr show to 192.168.56.10/32` on an LB host holding the shared address:
    # keepalived's on the lab interface, start.sh's copy on loopback.
    output = [
        "1: lo    inet 192.168.56.10/32 scope host lo\\       "
        "valid_lft forever preferred_lft forever",
        "3: eth1.10@eth1    inet 192.168.56.10/24 scope global secondary eth1.10\\       "
        "valid_lft forever preferred_lft forever",
    ]
    assert AddressesOnInterfaces().process(output) == [
        ("lo", "192.168.56.10/32"), ("eth1.10", "192.168.56.10/24")]  # fmt: skip
    assert AddressesOnInterfaces().process([]) == []


def test_load_balancer_health_is_what_lb_health_prints_or_none():
    line = '{"nginx": true, "listening": false, "consul_template": true, "config": "stale"}'
    assert LoadBalancerHealth().process([line]) == {
        "nginx": True, "listening": False, "consul_template": True, "config": "stale"
    }  # fmt: skip
    # `docker exec` on an absent or stopped container prints nothing (|| true).
    assert LoadBalancerHealth().process([]) is None


# --- the agent facts' command, run with the real curl against a loopback server


class Agent(BaseHTTPRequestHandler):
    """Answers every GET with the class's status and text, after `delay` seconds."""

    status, text, delay = 200, "{}", 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        body = self.text.encode()
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def agent_answering():
    """Start a loopback "agent" answering (status, text, delay); yields its address."""
    servers = []

    def start(status: int, text: str, delay: float = 0.0) -> str:
        handler = type("Answer", (Agent,), {"status": status, "text": text, "delay": delay})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run_fact(fact, *args) -> object:
    """The fact's command run by sh, its stdout split into lines as pyinfra does."""
    done = subprocess.run(["sh", "-c", fact.command(*args)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr  # the command itself never fails
    return fact.process(done.stdout.splitlines())


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_agent_facts_command_tells_absent_from_refused_and_slow(agent_answering,
                                                                     monkeypatch):  # fmt: skip
    services = '{"zhibo-1": {"ID": "zhibo-1"}}'
    assert run_fact(ConsulAgentServices(), agent_answering(200, services)) == {
        "zhibo-1": {"ID": "zhibo-1"}
    }
    nobody = f"http://127.0.0.1:{free_loopback_port()}"
    assert run_fact(ConsulAgentServices(), nobody) == {}
    assert run_fact(ConsulPassingServices(), nobody) == []
    assert run_fact(ConsulAgentServices(), agent_answering(403, "ACL not found")) == (
        "answered 403 (ACL not found) to GET /v1/agent/services"
    )
    monkeypatch.setattr(facts, "AGENT_TIMEOUT_S", 1)
    slow = agent_answering(200, "{}", delay=5)
    assert run_fact(ConsulPassingServices(), slow) == (
        "did not answer GET /v1/agent/checks within 1 s"
    )


def test_the_agent_facts_command_sends_the_token_from_its_file_not_its_command_line():
    header = "/etc/lab/secrets/consul.header"
    assert f" -H @{header} " in ConsulAgentServices().command("http://127.0.0.1:8500", header)
