"""The road with no registry at all: `labctl up --offline` brings up the default lab
(lab.yaml: dynlb on 192.168.56.0/24, the seed's) on the project's stand-ins, and every
output that shows Consul or consul-template says they are stand-ins, not HashiCorp
software. This is the only test on the default lab's subnet; it is torn down at the end.
"""

from __future__ import annotations

import docker
import pytest

from labctl.paths import LAB_LABEL, lab_dir
from labctl.spec import DEFAULT_SPEC, load_spec
from labctl.standins import NOTE
from tests.e2e.conftest import labctl


@pytest.fixture(scope="module")
def offline_lab():
    spec, _ = load_spec(DEFAULT_SPEC)
    client = docker.from_env()
    others = client.containers.list(all=True, filters={"label": f"{LAB_LABEL}={spec.name}"})
    if others and not lab_dir(spec).exists():
        pytest.fail(
            f"containers of a {spec.name} lab from another checkout are on this engine "
            f"({', '.join(c.name for c in others)}); take that lab down first."
        )
    labctl(DEFAULT_SPEC, "down")  # this checkout's leftovers of an interrupted run
    result = labctl(DEFAULT_SPEC, "up", "--offline")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield spec, result
    finally:
        down = labctl(DEFAULT_SPEC, "down", timeout=600)
        assert down.returncode == 0, down.stderr
        assert client.containers.list(all=True, filters={"label": f"{LAB_LABEL}={spec.name}"}) == []


def test_up_offline_says_so_and_verifies_on_the_standins(offline_lab):
    spec, result = offline_lab
    assert spec.network.subnet.exploded == "192.168.56.0/24" and len(spec.hosts) == 3
    assert f"offline: {NOTE}." in result.stderr
    assert "checks failed" not in result.stderr
    verify_table = result.stdout
    assert "直播服务API3" in verify_table and NOTE in " ".join(verify_table.split())


@pytest.mark.parametrize(
    "verb", [("verify",), ("status",), ("watch", "--count", "1")], ids=lambda v: v[0]
)
def test_every_view_of_consul_names_the_standins(offline_lab, verb):
    result = labctl(DEFAULT_SPEC, *verb, timeout=120)
    assert result.returncode == 0, result.stderr
    assert NOTE in " ".join(result.stdout.split())


def test_watch_labels_the_consul_column_as_a_standin(offline_lab):
    result = labctl(DEFAULT_SPEC, "watch", "--count", "1", timeout=120)
    assert "consul (stand-in)" in result.stdout
