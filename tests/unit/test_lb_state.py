"""Reading the LB's running configuration (labctl.lb.parse_upstreams)."""

from __future__ import annotations

from labctl.lb import parse_upstreams

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


def test_every_upstream_with_its_servers_in_order():
    assert parse_upstreams(RENDERED) == {
        "zhibo_service": ["192.168.56.2:8080", "192.168.56.3:8080", "192.168.56.4:8081"],
        "web": ["192.168.56.9:80"],
        "empty": [],
    }


def test_the_force_a_502_fallback_is_left_out():
    config = "upstream s {\n    server 127.0.0.1:65535; # force a 502\n    keepalive 16;\n}\n"
    assert parse_upstreams(config) == {"s": []}


def test_the_server_block_is_not_an_upstream():
    config = "server {\n    listen 80;\n    server_name x;\n}\n"
    assert parse_upstreams(config) == {}


def test_an_empty_configuration_has_no_upstreams():
    # start.sh installs an empty service.conf until the first render.
    assert parse_upstreams("") == {}
