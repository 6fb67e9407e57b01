"""Cached connection data (labctl.connections): Vagrant is asked once, then only when a
machine changed: a host failed or recovered, the lab went down and up again, or a
cached host does not answer. The Docker engine and Vagrant are fakes that answer as
Vagrant 2.3's docker provider reads a container (plugins/providers/docker/provider.rb:
`state` from `docker ps`, `ssh_info` from NetworkSettings.IPAddress, port 22)."""

from __future__ import annotations

import json

import pytest
from docker.errors import NotFound

from labctl import connections, lifecycle, paths, system, vagrant
from labctl.remote import RemoteError
from labctl.spec import parse_spec

SPEC = parse_spec(
    {
        "name": "labunit",
        "provider": "docker",
        "network": {"subnet": "192.168.86.0/24"},
        "hosts": [
            {"name": "node1", "address": "192.168.86.2", "consul": "server", "demo": 1},
            {"name": "node2", "address": "192.168.86.3", "consul": "server", "demo": 1},
        ],
    }
)[0]


class FakeEngine:
    """The outer Docker engine: containers by ID, with their state and bridge address."""

    def __init__(self):
        self.containers: dict[str, dict] = {}
        self.api = self

    def inspect_container(self, container_id: str) -> dict:
        if container_id not in self.containers:
            raise NotFound(f"No such container: {container_id}")
        c = self.containers[container_id]
        return {"State": {"Running": c["running"]}, "NetworkSettings": {"IPAddress": c["ip"]}}


class FakeLab:
    """Vagrant's record of the machines (id files) and what `vagrant status` and
    `vagrant ssh-config` say, read from the fake engine as Vagrant would; counts runs."""

    def __init__(self, tmp_path, monkeypatch):
        self.engine = FakeEngine()
        self.vagrant_runs: list[str] = []
        monkeypatch.setattr(paths, "lab_dir", lambda spec: tmp_path / spec.name)
        monkeypatch.setattr(system, "engine", lambda: self.engine)
        monkeypatch.setattr(vagrant, "machine_states", self.machine_states)
        monkeypatch.setattr(vagrant, "ssh_settings", self.ssh_settings)
        paths.write_state(SPEC, provider="docker")

    def create(self, host: str, container_id: str, ip: str) -> None:
        """`vagrant up` of one machine: a container, and Vagrant's id file for it."""
        self.engine.containers[container_id] = {"running": True, "ip": ip}
        machine = paths.vagrant_dotfile_path(SPEC) / "machines" / f"labunit-{host}" / "docker"
        machine.mkdir(parents=True, exist_ok=True)
        (machine / "id").write_text(container_id)

    def container(self, host: str) -> dict:
        return self.engine.containers[connections.machine_id(SPEC, "docker", host)]

    def machine_states(self, spec, provider):
        self.vagrant_runs.append("status")
        states = {}
        for host in spec.hosts:
            found = self.engine.containers.get(connections.machine_id(spec, provider, host.name))
            states[host.name] = (
                "not_created" if found is None else "running" if found["running"] else "stopped"
            )
        return states

    def ssh_settings(self, spec, provider, states):
        self.vagrant_runs.append("ssh-config")
        running = [host for host, state in states.items() if state == "running"]
        return {host: self.conf(host) for host in running}

    def conf(self, host: str) -> dict[str, str]:
        ip = self.container(host)["ip"]
        return {"HostName": ip, "Port": "22", "User": "vagrant", "IdentityFile": f"/k/{host}"}


@pytest.fixture
def fake_lab(tmp_path, monkeypatch) -> FakeLab:
    fake = FakeLab(tmp_path, monkeypatch)
    fake.create("node1", "c1", "172.17.0.2")
    fake.create("node2", "c2", "172.17.0.3")
    return fake


def addresses(found: dict[str, dict]) -> dict[str, str]:
    return {name: ssh["ssh_hostname"] for name, ssh in found.items()}


def test_vagrant_is_asked_once_then_the_cache_serves(fake_lab):
    first = connections.connections(SPEC, "docker")
    assert addresses(first) == {"node1": "172.17.0.2", "node2": "172.17.0.3"}
    assert fake_lab.vagrant_runs == ["status", "ssh-config"]
    assert connections.connections(SPEC, "docker") == first
    assert connections.connections(SPEC, "docker") == first
    assert fake_lab.vagrant_runs == ["status", "ssh-config"]  # no Vagrant run since


def test_a_failed_host_is_asked_of_vagrant_and_left_out(fake_lab):
    connections.connections(SPEC, "docker")
    fake_lab.container("node2")["running"] = False  # `labctl fail node2`: the container killed
    assert addresses(connections.connections(SPEC, "docker")) == {"node1": "172.17.0.2"}
    assert fake_lab.vagrant_runs == ["status", "ssh-config"] * 2
    states = {name: m["state"] for name, m in connections.machines(SPEC, "docker").items()}
    assert states == {"node1": "running", "node2": "stopped"}
    assert fake_lab.vagrant_runs == ["status", "ssh-config"] * 2  # stopped, and cached as such


def test_a_recovered_host_at_another_address_is_asked_of_vagrant(fake_lab):
    connections.connections(SPEC, "docker")
    fake_lab.container("node2")["running"] = False
    connections.connections(SPEC, "docker")
    # `labctl recover node2`: the container starts again, with another bridge address.
    fake_lab.container("node2").update(running=True, ip="172.17.0.9")
    assert addresses(connections.connections(SPEC, "docker"))["node2"] == "172.17.0.9"
    assert fake_lab.vagrant_runs == ["status", "ssh-config"] * 3


def test_down_and_up_again_gives_new_machines_and_vagrant_is_asked(fake_lab):
    connections.connections(SPEC, "docker")
    # `labctl down` then `labctl up`: other containers, other ids, maybe the same addresses.
    fake_lab.engine.containers.clear()
    fake_lab.create("node1", "c3", "172.17.0.2")
    fake_lab.create("node2", "c4", "172.17.0.3")
    connections.connections(SPEC, "docker")
    cached = paths.read_state(SPEC)["machines"]
    assert {name: m["id"] for name, m in cached.items()} == {"node1": "c3", "node2": "c4"}
    assert fake_lab.vagrant_runs == ["status", "ssh-config"] * 2


def test_up_records_what_vagrant_says_of_the_new_machines(fake_lab):
    """create_hosts refreshes after `vagrant up`, skipping `vagrant status`: every
    machine runs once it succeeded."""
    connections.refresh(SPEC, "docker", {"node1": "running", "node2": "running"})
    assert fake_lab.vagrant_runs == ["ssh-config"]
    assert addresses(connections.connections(SPEC, "docker")) == {
        "node1": "172.17.0.2", "node2": "172.17.0.3"
    }  # fmt: skip
    assert fake_lab.vagrant_runs == ["ssh-config"]


def test_a_cached_host_that_does_not_answer_is_asked_of_vagrant_first(fake_lab):
    """The provider shows no change, but the host does not answer where the cache says:
    Vagrant is asked, and its answer tried, before the host is called unreachable."""
    connections.connections(SPEC, "docker")
    cached = paths.read_state(SPEC)
    cached["machines"]["node2"]["ssh"]["ssh_hostname"] = "172.17.0.99"  # stale
    paths.write_state(SPEC, **cached)

    def hostname(ssh):
        if ssh["ssh_hostname"] == "172.17.0.99":
            raise RemoteError("172.17.0.99:22", "no answer within 10 s")
        return ssh["ssh_hostname"]

    answers = connections.run_on_hosts(SPEC, "docker", ["node1", "node2"], hostname)
    assert answers == {"node1": "172.17.0.2", "node2": "172.17.0.3"}
    assert fake_lab.vagrant_runs == ["status", "ssh-config"] * 2


def test_a_host_vagrant_cannot_reach_otherwise_is_unreachable_with_its_cause(fake_lab):
    def refuse(ssh):
        raise RemoteError(f"{ssh['ssh_hostname']}:22", "connection refused")

    answers = connections.run_on_hosts(SPEC, "docker", ["node2"], refuse)
    assert isinstance(answers["node2"], RemoteError)
    assert answers["node2"].cause == "connection refused"
    fake_lab.container("node2")["running"] = False
    assert connections.run_on_hosts(SPEC, "docker", ["node2"], refuse) == {"node2": None}


def test_unreachable_names_a_stopped_machine_and_a_deaf_one(fake_lab, monkeypatch):
    def run(ssh, command, timeout=30.0, sudo=False):
        raise RemoteError(f"{ssh['ssh_hostname']}:22", "no answer within 10 s")

    monkeypatch.setattr(lifecycle, "run", run)
    fake_lab.container("node1")["running"] = False
    assert lifecycle.unreachable(SPEC, ["node1", "node2"]) == {
        "node1": "its machine is not running",
        "node2": "172.17.0.3:22: no answer within 10 s",
    }


def test_without_an_engine_to_ask_every_use_asks_vagrant(fake_lab, monkeypatch):
    connections.connections(SPEC, "docker")
    monkeypatch.setattr(system, "engine", lambda: None)
    connections.connections(SPEC, "docker")
    assert fake_lab.vagrant_runs == ["status", "ssh-config"] * 2


# `VBoxManage showvminfo --machinereadable` as VirtualBox 7 prints it (the keys Vagrant's
# driver/version_5_0.rb reads: VMState, and Forwarding(n)="name,proto,hostip,hostport,
# guestip,guestport" for read_forwarded_ports).
SHOWVMINFO = """name="labunit-node1-abc"
UUID="5e3f-vm"
VMState="{state}"
nic1="nat"
Forwarding(0)="ssh,tcp,127.0.0.1,2201,,22"
nic2="hostonly"
"""


@pytest.mark.parametrize(
    ("state", "address"), [("running", "127.0.0.1:2201"), ("poweroff", "127.0.0.1:2201")]
)
def test_a_virtualbox_machine_is_read_from_vboxmanage(monkeypatch, state, address):
    calls = []

    def vboxmanage(command, capture_output, text):
        calls.append(command)
        return type("Done", (), {"returncode": 0, "stdout": SHOWVMINFO.format(state=state)})

    monkeypatch.setattr(connections.subprocess, "run", vboxmanage)
    seen = connections._virtualbox_machine("5e3f-vm")
    assert seen == {"id": "5e3f-vm", "state": state, "address": address}
    assert calls == [["VBoxManage", "showvminfo", "5e3f-vm", "--machinereadable"]]


def test_a_virtualbox_machine_vboxmanage_does_not_know_is_not_created(monkeypatch):
    failed = type("Done", (), {"returncode": 1, "stdout": ""})
    monkeypatch.setattr(connections.subprocess, "run", lambda *a, **k: failed)
    assert connections._virtualbox_machine("gone")["state"] == "not_created"
    assert connections._virtualbox_machine(None) == {
        "id": None, "state": "not_created", "address": None
    }  # fmt: skip


class FakeVagrant:
    """`vagrant up` of one stopped machine: its container starts, at another address."""

    def __init__(self, lab: FakeLab, new_ip: str):
        self.lab, self.new_ip = lab, new_ip

    def up(self, vm_name: str) -> None:
        self.lab.container(vm_name.removeprefix("labunit-")).update(running=True, ip=self.new_ip)


def test_fail_and_recover_of_a_host_refresh_the_cached_connections(fake_lab, monkeypatch):
    """`labctl fail node2` then `labctl recover node2`, through labctl.operate: after each,
    the cache holds what Vagrant says of the changed machine, not what it said before."""
    from labctl import operate

    class Container:
        def __init__(self, name: str):
            self.host = name.removeprefix("labunit-")

        def kill(self) -> None:
            fake_lab.container(self.host)["running"] = False

    engine = type("Engine", (), {"api": fake_lab.engine, "containers": type(
        "Containers", (), {"get": staticmethod(Container)})})()  # fmt: skip
    monkeypatch.setattr(system, "engine", lambda: engine)
    restarted = FakeVagrant(fake_lab, "172.17.0.9")
    monkeypatch.setattr(vagrant, "client", lambda spec, provider: restarted)
    assert addresses(connections.connections(SPEC, "docker"))["node2"] == "172.17.0.3"

    operate.fail_or_recover(SPEC, "node2", failing=True, report=lambda line: None)
    cached = paths.read_state(SPEC)["machines"]
    assert cached["node2"]["state"] == "stopped" and cached["node2"]["ssh"] is None
    assert addresses(connections.connections(SPEC, "docker")) == {"node1": "172.17.0.2"}

    operate.fail_or_recover(SPEC, "node2", failing=False, report=lambda line: None)
    assert paths.read_state(SPEC)["machines"]["node2"]["state"] == "running"
    assert addresses(connections.connections(SPEC, "docker"))["node2"] == "172.17.0.9"
    runs = len(fake_lab.vagrant_runs)
    connections.connections(SPEC, "docker")
    assert len(fake_lab.vagrant_runs) == runs  # served from the refreshed cache


def record_ssh_info(fake_lab, hosts: list[str]) -> None:
    """What the Vagrantfile's trigger leaves after `vagrant up`, for `hosts`."""
    folder = paths.vagrant_ssh_info_dir(SPEC)
    folder.mkdir(parents=True, exist_ok=True)
    for host in hosts:
        (folder / f"labunit-{host}.json").write_text(json.dumps(fake_lab.conf(host)))


def test_up_takes_the_ssh_data_its_vagrant_up_recorded_without_asking_vagrant_again(fake_lab):
    record_ssh_info(fake_lab, ["node1", "node2"])
    recorded = vagrant.recorded_ssh_settings(SPEC)
    connections.refresh(SPEC, "docker", {"node1": "running", "node2": "running"}, recorded)
    assert fake_lab.vagrant_runs == []
    assert connections.connections(SPEC, "docker") == {
        host: connections.ssh_data_from_vagrant(fake_lab.conf(host)) for host in ("node1", "node2")
    }
    assert fake_lab.vagrant_runs == []


@pytest.mark.parametrize("damage", ["missing", "not JSON", "no key"])
def test_a_host_the_vagrant_up_recorded_nothing_usable_of_means_asking_vagrant(fake_lab, damage):
    record_ssh_info(fake_lab, ["node1", "node2"])
    record = paths.vagrant_ssh_info_dir(SPEC) / "labunit-node2.json"
    if damage == "missing":
        record.unlink()
    elif damage == "not JSON":
        record.write_text('{"HostName": ')
    else:
        record.write_text(json.dumps(fake_lab.conf("node2") | {"IdentityFile": ""}))
    assert vagrant.recorded_ssh_settings(SPEC) is None


def test_records_of_an_earlier_vagrant_up_are_forgotten_before_the_next(fake_lab):
    record_ssh_info(fake_lab, ["node1", "node2"])
    vagrant.forget_recorded_ssh_settings(SPEC)
    assert vagrant.recorded_ssh_settings(SPEC) is None
    assert list(paths.vagrant_ssh_info_dir(SPEC).iterdir()) == []
