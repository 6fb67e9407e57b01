"""The LB's one record of what nginx runs: lb-publish reads the upstreams of the
configuration nginx runs into lb.json (templates/lb/lb-publish), and labctl reads lb.json
(labctl.lb_client.read_lb_record), as lab-wait and the LB's page do."""

from __future__ import annotations

import json

import httpx
import pytest

from labctl.lb_client import LbRecord, read_lb_record
from roles.contract import LB_FALLBACK_SERVER, LB_RECORD_PATH, TEMPLATES
from tests.support.lb_record import publish

# service.conf as the LB renders it (templates/lb/service.ctmpl), three services.
RENDERED = """
upstream zhibo_service {
    zone upstream-zhibo_service 64k;
    server 192.168.56.2:8080 max_fails=3 fail_timeout=60 weight=1;
    server 192.168.56.3:8080 max_fails=3 fail_timeout=60 weight=1;
    server 192.168.56.4:8081 max_fails=3 fail_timeout=60 weight=1;
    keepalive 16;
}

upstream web {
    zone upstream-web 64k;
    server 192.168.56.9:80;
    keepalive 16;
}

upstream empty {
    zone upstream-empty 64k;
    server 127.0.0.1:65535; # force a 502
    keepalive 16;
}

server {
    listen 80 default_server;
    server_name zhibo_service.com _;

    location /zhibo_service {
        proxy_pass http://zhibo_service;
    }
}
"""


def test_every_upstream_with_its_servers_in_order(tmp_path):
    assert publish(tmp_path, RENDERED)["upstreams"] == {
        "zhibo_service": ["192.168.56.2:8080", "192.168.56.3:8080", "192.168.56.4:8081"],
        "web": ["192.168.56.9:80"],
        "empty": [],
    }


def test_the_force_a_502_fallback_is_left_out(tmp_path):
    config = f"upstream s {{\n    server {LB_FALLBACK_SERVER}; # force a 502\n}}\n"
    assert publish(tmp_path, config)["upstreams"] == {"s": []}


def test_the_server_block_is_not_an_upstream(tmp_path):
    config = "server {\n    listen 80;\n    server_name x;\n}\n"
    assert publish(tmp_path, config)["upstreams"] == {}


def test_an_empty_configuration_has_no_upstreams(tmp_path):
    # start.sh installs an empty service.conf until the first render.
    assert publish(tmp_path, "")["upstreams"] == {}


def answering(record: dict | None, status: int = 200) -> httpx.Client:
    """A client whose LB answers LB_RECORD_PATH with `record` (and nothing else)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path != LB_RECORD_PATH:
            return httpx.Response(404)
        return httpx.Response(status, content=json.dumps(record).encode())

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_labctl_reads_what_lb_publish_wrote(tmp_path):
    published = publish(tmp_path, RENDERED, reloads=4, rejected=1)
    with answering(published) as client:
        assert read_lb_record(client, "192.168.56.4") == LbRecord(
            upstreams=published["upstreams"], reloads=4, rejected=1
        )


def test_an_lb_that_does_not_publish_is_an_error_not_an_empty_record():
    with answering(None, status=404) as client, pytest.raises(httpx.HTTPStatusError):
        read_lb_record(client, "192.168.56.4")


def test_the_templates_spell_the_contracts_fallback_server():
    # Where a shell script and a Go template cannot import roles/contract.py.
    assert f"server {LB_FALLBACK_SERVER}; # force a 502" in (
        TEMPLATES / "lb" / "service.ctmpl"
    ).read_text()
    assert f'$2 != "{LB_FALLBACK_SERVER}"' in (TEMPLATES / "lb" / "lb-publish").read_text()
