"""The virtualbox road's host box wired into `up`, `down` and `labctl box`, with
python-vagrant faked (FakeVagrant: its box store, package and box add/remove calls) and
the rest of `up` stubbed. That make() itself packages and adds a box through Vagrant's
own commands: tests/unit/test_virtualbox_box.py."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import vagrant as python_vagrant

from labctl import box, lifecycle, paths, vagrant, virtualbox, virtualbox_box
from labctl.cli import app
from labctl.converge import ConvergeResult
from labctl.paths import host_container_name, read_state, write_state
from labctl.spec import load_spec
from roles.contract import HOST_ONLY, STAGE
from tests.support.bad_inputs import VALID, one_sentence
from tests.support.sandbox import Contact, invoke

IMAGES = {"consul": {"ref": "lab/consul:1", "id": "sha256:" + "1" * 64}}


class FakeVagrant:
    """python-vagrant's box calls against a box store of the test's; `fail` names a
    call that fails as Vagrant does (non-zero exit, a paragraph on stderr)."""

    def __init__(self) -> None:
        self.store: list[python_vagrant.Box] = []
        self.calls: list[tuple] = []
        self.fail: dict[str, str] = {}
        self.destroy_fails = False
        self.version = 0

    def client(self, spec, provider, quiet=True):
        assert provider == "virtualbox"
        return self

    def out_cm(self):  # replaced by labctl with its log, as python-vagrant allows
        raise AssertionError("labctl gives python-vagrant its log")

    err_cm = out_cm

    def _maybe_fail(self, call: str) -> None:
        if call in self.fail:
            with self.err_cm() as err:
                err.write(self.fail[call] + "\n")
            raise subprocess.CalledProcessError(1, ["vagrant", call])

    def box_list(self):
        self.calls.append(("box_list",))
        self._maybe_fail("box_list")
        return list(self.store)

    def package(self, vm_name=None, base=None, output=None, vagrantfile=None):
        self.calls.append(("package", vm_name))
        self._maybe_fail("package")
        Path(output).write_bytes(b"box")

    def box_add(self, name, url, provider=None, force=False):
        self.calls.append(("box_add", name))
        catalog = json.loads(Path(url).read_text())
        (version,) = catalog["versions"]
        assert catalog["name"] == name
        assert Path(version["providers"][0]["url"].removeprefix("file://")).is_file()
        self._maybe_fail("box_add")
        self.version += 1  # made one after the other: each newer than the last
        self.store.append(python_vagrant.Box(name, "virtualbox", f"20261207.{self.version:06d}"))

    def box_remove(self, name, provider):
        self.calls.append(("box_remove", name))
        self._maybe_fail("box_remove")
        self.store = [b for b in self.store if b.name != name]

    def destroy(self):
        self.calls.append(("destroy",))
        if self.destroy_fails:
            raise subprocess.CalledProcessError(1, ["vagrant", "destroy"])

    def made(self, call: str) -> list[str]:
        return [c[1] for c in self.calls if c[0] == call and len(c) > 1]


@pytest.fixture
def fake(monkeypatch) -> FakeVagrant:
    fake = FakeVagrant()
    monkeypatch.setattr(vagrant, "client", fake.client)
    return fake


@pytest.fixture
def spec(write_spec):
    data = copy.deepcopy(VALID) | {"provider": "virtualbox"}
    data["network"]["allow_any_subnet"] = True  # a subnet of the suite's, never a person's
    return load_spec(write_spec(data))[0]


class Up:
    """`lifecycle.up` on the virtualbox road with everything but the box stubbed: what
    it converged and how often it brought the VMs up."""

    def __init__(self, monkeypatch, spec) -> None:
        self.spec, self.images = spec, copy.deepcopy(IMAGES)
        self.converged: list[tuple] = []
        self.created = 0
        monkeypatch.setattr(lifecycle, "preflight", self.preflight)
        monkeypatch.setattr(lifecycle, "create_hosts", self.create_hosts)
        monkeypatch.setattr(lifecycle, "converge_lab", self.converge_lab)
        monkeypatch.setattr(lifecycle.security, "gossip_key", lambda *_, **__: None)
        monkeypatch.setattr(lifecycle.security, "leaving_services", lambda spec: [])
        monkeypatch.setattr(lifecycle.security, "ensure_acls", lambda *_, **__: None)
        monkeypatch.setattr(lifecycle, "hand_out_agent_tokens", lambda *_: None)
        monkeypatch.setattr(lifecycle.aptcache, "ensure", lambda *_: None)

    def preflight(self, spec, provider, report, bundle, offline):
        images = copy.deepcopy(self.images)
        return spec, {"provider": provider, "delivery": "control", "images": images}

    def create_hosts(self, spec, provider, report):
        self.created += 1
        vagrant.vagrant_dotfile_path(spec).mkdir(parents=True, exist_ok=True)

    def converge_lab(self, spec, report, extra_args=()):
        self.converged.append(tuple(extra_args))
        return ConvergeResult()

    def __call__(self, use_box: bool = True) -> list[str]:
        said: list[str] = []
        self.converged, self.created = [], 0
        lifecycle.up(self.spec, "virtualbox", said.append, use_box=use_box)
        return said


def down(spec, purge: bool = False) -> list[str]:
    return lifecycle.down(spec, lambda line: None, purge=purge)


@pytest.fixture
def no_docker(monkeypatch):
    monkeypatch.setattr(lifecycle, "_sweep_docker", lambda *_, **__: [])
    monkeypatch.setattr(lifecycle.aptcache, "stop_after_the_last_lab", lambda: None)


def lab_box_name(spec, key_digits: str) -> str:
    return f"labctl/{spec.name}-{virtualbox.checkout_id()}-{key_digits}"


def test_the_first_up_packages_the_first_vm_and_adds_it_under_the_labs_name(
    spec, fake, monkeypatch, no_docker
):
    up = Up(monkeypatch, spec)
    up()
    (name,) = fake.made("box_add")
    assert name.startswith(lab_box_name(spec, "")) and len(name) == len(lab_box_name(spec, "")) + 16
    assert fake.made("package") == [host_container_name(spec, spec.hosts[0].name)]
    # Converged up to the engine and images, boxed, brought back up, then converged whole.
    assert up.converged[0] == ("--data", f"{STAGE}={HOST_ONLY}") and len(up.converged) == 3
    assert up.created == 2
    state = read_state(spec)
    assert state["box"] is None and name in state["box_note"] and "kept" in state["box_note"]
    assert not (paths.lab_dir(spec) / "box").exists()  # the box file went once added


def test_the_next_up_makes_every_vm_from_the_box_and_packages_nothing(
    spec, fake, monkeypatch, no_docker
):
    up = Up(monkeypatch, spec)
    up()
    (name,) = fake.made("box_add")
    down(spec)
    assert [b.name for b in fake.store] == [name]  # `down` kept it
    fake.calls.clear()
    up()
    assert fake.made("package") == fake.made("box_add") == []
    assert read_state(spec)["box"] == name
    assert vagrant.vagrantfile_data(spec, "x86_64")["virtualbox"]["lab_box"] == name
    assert up.created == 1 and len(up.converged) == 2  # no HOST_ONLY stage
    # `box list` sees it in use; `box remove` refuses it while the VMs run from it.
    (listed,) = virtualbox_box.kept(spec)
    assert listed.in_use and listed.box.name == name


def test_a_changed_key_makes_a_new_box_and_never_uses_the_old(
    spec, fake, monkeypatch, no_docker
):
    up = Up(monkeypatch, spec)
    up()
    (old,) = fake.made("box_add")
    down(spec)
    up.images["consul"]["id"] = "sha256:" + "9" * 64  # another image version
    up()
    new = fake.made("box_add")[-1]
    assert new != old and len(fake.made("package")) == 2
    assert read_state(spec)["box"] is None  # made from the base box, not the old one
    down(spec)
    up()
    assert read_state(spec)["box"] == new


def test_no_box_neither_uses_nor_makes_one(spec, fake, monkeypatch, no_docker):
    up = Up(monkeypatch, spec)
    up()
    down(spec)
    fake.calls.clear()
    up(use_box=False)
    assert fake.calls == []  # Vagrant's boxes not even listed
    state = read_state(spec)
    assert state["box"] is None and "--no-box" in state["box_note"]
    assert up.converged[0] != ("--data", f"{STAGE}={HOST_ONLY}") and up.created == 1


def seed_store(spec, fake: FakeVagrant, count: int) -> list[str]:
    """`count` boxes of the lab, oldest first, and boxes that are not the lab's."""
    ours = [lab_box_name(spec, f"{i:016x}") for i in range(count)]
    for name in ours:
        fake.version += 1
        fake.store.append(python_vagrant.Box(name, "virtualbox", f"20261207.{fake.version:06d}"))
    others = [
        python_vagrant.Box(f"labctl/{spec.name}x-{virtualbox.checkout_id()}-{'a' * 16}",
                           "virtualbox", "1"),
        python_vagrant.Box(f"labctl/{spec.name}-00000000-{'b' * 16}", "virtualbox", "1"),
        python_vagrant.Box(lab_box_name(spec, "c" * 16), "libvirt", "1"),
        python_vagrant.Box("debian/bookworm64", "virtualbox", "12.20240905.1"),
    ]  # fmt: skip
    fake.store += others
    return ours


def made_by_vagrant(spec, box_name: str | None = None) -> None:
    write_state(spec, provider="virtualbox", box=box_name)
    vagrant.vagrant_dotfile_path(spec).mkdir(parents=True, exist_ok=True)


def test_down_keeps_the_newest_boxes_and_prunes_the_rest(spec, fake, no_docker):
    ours = seed_store(spec, fake, box.CACHE_BOUND + 2)
    made_by_vagrant(spec, ours[0])  # the VMs ran from the oldest: they are gone now
    removed = down(spec)
    assert ("destroy",) in fake.calls
    assert sorted(fake.made("box_remove")) == ours[:2]
    assert {f"vagrant box {n}" for n in ours[:2]} <= set(removed)
    assert [b.name for b in fake.store][: box.CACHE_BOUND] == ours[2:]
    assert len(fake.store) == box.CACHE_BOUND + 4  # nothing of another lab or checkout


def test_down_never_removes_the_box_of_vms_it_could_not_destroy(spec, fake, no_docker):
    ours = seed_store(spec, fake, box.CACHE_BOUND + 1)
    made_by_vagrant(spec, ours[0])
    fake.destroy_fails = True
    down(spec, purge=True)
    assert sorted(fake.made("box_remove")) == ours[1:]


def test_down_purge_removes_every_box_of_the_lab_and_nothing_else(spec, fake, no_docker):
    ours = seed_store(spec, fake, 3)
    made_by_vagrant(spec, ours[-1])
    removed = down(spec, purge=True)
    assert sorted(fake.made("box_remove")) == sorted(ours)
    assert all(f"vagrant box {n}" in removed for n in ours)
    assert len(fake.store) == 4
    # And on a lab that is down already.
    more = seed_store(spec, fake, 2)[:2]
    fake.calls.clear()
    down(spec, purge=True)
    assert sorted(fake.made("box_remove")) == sorted(more)


def test_box_list_and_remove_see_the_labs_vagrant_boxes(spec, fake, no_docker):
    ours = seed_store(spec, fake, 3)
    made_by_vagrant(spec, ours[1])
    args = ["--spec", str(spec.source)]
    listed = invoke(app, [*args, "box", "list", "--json"])
    assert not isinstance(listed.exception, Contact), listed.output
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [r["vagrant_box"] for r in rows] == ours[::-1]  # newest first, only the lab's
    assert [r["in_use"] for r in rows] == [False, True, False]
    table = invoke(app, [*args, "box", "list"])
    assert table.exit_code == 0 and all(n[-16:] in table.output for n in ours), table.output

    in_use = invoke(app, [*args, "box", "remove", ours[1][-16:]])
    assert in_use.exit_code == 2 and one_sentence(in_use.output), in_use.output
    unknown = invoke(app, [*args, "box", "remove", "ffff"])
    assert unknown.exit_code == 2 and one_sentence(unknown.output), unknown.output
    assert fake.made("box_remove") == []

    gone = invoke(app, [*args, "box", "remove", ours[0][-16:]])
    assert gone.exit_code == 0, gone.output
    assert fake.made("box_remove") == [ours[0]]
    every = invoke(app, [*args, "box", "remove", "--all"])
    assert every.exit_code == 2 and fake.made("box_remove") == [ours[0]], every.output
    write_state(spec, box=None)  # the VMs gone: nothing in use
    every = invoke(app, [*args, "box", "remove", "--all"])
    assert every.exit_code == 0, every.output
    assert sorted(fake.made("box_remove")) == sorted(ours)


@pytest.mark.parametrize(
    ("step", "said"),
    [
        ("package", "VBoxManage: error: Could not export the VM"),
        ("box_add", "Errno::ENOSPC: No space left on device @ io_write"),
    ],
)
def test_a_box_that_cannot_be_made_is_said_and_the_lab_comes_up_without(
    spec, fake, monkeypatch, no_docker, step, said
):
    fake.fail[step] = said
    if step == "box_add":  # half added when the disk filled up
        real_add = FakeVagrant.box_add

        def add_then_fail(self, name, url, provider=None, force=False):
            fake.fail.pop("box_add")
            real_add(self, name, url)
            fake.fail["box_add"] = said
            self._maybe_fail("box_add")

        monkeypatch.setattr(FakeVagrant, "box_add", add_then_fail)
    up = Up(monkeypatch, spec)
    up()
    note = read_state(spec)["box_note"]
    assert note.startswith("warning: no box kept (") and said in note, note
    assert note.endswith("the next `up` installs everything again") and "\n" not in note
    assert up.created == 2 and len(up.converged) == 3  # back up, converged whole
    assert fake.store == [] and not (paths.lab_dir(spec) / "box").exists()
    assert read_state(spec)["box"] is None


def test_the_key_is_the_docker_roads_with_the_base_box_for_the_template(spec, monkeypatch):
    state = {"delivery": "control", "images": copy.deepcopy(IMAGES)}
    key = virtualbox_box.box_key(spec, state)
    assert key == virtualbox_box.box_key(spec, copy.deepcopy(state))
    other_image = copy.deepcopy(state)
    other_image["images"]["consul"]["id"] = "sha256:" + "2" * 64
    base = virtualbox.box_for(spec)
    another = base.model_copy(update={"version": "12.99"})
    monkeypatch.setattr(virtualbox, "box_for", lambda spec, machine=None: another)
    assert len({key, virtualbox_box.box_key(spec, other_image),
                virtualbox_box.box_key(spec, state)}) == 3  # fmt: skip


def test_the_other_hosts_images_go_into_the_boxed_vm_first(spec, fake, monkeypatch, tmp_path):
    """The box serves every host: each other host's archive is streamed into the first
    VM's engine over OpenSSH before `vagrant package`; a load that fails keeps no box."""
    archives = {}
    for host in spec.hosts:
        archives[host.name] = str(tmp_path / f"{host.name}.tar")
        Path(archives[host.name]).write_bytes(host.name.encode())
    write_state(spec, provider="virtualbox", image_archives=archives)
    first = spec.hosts[0].name
    ssh = {first: {"ssh_hostname": "127.0.0.1", "ssh_port": 2222, "ssh_user": "vagrant"}}
    monkeypatch.setattr(virtualbox_box, "connection_data", lambda spec, provider: ssh)
    loaded: list[tuple[list[str], bytes]] = []
    status = {"code": 0}

    def run(argv, stdin, capture_output, timeout):
        loaded.append((argv, stdin.read()))
        return subprocess.CompletedProcess(argv, status["code"], b"", b"no space left\n")

    monkeypatch.setattr(virtualbox_box.subprocess, "run", run)
    new = virtualbox_box.VagrantBox(spec.name, "ab" * 32)
    virtualbox_box.make(spec, new, lambda line: None)
    assert sorted(data for _, data in loaded) == sorted(h.name.encode() for h in spec.hosts[1:])
    assert all(argv[0] == "ssh" and "127.0.0.1" in argv[-2] for argv, _ in loaded)
    assert all("docker load -q" in argv[-1] for argv, _ in loaded)
    assert fake.made("package") and fake.made("box_add") == [new.name]

    status["code"], fake.calls, fake.store = 1, [], []
    with pytest.raises(box.BoxError, match="no space left"):
        virtualbox_box.make(spec, new, lambda line: None)
    assert fake.made("package") == [] and fake.store == []


def test_old_boxes_that_cannot_be_pruned_after_a_new_one_are_said(
    spec, fake, monkeypatch, no_docker
):
    older = seed_store(spec, fake, box.CACHE_BOUND)
    fake.fail["box_remove"] = "The box you're attempting to remove is in use."
    Up(monkeypatch, spec)()
    note = read_state(spec)["box_note"]
    assert "kept" in note and "older boxes not removed (The box you're attempting" in note
    assert fake.made("box_remove") == [older[0]]  # the oldest, beyond the newest two
