"""Verbs on a lab that is not up say so from the lab's local state (.lab/<name>/state.json),
in one sentence with the fix, without sending anything anywhere: every verb runs under
tests/support/sandbox.py's guard, which fails the test on any socket connect or child
process. `down` still cleans a lab it has no state of."""

from __future__ import annotations

import json

import pytest
import yaml

from labctl import down_on_machines, lifecycle, paths
from labctl.cli import app
from labctl.spec import SPEC_ENV
from tests.support.bad_inputs import LAB, VALID
from tests.support.sandbox import Contact, invoke

VERBS = [
    ["verify"], ["verify", "--json"], ["watch", "--count", "1"], ["token"], ["token", "read"],
    ["scale", "zhibo_service=2"], ["fail", "zhibo-1"], ["recover", "server1"], ["apply"],
    ["restart-lb"],
]  # fmt: skip
# What `up` had not yet written, or a scale's counts left by a version that wrote them
# before checking: neither records a provider, so no host was ever created.
NOT_UP = {"no state": None, "no provider": {"service_counts": {"zhibo_service": {}}}}


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """run(args, state) -> result: labctl in-process on a spec of its own, with the
    lab's state (None: no file) under tmp_path, and no way out of the process."""
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path)
    spec = tmp_path / "lab.yaml"
    spec.write_text(yaml.safe_dump(VALID))
    monkeypatch.setenv(SPEC_ENV, str(spec))
    monkeypatch.setenv("COLUMNS", "200")
    state_file = tmp_path / ".lab" / LAB / "state.json"

    def run(args: list[str], state: dict | None):
        if state is not None:
            state_file.parent.mkdir(parents=True, exist_ok=True)
            state_file.write_text(json.dumps(state))
        return invoke(app, ["--spec", str(spec), *args])

    run.state_file = state_file
    return run


@pytest.mark.parametrize("state", NOT_UP.values(), ids=NOT_UP.keys())
@pytest.mark.parametrize("args", VERBS, ids=[" ".join(v) for v in VERBS])
def test_a_verb_on_a_lab_that_is_not_up_says_so_without_traffic(lab, args, state):
    if state is not None:
        lab.state_file.parent.mkdir(parents=True)
        lab.state_file.write_text(json.dumps(state))
    before = lab.state_file.read_text() if state is not None else None
    result = lab(args, None)
    assert not isinstance(result.exception, Contact), f"reached outside: {result.exception}"
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    why = f"there is no {lab.state_file}" if state is None else (
        f"{lab.state_file} records no hosts")  # fmt: skip
    assert errors == [f"error: lab {LAB} is not up ({why}); run `labctl up` first."], result.output
    # Nothing recorded: a refused scale leaves no counts behind.
    assert (lab.state_file.read_text() if lab.state_file.exists() else None) == before


@pytest.mark.parametrize("as_json", [False, True])
def test_status_of_a_lab_that_is_not_up_is_that_sentence(lab, as_json):
    result = lab(["status", *(["--json"] if as_json else [])], None)
    assert not isinstance(result.exception, Contact), f"reached outside: {result.exception}"
    assert result.exit_code == 0, result.output
    assert f"lab {LAB} is not up (there is no {lab.state_file}); run `labctl up` first." in (
        result.output
    )
    if as_json:
        assert json.loads(result.stdout) == {"lab": LAB, "up": False, "hosts": []}


def test_a_lab_that_is_up_is_asked(lab):
    """The other side: with a provider recorded, verify goes to the hosts (and meets the
    guard), so the sentence above is about the state, not about every run."""
    result = lab(["verify"], {"provider": "docker"})
    assert isinstance(result.exception, Contact)


def test_a_state_file_that_is_not_json_is_named_not_taken_for_no_state(lab):
    lab.state_file.parent.mkdir(parents=True)
    lab.state_file.write_text("{not json")
    result = lab(["status"], None)
    assert result.exit_code == 2 and not isinstance(result.exception, Contact), result.output
    assert f"error: {lab.state_file} is not the state labctl wrote (not JSON:" in result.output
    assert "run `labctl down` to remove what the lab left by its spec." in result.output


def test_down_without_state_still_cleans_existing_machines(lab, monkeypatch, tmp_path):
    """An ssh lab is cleaned by its spec when its local state is gone."""
    data = dict(VALID, provider="ssh")
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(data))
    cleaned = []
    monkeypatch.setattr(
        down_on_machines,
        "remove_from_machines",
        lambda spec, *_: cleaned.append(spec.name) or ["x"],
    )
    monkeypatch.setattr(lifecycle.aptcache, "stop_after_the_last_lab", lambda: None)
    result = lab(["down"], None)
    assert result.exit_code == 0, result.output
    assert cleaned == [LAB]


def test_down_without_state_still_sweeps_the_labs_containers(lab, monkeypatch):
    swept = []
    monkeypatch.setattr(
        lifecycle, "_sweep_docker", lambda spec, *_, **__: swept.append(spec.name) or []
    )
    monkeypatch.setattr(lifecycle.aptcache, "stop_after_the_last_lab", lambda: None)
    result = lab(["down"], None)
    assert result.exit_code == 0, result.output
    assert swept == [LAB]
