"""templates/lb/service.ctmpl, rendered as the LB renders it.

The consul-template stand-in (tests/standins/consul-template, built once per
session) renders the template in -once mode against a tiny fake Consul HTTP API
on 127.0.0.1; the tests read the result and, where Debian's nginx is installed,
check it with `nginx -t`.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.support.consul_fakes import build_consul_template, fake_consul
from tests.support.lb_record import publish

LB_RECIPE = PROJECT_ROOT / "templates" / "lb"
TEMPLATE = LB_RECIPE / "service.ctmpl"
SERVER_PART = LB_RECIPE / "lab-server.conf"
PLACEHOLDER = LB_RECIPE / "placeholder.conf"
NGINX = Path("/usr/sbin/nginx")
ALLOW_CIDR = "192.168.56.0/24"
FALLBACK = "server 127.0.0.1:65535; # force a 502"


def entry(node: str, address: str, service: str, sid: str, port: int, status="passing") -> dict:
    """One /v1/health/service element: node, service and its checks."""
    checks = [
        {"Node": node, "CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
        {"Node": node, "CheckID": f"service:{sid}", "Status": status, "ServiceID": sid},
    ]
    return {
        "Node": {"ID": f"id-{node}", "Node": node, "Address": address, "Datacenter": "dc1",
                 "TaggedAddresses": {"lan": address}, "Meta": {}},
        "Service": {"ID": sid, "Service": service, "Tags": [], "Address": address,
                    "Port": port, "Meta": {}},
        "Checks": checks,
    }  # fmt: skip


# The lab with three zhibo_service instances (one of them critical), the consul
# service itself, a service tagged no-lb, and a service with no passing instance.
HEALTHY = {
    "catalog": {
        "consul": [],
        "zhibo_service": ["primary", "v2"],
        "metrics": ["no-lb"],
        "web": [],
    },
    "health": {
        "consul": [entry("server1", "192.168.56.2", "consul", "consul", 8300)],
        "zhibo_service": [
            entry("server2", "192.168.56.3", "zhibo_service", "zhibo-2", 8080),
            entry("server1", "192.168.56.2", "zhibo_service", "zhibo-1", 8080),
            entry("server1", "192.168.56.2", "zhibo_service", "zhibo-1-2", 8081),
            entry("server3", "192.168.56.4", "zhibo_service", "zhibo-3", 8080, "critical"),
        ],
        "metrics": [entry("server3", "192.168.56.4", "metrics", "metrics", 9100)],
        "web": [entry("server3", "192.168.56.4", "web", "web-1", 80, "critical")],
    },
}

# Every zhibo_service instance critical.
ALL_CRITICAL = {
    "catalog": {"consul": [], "zhibo_service": ["primary", "v2"]},
    "health": {
        "consul": HEALTHY["health"]["consul"],
        "zhibo_service": [
            entry("server1", "192.168.56.2", "zhibo_service", "zhibo-1", 8080, "critical"),
            entry("server2", "192.168.56.3", "zhibo_service", "zhibo-2", 8080, "critical"),
        ],
    },
}


@pytest.fixture(scope="session")
def consul_template(tmp_path_factory) -> Path:
    return build_consul_template(tmp_path_factory.mktemp("standin"))


def render(consul_template: Path, data: dict, out_dir: Path, template: Path = TEMPLATE) -> str:
    """Serve `data` as Consul on 127.0.0.1, render `template` once, return the result."""
    with fake_consul(data["catalog"], data["health"]) as (address, _):
        dest = out_dir / template.with_suffix(".rendered").name
        proc = subprocess.run(
            [
                str(consul_template),
                "-once",
                f"-consul-addr={address}",
                "-consul-retry=false",
                f"-template={template}:{dest}",
            ],
            env=dict(os.environ, LB_ALLOW_CIDR=ALLOW_CIDR),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 0, proc.stderr
    return dest.read_text()


@pytest.fixture(scope="module")
def healthy(consul_template, tmp_path_factory) -> str:
    return render(consul_template, HEALTHY, tmp_path_factory.mktemp("healthy"))


@pytest.fixture(scope="module")
def all_critical(consul_template, tmp_path_factory) -> str:
    return render(consul_template, ALL_CRITICAL, tmp_path_factory.mktemp("all-critical"))


def block(config: str, opening: str) -> str:
    """The body of the block that starts with `opening {` (no nested braces)."""
    match = re.search(re.escape(opening) + r"\s*\{(.*?)\}", config, re.S)
    assert match, f"no `{opening} {{` in:\n{config}"
    return match.group(1)


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- what the template renders ----------------------------------------------------


def test_consul_service_gets_no_upstream_and_no_location(healthy):
    assert "upstream consul" not in healthy
    assert "location /consul" not in healthy
    assert "8300" not in healthy


def test_service_tagged_no_lb_is_left_out(healthy):
    assert "metrics" not in healthy


def test_one_server_line_per_passing_instance(healthy):
    assert lines(block(healthy, "upstream zhibo_service")) == [
        "zone upstream-zhibo_service 64k;",
        "server 192.168.56.2:8080 max_fails=3 fail_timeout=60 weight=1;",
        "server 192.168.56.2:8081 max_fails=3 fail_timeout=60 weight=1;",
        "server 192.168.56.3:8080 max_fails=3 fail_timeout=60 weight=1;",
        "keepalive 16;",
    ]


def test_a_critical_instance_is_not_a_server(healthy):
    assert "192.168.56.4:8080" not in healthy


def test_a_service_with_no_passing_instance_forces_a_502(healthy):
    assert lines(block(healthy, "upstream web")) == [
        "zone upstream-web 64k;",
        FALLBACK,
        "keepalive 16;",
    ]


def test_zhibo_service_with_no_passing_instance_forces_a_502(all_critical):
    assert lines(block(all_critical, "upstream zhibo_service")) == [
        "zone upstream-zhibo_service 64k;",
        FALLBACK,
        "keepalive 16;",
    ]


def test_each_service_location_proxies_to_its_upstream(healthy):
    assert lines(block(healthy, "location /zhibo_service")) == ["proxy_pass http://zhibo_service;"]
    assert lines(block(healthy, "location /web")) == ["proxy_pass http://web;"]


def test_the_server_block_takes_the_lbs_own_locations_from_the_shared_part(healthy):
    server = healthy[healthy.index("server {") :]
    assert lines(server)[1] == "include lab/server.conf;"
    assert lines(PLACEHOLDER.read_text())[-3:] == ["server {", "include lab/server.conf;", "}"]


def test_stub_status_answers_loopback_only():
    assert lines(block(SERVER_PART.read_text(), "location /stub_status")) == [
        "stub_status;",
        "allow 127.0.0.1;",
        "deny all;",
    ]


def test_lab_state_is_allowed_to_loopback_and_the_lab_networks_only():
    assert lines(block(SERVER_PART.read_text(), "location /_lab/"))[-3:] == [
        "allow 127.0.0.1;",
        "include lab/allow.conf;",  # written by start.sh from LB_ALLOW_CIDRS
        "deny all;",
    ]


def test_the_published_record_reads_the_rendered_upstreams(healthy, tmp_path):
    assert publish(tmp_path, healthy)["upstreams"] == {
        "web": [],
        "zhibo_service": ["192.168.56.2:8080", "192.168.56.2:8081", "192.168.56.3:8080"],
    }


# --- the rendered file is valid nginx ---------------------------------------------


def nginx_check(rendered: str, tmp_path: Path) -> tuple[int, str]:
    """`nginx -t` on the rendered file inside a minimal http block, in tmp_path only, with
    the LB's shared server part where the image puts it (relative to the conf prefix)."""
    service = tmp_path / "service.conf"
    service.write_text(rendered)
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "server.conf").write_text(SERVER_PART.read_text())
    (tmp_path / "lab" / "allow.conf").write_text(f"allow {ALLOW_CIDR};\n")
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"events {{}}\nhttp {{\n{temp_paths}\n    include {service};\n}}\n")
    proc = subprocess.run(
        [
            str(NGINX),
            "-t",
            "-p", f"{tmp_path}/",
            "-e", str(tmp_path / "startup.log"),
            "-c", str(conf),
            "-g", f"pid {tmp_path / 'nginx.pid'}; error_log {tmp_path / 'error.log'};",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    return proc.returncode, proc.stderr


def structurally_valid(rendered: str) -> None:
    """What can be checked without nginx: balanced braces, every statement ended."""
    assert rendered.count("{") == rendered.count("}")
    for line in lines(rendered):
        if not line.startswith("#"):
            assert line.endswith(("{", "}", ";")) or "; #" in line, line


@pytest.fixture
def placeholder() -> str:
    return PLACEHOLDER.read_text()


@pytest.mark.parametrize("scenario", ["healthy", "all_critical", "placeholder"])
def test_rendered_file_is_valid_nginx(scenario, request, tmp_path):
    """Debian's nginx (installed by `./lab test`) accepts every configuration the LB
    can run: a render, one with no passing instance, and a first start's placeholder."""
    rendered = request.getfixturevalue(scenario)
    structurally_valid(rendered)
    code, output = nginx_check(rendered, tmp_path)
    assert code == 0, output
    assert "test is successful" in output
