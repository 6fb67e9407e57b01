"""How labctl reaches the hosts Vagrant made: what Vagrant said, cached in the lab's state.

Every Vagrant run costs seconds before it answers (Ruby loads the Vagrantfile, which
starts Python to read the spec), and nearly every verb needs the hosts' SSH settings.
So labctl keeps what `vagrant ssh-config` said in `.lab/<name>/state.json` (`machines`),
with each machine's id, state and address, and checks them on every use against the
provider itself, which answers in milliseconds, reading what Vagrant's own provider
reads (Vagrant 2.3's plugins/providers/*/provider.rb, `state` and `ssh_info`):

  docker      the container Vagrant recorded (machines/<m>/docker/id), from the Docker
              API: running, created (Vagrant's `stopped`) or gone (`not_created`), and
              its address, NetworkSettings.IPAddress;
  virtualbox  the VM Vagrant recorded (machines/<m>/virtualbox/id), from `VBoxManage
              showvminfo --machinereadable`: VMState, and the `ssh` port forward on
              127.0.0.1.

Vagrant is asked again, and stays the source of truth, whenever a machine changed:
labctl changed it (`up`, `fail` and `recover` forget the cache, `down` removes it), the
provider shows another id, state or address, or a cached host does not answer
(`run_on_hosts`). Where the provider cannot be asked (no engine, no VBoxManage), every
use asks Vagrant, as before the cache.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from labctl import system, vagrant
from labctl.paths import read_state, vagrant_dotfile_path, write_state
from labctl.remote import RemoteError, SshData
from labctl.spec import LabSpec
from labctl.spec_types import Host

T = TypeVar("T")
# One observed machine: Vagrant's id of it, its state in Vagrant's words, and where
# its SSH answers ("172.17.0.3" for a container, "127.0.0.1:2222" for a VM).
Observed = dict[str, str | None]
FORWARDING_RE = re.compile(r'^Forwarding\(\d+\)="ssh,tcp,([^,]*),(\d+),[^,]*,\d+"$', re.M)
VMSTATE_RE = re.compile(r'^VMState="([^"]+)"$', re.M)
MAX_PARALLEL = 16


def ssh_data_for_spec(spec: LabSpec, host: Host) -> SshData:
    """Connection data for the ssh provider: existing machines, no Vagrant."""
    data: SshData = {
        "ssh_hostname": host.ssh_host or str(host.address),
        "ssh_user": host.ssh_user or spec.ssh.user,
        "ssh_port": host.ssh_port or spec.ssh.port,
    }
    key = host.ssh_key or spec.ssh.key
    if key:
        data["ssh_key"] = str(spec.spec_relative(key))
        data["ssh_allow_agent"] = data["ssh_look_for_keys"] = False
    # A first contact is recorded, a changed key refused (labctl.remote does the same).
    data["ssh_strict_host_key_checking"] = "accept-new"
    data["ssh_known_hosts_file"] = str(spec.spec_relative(spec.ssh.known_hosts))
    if data["ssh_user"] != "root":
        data["_sudo"] = True
    return data


def ssh_data_from_vagrant(conf: dict[str, str]) -> SshData:
    """Connection data from one host's `vagrant ssh-config`."""
    return {
        "ssh_hostname": conf["HostName"],
        "ssh_port": int(conf["Port"]),
        "ssh_user": conf["User"],
        "ssh_key": conf["IdentityFile"],
        "ssh_strict_host_key_checking": "no",
        "ssh_known_hosts_file": "/dev/null",
        "_sudo": conf["User"] != "root",
    }


def machine_id(spec: LabSpec, provider: str, host: str) -> str | None:
    """The id Vagrant recorded for the host's machine (None: never created)."""
    path = vagrant_dotfile_path(spec) / "machines" / vagrant.machine_name(spec, host)
    try:
        return (path / provider / "id").read_text().strip() or None
    except OSError:
        return None


def _docker_machine(client, machine: str | None) -> Observed:
    from docker.errors import NotFound

    if machine is None:
        return {"id": None, "state": "not_created", "address": None}
    try:
        attrs = client.api.inspect_container(machine)
    except NotFound:
        return {"id": machine, "state": "not_created", "address": None}
    running = attrs["State"]["Running"]
    address = attrs["NetworkSettings"].get("IPAddress") or None
    return {"id": machine, "state": "running" if running else "stopped", "address": address}


def _virtualbox_machine(machine: str | None) -> Observed:
    if machine is None:
        return {"id": None, "state": "not_created", "address": None}
    result = subprocess.run(
        ["VBoxManage", "showvminfo", machine, "--machinereadable"],
        capture_output=True, text=True,
    )  # fmt: skip
    state = VMSTATE_RE.search(result.stdout) if result.returncode == 0 else None
    if state is None:
        return {"id": machine, "state": "not_created", "address": None}
    forward = FORWARDING_RE.search(result.stdout)
    address = f"{forward[1] or '127.0.0.1'}:{forward[2]}" if forward else None
    return {"id": machine, "state": state[1], "address": address}


def observe(spec: LabSpec, provider: str) -> dict[str, Observed] | None:
    """Every host's machine as the provider shows it now; None where it cannot be asked."""
    ids = {h.name: machine_id(spec, provider, h.name) for h in spec.hosts}
    if provider == "docker":
        client = system.engine()
        if client is None:
            return None
        return {name: _docker_machine(client, machine) for name, machine in ids.items()}
    if provider == "virtualbox" and shutil.which("VBoxManage"):
        return {name: _virtualbox_machine(machine) for name, machine in ids.items()}
    return None


def refresh(
    spec: LabSpec,
    provider: str,
    states: dict[str, str] | None = None,
    settings: dict[str, dict[str, str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Ask Vagrant (`states`: what the caller knows Vagrant would say, e.g. every host
    running right after `vagrant up`; `settings`: its SSH data, as the `vagrant up` just
    run recorded it), record its answer with what the provider shows, and return it:
    host -> {"id", "state", "address", "ssh"}."""
    states = vagrant.machine_states(spec, provider) if states is None else states
    if settings is None:
        settings = vagrant.ssh_settings(spec, provider, states)
    seen = observe(spec, provider) or {}
    machines = {}
    for host in spec.hosts:
        observed = seen.get(host.name, {"id": None, "address": None})
        conf = settings.get(host.name)
        machines[host.name] = {
            "id": observed["id"],
            "state": states.get(host.name, "?"),
            "address": observed["address"],
            "ssh": ssh_data_from_vagrant(conf) if conf else None,
        }
    write_state(spec, machines=machines)
    return machines


def forget(spec: LabSpec) -> None:
    """The next use asks Vagrant: labctl is about to change a machine."""
    if read_state(spec).get("machines") is not None:
        write_state(spec, machines=None)


def _current(cached: dict[str, dict] | None, seen: dict[str, Observed] | None) -> bool:
    if not cached or seen is None or set(cached) != set(seen):
        return False
    return all(
        cached[name]["id"] == now["id"]
        and cached[name]["state"] == now["state"]
        and (now["state"] != "running" or cached[name]["address"] == now["address"])
        for name, now in seen.items()
    )


def machines(spec: LabSpec, provider: str) -> dict[str, dict[str, Any]]:
    """Every host's machine: the cache while the provider shows it unchanged, else
    what Vagrant says now."""
    cached = read_state(spec).get("machines")
    if _current(cached, observe(spec, provider)):
        return cached
    return refresh(spec, provider)


def connections(spec: LabSpec, provider: str) -> dict[str, SshData]:
    """How to reach each running host (the others are left out)."""
    return {name: m["ssh"] for name, m in machines(spec, provider).items() if m["ssh"]}


def connection_data(spec: LabSpec, provider: str | None = None) -> dict[str, SshData]:
    """How to reach each running host for the provider the lab was brought up with:
    the spec's machines (ssh), else what Vagrant said, cached (`connections`)."""
    provider = provider or read_state(spec).get("provider") or spec.provider
    if provider == "ssh":
        return {host.name: ssh_data_for_spec(spec, host) for host in spec.hosts}
    return connections(spec, provider)


def _each(
    connected: dict[str, SshData], hosts: list[str], action: Callable[[SshData], T]
) -> dict[str, T | RemoteError | None]:
    def attempt(name: str) -> T | RemoteError | None:
        if name not in connected:
            return None
        try:
            return action(connected[name])
        except RemoteError as exc:
            return exc

    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts))) as pool:
        return dict(zip(hosts, pool.map(attempt, hosts), strict=True))


def run_on_hosts(
    spec: LabSpec,
    provider: str,
    hosts: list[str],
    action: Callable[[SshData], T],
    connected: dict[str, SshData] | None = None,
) -> dict[str, T | RemoteError | None]:
    """`action(ssh)` on every one of `hosts` at once: its result, None where the machine
    is not running, or the RemoteError of a host that does not answer — only once
    Vagrant, asked again, gave no other way to reach it (a cached address may be stale)."""
    connected = connection_data(spec, provider) if connected is None else connected
    results = _each(connected, hosts, action)
    failed = [name for name, result in results.items() if isinstance(result, RemoteError)]
    if failed and provider in vagrant.VAGRANT_PROVIDERS:
        fresh = {n: m["ssh"] for n, m in refresh(spec, provider).items() if m["ssh"]}
        # Not running after all (None), or reached another way: tried again.
        changed = [n for n in failed if fresh.get(n) != connected.get(n)]
        results |= _each(fresh, changed, action)
    return results
