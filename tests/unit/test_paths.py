"""The demo counts `scale` records override the spec's (labctl.paths.with_state)."""

from __future__ import annotations

import pytest

from labctl import paths
from labctl.paths import with_state, write_state
from labctl.spec import load_spec
from tests.conftest import seed_hosts


@pytest.fixture
def spec(tmp_path, monkeypatch, write_spec):
    """The default spec, read from a tmp copy, with its state dir under tmp_path."""
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "project")
    spec, _ = load_spec(write_spec({"name": "dynlb", "hosts": seed_hosts()}, "spec.yaml"))
    return spec


def demo_counts(spec) -> dict[str, int]:
    return {h.name: h.first_service_count for h in spec.hosts}


def test_state_is_written_under_the_patched_project_root(spec, tmp_path):
    write_state(spec, demo_counts={"server1": 2})
    assert (tmp_path / "project" / ".lab" / "dynlb" / "state.json").is_file()


def test_recorded_counts_override_the_spec(spec):
    write_state(spec, demo_counts={"server1": 3, "server2": 0, "server3": 2})
    assert demo_counts(with_state(spec)) == {"server1": 3, "server2": 0, "server3": 2}


def test_a_host_missing_from_the_counts_keeps_its_spec_count(spec):
    write_state(spec, demo_counts={"server1": 4})
    assert demo_counts(with_state(spec)) == {"server1": 4, "server2": 1, "server3": 1}


def test_all_zero_counts_still_override(spec):
    write_state(spec, demo_counts={"server1": 0, "server2": 0, "server3": 0})
    assert demo_counts(with_state(spec)) == {"server1": 0, "server2": 0, "server3": 0}


def test_without_state_the_spec_is_returned_unchanged(spec):
    assert with_state(spec) is spec


def test_state_without_counts_returns_the_spec_unchanged(spec):
    write_state(spec, provider="docker")
    assert with_state(spec) is spec


def test_the_source_file_is_kept(spec, tmp_path):
    write_state(spec, demo_counts={"server1": 2})
    scaled = with_state(spec)
    assert scaled.source == spec.source == (tmp_path / "spec.yaml").resolve()


def test_the_spec_itself_is_not_changed(spec):
    write_state(spec, demo_counts={"server1": 5})
    with_state(spec)
    assert demo_counts(spec) == {"server1": 1, "server2": 1, "server3": 1}


def test_the_offline_road_recorded_in_the_state_names_the_standins(spec, tmp_path):
    binary = tmp_path / "consul-template"
    write_state(
        spec,
        offline={"consul": "lab-standin/consul:1.11.3-x", "consul_template_binary": str(binary)},
    )
    offline = with_state(spec)
    assert offline.consul_image == "lab-standin/consul:1.11.3-x"
    assert offline.images.consul_template_binary == binary
    assert offline.source == spec.source
    assert spec.consul_image == "hashicorp/consul:1.11.3"  # the spec itself is unchanged
