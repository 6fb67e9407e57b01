"""lab-wait's LB conditions (templates/lab-wait) read the LB's published record,
/_lab/lb.json, here served on loopback as in the LB page's tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from roles.contract import TEMPLATES
from tests.unit.test_lb_page import LabState, loopback_lb

LAB_WAIT = TEMPLATES / "lab-wait"
RECORD = {
    "upstreams": {"zhibo_service": ["192.168.56.2:8080", "192.168.56.3:8080"], "web": []},
    "reloads": 3, "rejected": 0, "reload_failures": 0, "latest_render_refused": False,
    "latest_reload_failed": False, "published": 1,
}  # fmt: skip


@pytest.fixture
def lb() -> Iterator[str]:
    """The address of an LB that publishes RECORD (the page's loopback LB)."""
    with loopback_lb(LabState(RECORD, {})) as url:
        yield url.removeprefix("http://").rstrip("/")


def lab_wait(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"LAB_WAIT_TIMEOUT": "1"}
    return subprocess.run(["sh", str(LAB_WAIT), *args], env=env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip


def test_lb_serves_holds_for_a_member_of_an_upstream(lb):
    assert lab_wait("lb-serves", lb, "192.168.56.3:8080").returncode == 0


def test_lb_serves_names_what_did_not_happen(lb):
    # 192.168.56.3:808 is a prefix of a member: no member.
    result = lab_wait("lb-serves", lb, "192.168.56.3:808")
    assert result.returncode == 1
    assert result.stderr == (
        f"lab-wait: the LB at {lb} routing to 192.168.56.3:808 did not happen within 1 s\n"
    )


def test_lb_drops_holds_for_an_address_in_no_upstream(lb):
    assert lab_wait("lb-drops", lb, "192.168.56.4:8080").returncode == 0
    assert lab_wait("lb-drops", lb, "192.168.56.2:8080").returncode == 1


def test_lb_drops_does_not_hold_while_the_lb_does_not_answer():
    # Nothing listens on port 9 of loopback (discard): no record, so nothing is dropped.
    assert lab_wait("lb-drops", "127.0.0.1:9", "192.168.56.2:8080").returncode == 1
