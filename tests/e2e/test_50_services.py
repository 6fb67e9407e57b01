"""Services that come and go. A second service added by editing the spec and applying gets
its own upstream and `location /<name>` with no nginx edit and answers through the LB;
`verify --json` shows it as the table does; the LB's page in headless Chromium lists both
services and follows `labctl scale` of the second; removing it again under request loops
to the first loses nothing (deregistered and out of the LB first, then stopped: by the
LB's and Docker's own records).

The suite's lab is left as it was found: three zhibo_service instances, no other service,
and an apply with zero changes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from email.utils import parsedate_to_datetime

import httpx
import pytest

from tests.e2e.conftest import E2E_SUBNET, e2e_spec_data, labctl, wait_for, write_spec
from tests.e2e.events import LbTimeline, assert_left_the_lb_before_it_stopped, container_events
from tests.e2e.probes import (
    FOLLOW_DEADLINE,
    LB,
    SERVICE,
    Traffic,
    consul,
    lb_sample,
    lb_state,
    on_host,
)
from tests.support.lb_page import headless_chromium, poll, routed, send_requests, services_shown
from tests.support.polling import BackgroundPoll

SECOND = "danmu_service"
FIRST_THREE = {"zhibo-1", "zhibo-2", "zhibo-3"}
SECOND_TWO = {"danmu-service-1", "danmu-service-2"}
SECOND_THREE = SECOND_TWO | {"danmu-service-1-2"}
# The page refreshes every second; the LB follows Consul within FOLLOW_DEADLINE.
PAGE_FOLLOWS = FOLLOW_DEADLINE + 5


def with_second_service(images: dict) -> dict:
    data = e2e_spec_data(images)
    data["services"] = [
        {"name": SERVICE},
        {"name": SECOND, "port": 9080, "instances": {"node1": 1, "node2": 1}},
    ]
    return data


def registered_services(spec) -> set[str]:
    return set(consul(spec, "/v1/catalog/services"))


class Poller(BackgroundPoll):
    """GETs `url` every 0.2 s in a thread, as a person reloading a page would: counts what
    came back (status codes, error names) and notes when one of `instances` first answered
    (monotonic), None until then."""

    interval = 0.2

    def __init__(self, url: str, instances: set[str] = frozenset()) -> None:
        super().__init__()
        self.url, self.instances = url, instances
        self.outcomes: Counter = Counter()
        self.first_answer: float | None = None

    def poll(self, client: httpx.Client) -> None:
        try:
            response = client.get(self.url)
        except httpx.HTTPError as exc:
            self.outcomes[type(exc).__name__] += 1
            return
        self.outcomes[response.status_code] += 1
        if self.first_answer is None and response.headers.get("X-Instance") in self.instances:
            self.first_answer = time.monotonic()


@pytest.fixture(scope="module")
def second(lab, e2e_spec, e2e_images, tmp_path_factory):
    """The second service applied from an edited spec; yields (spec file, apply result,
    seconds from the apply's start to the service's first answer through the LB). Whatever
    the tests did, the suite's own spec is applied again at the end if the service is
    still there."""
    spec, _, _ = lab
    spec_file = write_spec(tmp_path_factory.mktemp("services") / "lab.yaml",
                           with_second_service(e2e_images))  # fmt: skip
    try:
        started = time.monotonic()
        with Poller(f"http://{LB}/{SECOND}", SECOND_TWO) as poller:
            result = labctl(spec_file, "apply", timeout=600)
            assert result.returncode == 0, result.stderr
            applied = time.monotonic() - started
            wait_for(lambda: poller.first_answer, FOLLOW_DEADLINE,
                     f"{SECOND} answering through the LB")  # fmt: skip
        to_first = poller.first_answer - started
        print(f"{SECOND}: apply {applied:.1f} s; from the apply's start to its first answer "
              f"through the LB {to_first:.1f} s")  # fmt: skip
        yield spec_file, result, to_first
    finally:
        if SECOND in registered_services(spec):
            labctl(e2e_spec, "apply", timeout=600)


def test_a_second_service_gets_its_own_upstream_and_location(second):
    _, result, _ = second
    expected = {f"{E2E_SUBNET}.2:9080", f"{E2E_SUBNET}.3:9080"}
    wait_for(lambda: set(lb_state().upstreams.get(SECOND, [])) == expected,
             FOLLOW_DEADLINE, f"both {SECOND} instances in its upstream")  # fmt: skip
    config = httpx.get(f"http://{LB}/_lab/service.conf", timeout=5).text
    assert f"location /{SECOND} {{" in config and f"proxy_pass http://{SECOND};" in config
    # No nginx edit: the LB's container is as it was; the new instances changed, and the
    # file that tells the LB's page who registers each service (which nginx only serves).
    (changes,) = [line for line in result.stderr.splitlines() if " changed: " in line]
    assert "Run and register danmu-service" in changes, changes
    lb_changes = [c.strip() for c in changes.split(";") if "Deploy load balancer" in c]
    assert lb_changes == [
        "Deploy load balancer | Write who registers each service, for the LB's page on node3"
    ], changes
    assert "nginx" not in changes, changes
    with httpx.Client(timeout=5) as client:
        lines = {client.get(f"http://{LB}/{SECOND}").text for _ in range(6)}
    assert lines == {f"<h1>{SECOND} 1 #IP:{E2E_SUBNET}.2</h1>",
                     f"<h1>{SECOND} 2 #IP:{E2E_SUBNET}.3</h1>"}  # fmt: skip
    assert set(lb_sample(30)) == FIRST_THREE  # the first service as it was


def test_verify_json_parses_and_matches_the_table(second):
    spec_file, _, _ = second
    as_json = labctl(spec_file, "verify", "--json", timeout=120)
    as_table = labctl(spec_file, "verify", timeout=120)
    assert as_json.returncode == 0 and as_table.returncode == 0, as_json.stderr + as_table.stderr
    report = json.loads(as_json.stdout)
    assert report["ok"] is True
    from_json = [(c["service"], c["what"], c["target"], "ok" if c["ok"] else "FAIL")
                 for c in report["checks"]]  # fmt: skip
    rows = [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in as_table.stdout.splitlines() if line.startswith("│")]  # fmt: skip
    # A row's check is never empty: an empty one continues the row above (a wrapped detail).
    from_table = [tuple(row[:4]) for row in rows if len(row) == 5 and row[1] not in ("", "check")]
    assert from_table == from_json
    services = {(c["service"], c["target"]) for c in report["checks"] if c["what"] == "via LB"}
    assert services == {(SERVICE, i) for i in FIRST_THREE} | {(SECOND, i) for i in SECOND_TWO}


def test_status_shows_every_services_instances_per_host(second):
    spec_file, _, _ = second
    result = labctl(spec_file, "status", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    hosts = {h["name"]: h["instances"] for h in json.loads(result.stdout)["hosts"]}
    assert hosts == {
        "node1": {SERVICE: 1, SECOND: 1},
        "node2": {SERVICE: 1, SECOND: 1},
        "node3": {SERVICE: 1, SECOND: 0},
    }


def test_the_page_lists_both_services_and_follows_a_scale_of_the_second(second, tmp_path):
    spec_file, _, _ = second
    with headless_chromium() as page:
        page.get(f"http://{LB}/")
        poll(page, lambda: routed(page, SERVICE) == FIRST_THREE
             and routed(page, SECOND) == SECOND_TWO, PAGE_FOLLOWS,
             "both services and their instances on the page", tmp_path)  # fmt: skip
        answered = send_requests(page, SECOND, 6, evidence=tmp_path)
        assert {instance for instance, _ in answered} == SECOND_TWO, answered

        scaled = labctl(spec_file, "scale", f"{SECOND}=3", timeout=600)
        assert scaled.returncode == 0, scaled.stderr
        assert set(lb_state().upstreams[SECOND]) == {
            f"{E2E_SUBNET}.2:9080", f"{E2E_SUBNET}.2:9081", f"{E2E_SUBNET}.3:9080"
        }  # fmt: skip
        poll(page, lambda: routed(page, SECOND) == SECOND_THREE, PAGE_FOLLOWS,
             f"the page showing the third {SECOND} instance", tmp_path)  # fmt: skip
        assert routed(page, SERVICE) == FIRST_THREE
        answered = send_requests(page, SECOND, 9, evidence=tmp_path)
        assert {instance for instance, _ in answered} == SECOND_THREE, answered
        assert (f"danmu-service-1-2: {SECOND} 1-2 #IP:{E2E_SUBNET}.2") in {t for _, t in answered}
        assert set(services_shown(page)) == {SERVICE, SECOND}


def test_a_restarted_lb_renders_both_of_its_files_afresh(lab):
    """start.sh deletes both renders before consul-template starts, so each is written by
    the first render after the start (consul-template writes nothing when a render equals
    the file on disk): health.json is newer than the restart, not the file of before."""
    _, connections, _ = lab
    restarted = int(time.time())
    on_host(connections, "node3", "docker restart lb")

    def rendered_since_the_restart() -> dict | None:
        try:
            response = httpx.get(f"http://{LB}/_lab/health.json", timeout=2)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        modified = parsedate_to_datetime(response.headers["Last-Modified"]).timestamp()
        return response.json() if modified >= restarted else None

    health = wait_for(rendered_since_the_restart, FOLLOW_DEADLINE, "health.json rendered again")
    proxied = {s["name"]: {i["id"] for i in s["instances"]} for s in health["services"] if s["lb"]}
    assert proxied == {SERVICE: FIRST_THREE, SECOND: SECOND_THREE}
    published = httpx.get(f"http://{LB}/_lab/lb.json", timeout=5).json()
    assert published["published"] >= restarted
    assert set(published["upstreams"]) == {SERVICE, SECOND}


def test_removing_the_second_service_under_load_loses_nothing(lab, second, e2e_spec):
    spec, connections, _ = lab
    since = time.time()
    with (
        LbTimeline() as timeline,
        Traffic(f"removing {SECOND}") as traffic,
        Poller(f"http://{LB}/{SECOND}") as leaving,
    ):
        removed = labctl(e2e_spec, "apply", timeout=600)
    assert removed.returncode == 0, removed.stderr
    print(f"removing {SECOND}: {SECOND} itself {dict(leaving.outcomes)}")
    traffic.assert_no_failed_get()
    # Out of Consul and out of nginx before it stopped: it answered until its location went
    # (then the LB's own / answers 404), never a refused or timed-out connection. A render
    # may briefly keep its location with no instance left (the template's "force a 502"
    # server): consul-template reads the service list and the service's instances in two
    # stale queries, which can come back from different moments (real consul-template
    # does the same); the bench counts those 502s (service_remove).
    assert set(leaving.outcomes) <= {200, 404, 502}, leaving.outcomes
    # And by the LB's and Docker's own records, which proxy_next_upstream cannot blur.
    events = container_events(connections, ("node1", "node2"), "demo_service", since, time.time())
    assert_left_the_lb_before_it_stopped(timeline, events, SECOND, {
        "danmu-service-1": f"{E2E_SUBNET}.2:9080",
        "danmu-service-1-2": f"{E2E_SUBNET}.2:9081",
        "danmu-service-2": f"{E2E_SUBNET}.3:9080",
    })  # fmt: skip
    assert SECOND not in registered_services(spec)
    assert SECOND not in lb_state().upstreams
    assert httpx.get(f"http://{LB}/{SECOND}", timeout=5).status_code == 404
    for host in ("node1", "node2"):
        containers = on_host(connections, host, "docker ps -a --format '{{.Names}}'").split()
        assert not [c for c in containers if c.startswith("danmu-service")], (host, containers)

    again = labctl(e2e_spec, "apply", timeout=600)
    assert again.returncode == 0 and "no changes" in again.stderr, again.stderr
    assert set(lb_sample(30)) == FIRST_THREE
