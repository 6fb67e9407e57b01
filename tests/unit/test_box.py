"""Host boxes (labctl/box.py): what names a box, when a lab has none, and `labctl box`'s
input handling. Making and using a box on real hosts: tests/e2e/test_98_box.py."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from labctl import box, lifecycle, paths, vagrant
from labctl.cli import app
from labctl.paths import write_state
from labctl.spec import load_spec
from tests.support.bad_inputs import UP_STATE, VALID, one_sentence
from tests.support.sandbox import Contact, invoke
from tests.unit.test_input_properties import FAST, odd_text, run_cli

STATE = {
    "delivery": "control",
    "images": {
        "consul": {"ref": "lab/consul:1", "id": "sha256:" + "1" * 64},
        "lb": {"ref": "lab/lb:abc", "id": "sha256:" + "2" * 64},
    },
}


class Engine:
    """The one thing box_key asks the engine: the base image's ID."""

    def __init__(self, base_id: str = "sha256:base") -> None:
        self.images = self
        self.base_id = base_id

    def get(self, ref: str):
        return type("Image", (), {"id": self.base_id})()


def spec_of(write_spec, data: dict = VALID):
    return load_spec(write_spec(copy.deepcopy(data)))[0]


def test_a_box_is_named_by_what_it_holds(write_spec):
    spec = spec_of(write_spec)
    key = box.box_key(spec, STATE, Engine())
    assert key == box.box_key(spec, copy.deepcopy(STATE), Engine())
    # Another image version (another ID), another base image, a registry mirror in the
    # engine's daemon.json: each another box. (A changed docker role or host template
    # too: their files are hashed.)
    other_image = copy.deepcopy(STATE)
    other_image["images"]["lb"]["id"] = "sha256:" + "3" * 64
    mirrored = copy.deepcopy(VALID) | {"images": {"registry_mirrors": ["https://m.example"]}}
    others = {
        box.box_key(spec, other_image, Engine()),
        box.box_key(spec, STATE, Engine("sha256:other-base")),
        box.box_key(spec_of(write_spec, mirrored), STATE, Engine()),
    }
    assert key not in others and len(others) == 3
    # The apt proxy is only how the packages came: the same box.
    assert box.box_key(spec, STATE | {"apt_proxy": "http://10.0.0.1:3142"}, Engine()) == key


def test_box_names_carry_the_lab_and_the_key():
    made = box.Box("mylab", "ab" * 32)
    assert made.image.endswith(f"/box-mylab:{'ab' * 8}")
    assert made.volume == f"mylab-box-{'ab' * 8}"
    assert made.labels == {box.BOX_OF: "mylab", box.BOX_KEY: "ab" * 32}


def test_which_labs_keep_no_box_and_why():
    assert box.no_box_reason("docker", {"delivery": "control"}) is None
    assert "exist already" in box.no_box_reason("ssh", {"delivery": "control"})
    assert box.no_box_reason("virtualbox", {"delivery": "control"}) is None  # a Vagrant box
    assert "themselves" in box.no_box_reason("virtualbox", {"delivery": "hosts"})
    assert "themselves" in box.no_box_reason("docker", {"delivery": "hosts"})


def test_no_box_asks_for_nothing(write_spec):
    """`up --no-box`: no key is computed, no engine asked; the note says so."""
    planned = box.plan(spec_of(write_spec), "docker", STATE, use=False)
    assert planned.box is None and not planned.to_make and planned.from_box is None
    assert "--no-box" in planned.note


def test_hosts_whose_engine_data_cannot_be_made_come_from_the_template(write_spec, monkeypatch):
    """A box found, but its hosts' engine data not made (the helper failed): the hosts
    are made from the template, and the note says why; made, the note says how long."""
    spec = spec_of(write_spec)
    found = box.BoxPlan(box.Box(spec.name, "ab" * 32), "hosts made from it", found=True)

    def fails(spec, made_from):
        raise box.BoxError("copying the box's engine data failed (disk full)")

    monkeypatch.setattr(box, "fill_volumes", fails)
    fallen_back = lifecycle._hosts_data_from(spec, found)
    assert fallen_back.from_box is None and not fallen_back.to_make
    assert fallen_back.note == (
        "warning: copying the box's engine data failed (disk full); the hosts are made "
        "from the template"
    )
    monkeypatch.setattr(box, "fill_volumes", lambda spec, made_from: 0.84)
    made = lifecycle._hosts_data_from(spec, found)
    assert made.from_box == found.from_box
    assert made.note == "hosts made from it (hosts' engine data made in 0.8 s)"


def test_prune_removes_the_keys_of_boxes_gone_and_only_the_labs(write_spec, monkeypatch):
    """A key whose box went another way (`docker rmi`, an older labctl's purge) goes
    with the next prune; a kept box's key, and another lab's, stay."""
    spec = spec_of(write_spec)
    kept_box, gone = box.Box(spec.name, "ab" * 32), box.Box(spec.name, "cd" * 32)
    other_lab = box.Box(f"{spec.name}-2", "ef" * 32)
    for made in (kept_box, gone, other_lab):
        box._new_login_key(made)
    found = box.KeptBox(kept_box, "2026-12-07", "", 0, None, in_use=False)
    monkeypatch.setattr(box.system, "engine", lambda: object())
    monkeypatch.setattr(box, "kept", lambda client, lab: [found])
    assert box.prune(spec.name, keep=1) == [f"box key {gone.login_key}"]
    assert kept_box.login_key.exists() and other_lab.login_key.exists()
    assert not gone.login_key.exists()


def test_hosts_volumes_half_made_are_removed(write_spec, monkeypatch):
    """The hosts' data made, but the engine refusing the second host's volume: the first
    one goes again (a host made from the template must not find the box's data), and
    the failure is a BoxError, which `up` says in one line."""
    spec = spec_of(write_spec)
    made = box.Box(spec.name, "ab" * 32)

    class Volume:
        def __init__(self, name: str) -> None:
            self.name, self.attrs, self.removed = name, {"Mountpoint": "/data"}, False

        def remove(self, force: bool = False) -> None:
            self.removed = True

    class Volumes:
        def __init__(self) -> None:
            self.created: list[Volume] = []

        def get(self, name: str) -> Volume:
            if name == made.volume:
                return Volume(name)
            raise box.NotFound(name)

        def create(self, name: str, **options) -> Volume:
            if self.created:
                raise box.DockerException("no space left on device")
            assert options["driver_opts"]["device"] == f"/data/{box.HOSTS}/{spec.hosts[0].name}"
            self.created.append(Volume(name))
            return self.created[-1]

    engine = type("Engine", (), {"volumes": Volumes()})()
    monkeypatch.setattr(box.system, "ensure_engine", lambda: engine)
    monkeypatch.setattr(box, "_run_helper", lambda *args: None)
    with pytest.raises(box.BoxError) as failed:
        box.fill_volumes(spec, made)
    assert str(failed.value) == "the hosts' volumes could not be made (no space left on device)"
    [first] = engine.volumes.created
    assert first.removed


def test_the_vagrantfile_makes_hosts_from_the_recorded_box(write_spec):
    spec = spec_of(write_spec)
    assert vagrant.vagrantfile_data(spec, "x86_64")["docker"]["box"] is None
    made = box.Box(spec.name, "0123456789abcdef" * 4)
    write_state(spec, provider="docker", box=made.image, box_login_key=str(made.login_key))
    docker = vagrant.vagrantfile_data(spec, "x86_64")["docker"]
    assert (docker["box"], docker["box_login_key"]) == (made.image, str(made.login_key))


def test_a_box_login_key_is_its_own_and_private(write_spec):
    """Each box its own Ed25519 key pair: the private half only its owner may read, the
    public half an authorized_keys line; removing the box removes the key."""
    spec = spec_of(write_spec)
    first, second = box.Box(spec.name, "ab" * 32), box.Box(spec.name, "cd" * 32)
    public = box._new_login_key(first)
    assert public.startswith(b"ssh-ed25519 ") and public.endswith(b"\n")
    assert public != box._new_login_key(second)
    assert first.login_key != second.login_key
    assert first.login_key.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert first.login_key.stat().st_mode & 0o777 == 0o600
    assert first.login_key.parent.stat().st_mode & 0o777 == 0o700

    class NoEngine:  # the box's image and volume are gone already
        def get(self, name):
            raise box.NotFound(name)

    engine = type("Engine", (), {"images": NoEngine(), "volumes": NoEngine()})()
    assert box._remove(engine, first) == [f"box key {first.login_key}"]
    assert not first.login_key.exists() and second.login_key.exists()


@FAST
@given(keys=st.lists(odd_text.filter(lambda k: "\x00" not in k and not k.startswith("-")),
                     min_size=1, max_size=3))  # fmt: skip
@example(keys=["abc"])
@example(keys=["ABCDEF01"])
@example(keys=["0123456789abcdef", "[/x]"])
def test_box_remove_refuses_what_is_no_key_in_one_sentence(keys):
    code, out, contact, written = run_cli(["box", "remove", *keys], state=UP_STATE)
    if all(box.KEY_RE.fullmatch(k) for k in keys):
        return  # a key: the engine is asked which boxes there are
    assert contact is None, out
    assert code == 2 and not written and one_sentence(out), out


def test_box_remove_wants_keys_or_all_not_both():
    for args in (["box", "remove"], ["box", "remove", "--all", "0123456789abcdef"]):
        code, out, contact, written = run_cli(args, state=UP_STATE)
        assert contact is None and code == 2 and not written and one_sentence(out), out


def test_box_on_the_ssh_road_says_there_is_none(tmp_path, monkeypatch):
    spec_file = tmp_path / "lab.yaml"
    spec_file.write_text(yaml.safe_dump(copy.deepcopy(VALID) | {"provider": "ssh"}))
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path)
    result = invoke(app, ["--spec", str(spec_file), "box", "list"])
    assert not isinstance(result.exception, Contact), result.output
    assert result.exit_code == 0, result.output
    assert "exist already: no box" in " ".join(result.output.split())
