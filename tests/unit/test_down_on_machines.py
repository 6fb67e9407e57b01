"""`down` on existing machines (labctl.down_on_machines): the teardown deploy runs on every
machine that answers; one that does not is named in one sentence, and the others are cleaned.
pyinfra and SSH are faked: what is checked is what labctl asks of them."""

from __future__ import annotations

import pytest

from labctl import down_on_machines
from labctl.converge import ConvergeResult
from labctl.spec import parse_spec

SPEC = parse_spec(
    {
        "name": "labssh",
        "provider": "ssh",
        "hosts": [
            {"name": "m1", "address": "10.0.0.2", "consul": "server"},
            {"name": "m2", "address": "10.0.0.3", "consul": "server"},
            {"name": "m3", "address": "10.0.0.4", "consul": "server"},
        ],
    }
)[0]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    calls = {}

    def reach(connections, lab):
        assert lab == "labssh"
        down = calls.get("down", [])
        arches = {name: "amd64" for name in connections if name not in down}
        return arches, [f"{name} (10.0.0.x:22): connection refused" for name in down]

    def converge(spec, log, on_line, extra_args):
        calls["args"] = list(extra_args)
        return ConvergeResult(
            changed=[("Remove the lab | Remove the lab's containers", ["m1", "m2"])],
            operations=9,
        )

    monkeypatch.setattr(down_on_machines.machines, "reach", reach)
    monkeypatch.setattr(down_on_machines, "converge", converge)
    return calls


def test_every_machine_gets_the_teardown_deploy(fake, tmp_path):
    removed = down_on_machines.remove_from_machines(SPEC, tmp_path / "down.log", lambda line: None)
    assert fake["args"] == ["--data", "lab_teardown=true", "--data", "lab_purge_engine=False"]
    assert removed == ["the lab's containers on m1, m2"]


def test_purge_engine_is_passed_as_data(fake, tmp_path):
    down_on_machines.remove_from_machines(SPEC, tmp_path / "down.log", lambda line: None, True)
    assert fake["args"][-1] == "lab_purge_engine=True"


def test_an_unreachable_machine_is_excluded_named_and_the_others_cleaned(fake, tmp_path):
    fake["down"] = ["m3"]
    with pytest.raises(down_on_machines.PartialTeardown) as error:
        down_on_machines.remove_from_machines(SPEC, tmp_path / "down.log", lambda line: None)
    assert fake["args"][-2:] == ["--exclude", "m3"]
    assert str(error.value) == (
        "not cleaned: m3 (10.0.0.x:22): connection refused; m1, m2 were cleaned: run "
        "`labctl down` again once that is fixed."
    )


def test_no_machine_reachable_runs_no_deploy(fake, tmp_path):
    fake["down"] = ["m1", "m2", "m3"]
    with pytest.raises(
        down_on_machines.PartialTeardown,
        match=r"; no machine was cleaned: run `labctl down` again once those are fixed\.",
    ):
        down_on_machines.remove_from_machines(SPEC, tmp_path / "down.log", lambda line: None)
    assert "args" not in fake
