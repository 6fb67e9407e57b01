"""The LB's page and the JSON it reads: health.ctmpl rendered by the consul-template
stand-in, lb-publish run on a rendered configuration, and the page itself (templates/lb/
page) in headless Chromium against a loopback server that serves those very files.

consul-template 0.19's `service` joins its arguments with "|" (template/funcs.go,
serviceFunc: `dep.NewHealthServiceQuery(strings.Join(s, "|"))`), so `service $name "any"`
is `service "name|any"`: every instance, whatever its health; `toJSON` is json.Marshal.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import cycle
from pathlib import Path

import pytest

from tests.support.consul_fakes import build_consul_template
from tests.support.lb_page import (
    counters,
    headless_chromium,
    poll,
    routed,
    send_requests,
    services_shown,
)
from tests.support.lb_record import publish
from tests.unit.test_lb_template import HEALTHY, LB_RECIPE, PLACEHOLDER, render

HEALTH_TEMPLATE = LB_RECIPE / "health.ctmpl"
PAGE = LB_RECIPE / "page"
# The page refreshes every second; a change must show within a few refreshes.
PAGE_FOLLOWS = 5


@pytest.fixture(scope="module")
def consul_template(tmp_path_factory) -> Path:
    return build_consul_template(tmp_path_factory.mktemp("standin"))


@pytest.fixture(scope="module")
def health(consul_template, tmp_path_factory) -> dict:
    rendered = render(consul_template, HEALTHY, tmp_path_factory.mktemp("health"), HEALTH_TEMPLATE)
    return json.loads(rendered)


@pytest.fixture(scope="module")
def service_conf(consul_template, tmp_path_factory) -> str:
    return render(consul_template, HEALTHY, tmp_path_factory.mktemp("service"))


# --- health.json ---------------------------------------------------------------------


def test_health_lists_every_service_and_says_which_the_lb_proxies(health):
    assert [(s["name"], s["lb"]) for s in health["services"]] == [
        ("consul", False), ("metrics", False), ("web", True), ("zhibo_service", True),
    ]  # fmt: skip
    assert {s["name"]: s["tags"] for s in health["services"]}["zhibo_service"] == ["primary", "v2"]


def test_health_lists_every_instance_with_its_status_critical_ones_too(health):
    services = {s["name"]: s for s in health["services"]}
    assert sorted(
        (i["id"], i["node"], i["address"], i["port"], i["status"])
        for i in services["zhibo_service"]["instances"]
    ) == [
        ("zhibo-1", "server1", "192.168.56.2", 8080, "passing"),
        ("zhibo-1-2", "server1", "192.168.56.2", 8081, "passing"),
        ("zhibo-2", "server2", "192.168.56.3", 8080, "passing"),
        ("zhibo-3", "server3", "192.168.56.4", 8080, "critical"),
    ]
    assert [i["status"] for i in services["web"]["instances"]] == ["critical"]


def test_services_the_lb_leaves_out_carry_no_instances(health):
    services = {s["name"]: s for s in health["services"]}
    assert services["consul"]["instances"] == services["metrics"]["instances"] == []


# --- lb.json -------------------------------------------------------------------------


def test_lb_json_has_the_upstreams_of_the_configuration_nginx_runs(service_conf, tmp_path):
    published = publish(tmp_path, service_conf, reloads=7, rejected=2)
    assert published["upstreams"] == {
        "web": [],  # only the "force a 502" fallback
        "zhibo_service": ["192.168.56.2:8080", "192.168.56.2:8081", "192.168.56.3:8080"],
    }
    assert (published["reloads"], published["rejected"]) == (7, 2)
    assert published["latest_render_refused"] is False


def test_lb_json_of_the_first_starts_placeholder_has_no_upstream(tmp_path):
    assert publish(tmp_path, PLACEHOLDER.read_text())["upstreams"] == {}


def test_lb_json_says_when_the_latest_render_was_refused(service_conf, tmp_path):
    assert publish(tmp_path, service_conf, refused=True)["latest_render_refused"] is True


# --- the page, in a real browser -----------------------------------------------------


class LabState:
    """What the loopback LB serves under /_lab/, and the instances answering /<service>."""

    def __init__(self, lb: dict, health: dict) -> None:
        self.files = {"lb.json": lb, "health.json": health}
        self.answering = {
            "zhibo_service": cycle([("zhibo-1", "直播服务API1 #IP:192.168.56.2"),
                                    ("zhibo-2", "直播服务API2 #IP:192.168.56.3")]),
        }  # fmt: skip
        self.lab_status = 200


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state: LabState = self.server.state
        path = self.path.split("?")[0]
        if path.startswith("/_lab/"):
            data = state.files.get(path.removeprefix("/_lab/"))
            if state.lab_status != 200 or data is None:
                self._send(state.lab_status if data is not None else 404, b"", "text/plain")
            else:
                self._send(200, json.dumps(data).encode(), "application/json")
        elif path.lstrip("/") in state.answering:
            instance, line = next(state.answering[path.lstrip("/")])
            body = f"<h1>{line}</h1>".encode()
            self._send(200, body, "text/html; charset=utf-8", {"X-Instance": instance})
        else:
            file = PAGE / ("index.html" if path == "/" else path.lstrip("/"))
            if file.parent != PAGE or not file.is_file():
                self._send(404, b"", "text/plain")
                return
            kinds = {".html": "text/html", ".js": "application/javascript", ".css": "text/css"}
            self._send(200, file.read_bytes(), kinds[file.suffix] + "; charset=utf-8")

    def _send(self, status: int, body: bytes, kind: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def loopback_lb(state: LabState) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    server.state = state
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def lab_state(service_conf, health, tmp_path) -> LabState:
    return LabState(publish(tmp_path, service_conf, reloads=3, rejected=1), health)


@pytest.fixture
def page(lab_state):
    with loopback_lb(lab_state) as url, headless_chromium() as driver:
        driver.get(url)
        yield driver


def test_the_page_lists_every_proxied_service_with_its_instances(page, tmp_path):
    shown = poll(page, lambda: services_shown(page), PAGE_FOLLOWS, "services on the page",
                 tmp_path)  # fmt: skip
    assert set(shown) == {"zhibo_service", "web"}
    assert shown["zhibo_service"] == {
        "zhibo-1": ("passing", "yes"),
        "zhibo-1-2": ("passing", "yes"),
        "zhibo-2": ("passing", "yes"),
        "zhibo-3": ("critical", "no"),
    }
    assert shown["web"] == {"web-1": ("critical", "no")}
    assert counters(page) == (3, 1)


def test_the_page_follows_a_change_of_the_upstream(page, lab_state, tmp_path):
    poll(page, lambda: routed(page, "zhibo_service") == {"zhibo-1", "zhibo-1-2", "zhibo-2"},
         PAGE_FOLLOWS, "three routed instances", tmp_path)  # fmt: skip
    lab_state.files["lb.json"] = lab_state.files["lb.json"] | {
        "upstreams": {"zhibo_service": ["192.168.56.2:8080"], "web": []},
        "reloads": 4,
    }
    poll(page, lambda: routed(page, "zhibo_service") == {"zhibo-1"}, PAGE_FOLLOWS,
         "the page dropping the instances nginx no longer routes to", tmp_path)  # fmt: skip
    assert counters(page) == (4, 1)


def test_send_requests_shows_which_instance_answered_each(page, tmp_path):
    answers = send_requests(page, "zhibo_service", 4, PAGE_FOLLOWS, tmp_path)
    assert answers == [
        ("zhibo-1", "zhibo-1: 直播服务API1 #IP:192.168.56.2"),
        ("zhibo-2", "zhibo-2: 直播服务API2 #IP:192.168.56.3"),
    ] * 2


def test_the_page_says_when_the_lab_state_is_refused(lab_state, tmp_path):
    lab_state.lab_status = 403
    with loopback_lb(lab_state) as url, headless_chromium() as driver:
        driver.get(url)
        problem = poll(driver, lambda: driver.find_element("id", "problem").text, PAGE_FOLLOWS,
                       "a sentence about the refused state", tmp_path)  # fmt: skip
    assert "lab's own network only" in problem
