"""The road with no registry at all: `labctl up --offline` brings up the seed's lab (the
default spec, lab.yaml: its hosts, roles, instances, versions, security and provider
`auto`) on the project's stand-ins, and every output that shows Consul or
consul-template says they are stand-ins, not HashiCorp software.

The lab is lab.yaml as it is, moved to a name and subnet of the suite's own
(tests/support/suite_labs.py: seed_spec_data), never the default lab itself: a person's
`dynlb` on 192.168.56.0/24, made by the README's first command, is theirs. It is torn
down at the end.
"""

from __future__ import annotations

import docker
import pytest

from labctl.images.standins import NOTE
from labctl.spec import DEFAULT_SPEC, load_spec
from roles.contract import LAB_LABEL
from tests.e2e.conftest import finish_lab, labctl, start_lab, write_spec
from tests.support.suite_labs import LABS, seed_spec_data, without_place


@pytest.fixture(scope="module")
def offline_spec(tmp_path_factory):
    return write_spec(tmp_path_factory.mktemp("offline") / "lab.yaml", seed_spec_data(LABS.offline))


@pytest.fixture(scope="module")
def offline_lab(offline_spec):
    spec = start_lab(offline_spec)
    result = labctl(offline_spec, "up", "--offline")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield spec, result
    finally:
        finish_lab(offline_spec)
        label = {"label": f"{LAB_LABEL}={spec.name}"}
        assert docker.from_env().containers.list(all=True, filters=label) == []


def test_up_offline_says_so_and_verifies_on_the_standins(offline_lab):
    spec, result = offline_lab
    seed, _ = load_spec(DEFAULT_SPEC)
    assert spec.name == LABS.offline.name and spec.network.subnet == LABS.offline.subnet
    assert without_place(spec) == without_place(seed)  # the seed's lab, only elsewhere
    assert f"offline: {NOTE}." in result.stderr
    assert "checks failed" not in result.stderr
    verify_table = result.stdout
    assert "直播服务API3" in verify_table and NOTE in " ".join(verify_table.split())


@pytest.mark.parametrize(
    "verb", [("verify",), ("status",), ("watch", "--count", "1")], ids=lambda v: v[0]
)
def test_every_view_of_consul_names_the_standins(offline_lab, offline_spec, verb):
    result = labctl(offline_spec, *verb, timeout=120)
    assert result.returncode == 0, result.stderr
    assert NOTE in " ".join(result.stdout.split())


def test_watch_labels_the_consul_column_as_a_standin(offline_lab, offline_spec):
    result = labctl(offline_spec, "watch", "--count", "1", timeout=120)
    assert "consul (stand-in)" in result.stdout
