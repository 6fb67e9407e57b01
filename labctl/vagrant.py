"""Vagrant, driven through python-vagrant, for the virtualbox and docker providers.

The Vagrantfile holds no lab data of its own: it runs ``python -m labctl.vagrant``
(this module's ``main``) and builds machines from the JSON it prints, so the
lab spec stays the one source of truth and its validation runs first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import vagrant

from labctl import virtualbox
from labctl.paths import (
    docker_network_name,
    host_container_name,
    host_volume_name,
    read_state,
    vagrant_dotfile_path,
    vagrant_home,
    vagrant_ssh_info_dir,
)
from labctl.spec import PROJECT_ROOT, LabSpec, SpecError, load_spec
from roles.contract import ARP_OWN_INTERFACE_ONLY, LAB_LABEL

VAGRANT_PROVIDERS = ("virtualbox", "docker")

# Flags that let systemd, sshd and a nested Docker engine run in a container
# without --privileged (which this kind of sandbox refuses: no CAP_SYS_RESOURCE).
DOCKER_HOST_FLAGS = [
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run",
    "--tmpfs", "/run/lock",
]  # fmt: skip


def vagrantfile_data(spec: LabSpec, machine: str | None = None) -> dict:
    """Everything the Vagrantfile needs, derived from the spec (and, for the box, from
    the control machine's architecture: ``machine`` as platform.machine() names it)."""
    box = virtualbox.box_for(spec, machine)
    state = read_state(spec)
    # The lab's host box (labctl/box.py), when its hosts are made from one: an image on
    # the docker road, a Vagrant box on the virtualbox road.
    lab_box = {state.get("provider"): state.get("box")}
    return {
        "name": spec.name,
        # The docker provider names its network `vagrant_network_<subnet>/<netmask>`,
        # so it gets the prefix length.
        "netmask": spec.network.subnet.prefixlen,
        "virtualbox": {
            # None on a machine VirtualBox does not run on; `labctl up` says so first.
            "box": box.box if box else None,
            "box_version": box.version if box else None,
            # VirtualBox's host-only network wants a dotted mask, and Vagrant passes it
            # to VBoxManage as given: an Integer there stops `vagrant up` (ArgumentError).
            "netmask": str(spec.network.subnet.netmask),
            "cpus": spec.virtualbox.cpus,
            "memory": spec.virtualbox.memory,
            "lab_box": lab_box.get("virtualbox"),
        },
        "docker": {
            "build_dir": str(PROJECT_ROOT / "templates" / "host"),
            "base_image": spec.docker.base_image,
            "box": lab_box.get("docker"),
            "box_login_key": state.get("box_login_key"),
            # Made by labctl before `vagrant up` (lifecycle._lab_network).
            "network": docker_network_name(spec),
        },
        "hosts": [_vagrant_host(spec, host.name, str(host.address)) for host in spec.hosts],
    }


def _vagrant_host(spec: LabSpec, name: str, address: str) -> dict:
    """One host of the Vagrantfile: its names, address and the docker provider's flags."""
    return {
        "name": name,
        # Vagrant's machine name: prefixed with the lab, because Vagrant's global
        # machine index (and its locks) is keyed by name and folder, and labs share
        # this folder.
        "machine": host_container_name(spec, name),
        "vm_name": virtualbox.vm_name(spec, name),
        "address": address,
        "docker_create_args": [
            *DOCKER_HOST_FLAGS,
            # overlay2 cannot sit on the container's own overlay, so the nested engine
            # gets a volume; labelled so `down` finds it.
            "--mount",
            f"type=volume,src={host_volume_name(spec, name)},dst=/var/lib/docker,"
            f"volume-label={LAB_LABEL}={spec.name}",
            "--label",
            f"{LAB_LABEL}={spec.name}",
            *_lb_pair_sysctls(spec, name),
        ],
    }


def own_vagrant_home(spec: LabSpec, provider: str) -> bool:
    """Whether the lab's machines live in a Vagrant data directory of the lab's own
    (paths.vagrant_home): the docker provider's do, since its machines need no box
    (VirtualBox VMs need the user's boxes, so they stay in the user's Vagrant home).
    A docker lab Vagrant made before labs had their own (its machines recorded, no
    such directory) keeps the user's, so that its `down` removes its entries there."""
    if provider != "docker":
        return False
    return vagrant_home(spec).is_dir() or not (vagrant_dotfile_path(spec) / "machines").exists()


def _lb_pair_sysctls(spec: LabSpec, name: str) -> list[str]:
    """An LB host of a pair answers ARP only for its interfaces' own addresses (role lb
    sets this on a machine; a host container's /proc/sys is read-only inside, so Docker
    sets it when it makes the container: its own network namespace, nobody else's)."""
    if not (spec.lb_pair and name in {h.name for h in spec.lb_hosts}):
        return []
    return [f"--sysctl={key}={value}" for key, value in ARP_OWN_INTERFACE_ONLY.items()]


def vagrant_env(spec: LabSpec, provider: str) -> dict[str, str]:
    """Environment for every Vagrant call of this lab: its own state dir and spec, and
    for the docker provider its own Vagrant data directory: the machine index `down`
    would otherwise have to ask Vagrant to clean (seconds of Ruby) goes with the lab's
    directory, and nothing of the user's Vagrant state is touched."""
    own_home = {}
    if own_vagrant_home(spec, provider):
        vagrant_home(spec).mkdir(parents=True, exist_ok=True)
        own_home = {"VAGRANT_HOME": str(vagrant_home(spec))}
    return (
        os.environ
        | own_home
        | {
            "VAGRANT_DOTFILE_PATH": str(vagrant_dotfile_path(spec)),
            "VAGRANT_DEFAULT_PROVIDER": provider,
            "LAB_SPEC": str(spec.source),
            "LAB_SSH_INFO_DIR": str(vagrant_ssh_info_dir(spec)),
            "LAB_PYTHON": sys.executable,
            # Keep Vagrant from phoning home; the lab must work offline.
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
        }
    )


def client(spec: LabSpec, provider: str, quiet: bool = True) -> vagrant.Vagrant:
    return vagrant.Vagrant(
        root=str(PROJECT_ROOT),
        env=vagrant_env(spec, provider),
        quiet_stdout=quiet,
        quiet_stderr=quiet,
    )


def machine_name(spec: LabSpec, host: str) -> str:
    return host_container_name(spec, host)


def machine_states(spec: LabSpec, provider: str) -> dict[str, str]:
    """Vagrant's state of every host (by host name): running, stopped, not_created, ..."""
    if not vagrant_dotfile_path(spec).exists():
        return {host.name: "not_created" for host in spec.hosts}
    states = {s.name: s.state for s in client(spec, provider).status()}
    return {h.name: states.get(machine_name(spec, h.name), "?") for h in spec.hosts}


# What labctl reads of a host's `vagrant ssh-config` (connections.ssh_data_from_vagrant).
SSH_CONFIG_KEYS = ("HostName", "Port", "User", "IdentityFile")


def ssh_settings(
    spec: LabSpec, provider: str, states: dict[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """`vagrant ssh-config` of every running host, parsed by python-vagrant: one Vagrant
    run for all of them (each run costs seconds of Ruby and Vagrantfile start-up); the
    machines are named, since ssh-config of all fails when one is not running."""
    v = client(spec, provider)
    states = machine_states(spec, provider) if states is None else states
    running = [name for name, state in states.items() if state == "running"]
    if not running:
        return {}
    by_machine = {machine_name(spec, name): name for name in running}
    command = ["vagrant", "ssh-config", *by_machine]
    output = subprocess.run(
        command, cwd=v.root, env=v.env, capture_output=True, text=True, check=True
    ).stdout
    blocks = output.split("\nHost ")
    return {
        by_machine[machine]: v.conf(ssh_config=("" if i == 0 else "Host ") + block, vm_name=machine)
        for i, block in enumerate(blocks)
        if (machine := block.removeprefix("Host ").split(None, 1)[0]) in by_machine
    }


def recorded_ssh_settings(spec: LabSpec) -> dict[str, dict[str, str]] | None:
    """What the Vagrantfile's trigger recorded of every host in this `vagrant up` (as
    ssh_settings returns it), or None when a host's record is missing or unreadable:
    then Vagrant is asked (ssh_settings)."""
    settings = {}
    for host in spec.hosts:
        path = vagrant_ssh_info_dir(spec) / f"{machine_name(spec, host.name)}.json"
        try:
            conf = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(conf, dict) or not all(conf.get(k) for k in SSH_CONFIG_KEYS):
            return None
        settings[host.name] = conf
    return settings


def forget_recorded_ssh_settings(spec: LabSpec) -> None:
    """Before a `vagrant up`: what the trigger recorded before is no answer of this one."""
    for path in vagrant_ssh_info_dir(spec).glob("*.json"):
        path.unlink()


def main() -> int:
    """Print the Vagrantfile's data as JSON; one sentence per spec problem on failure."""
    try:
        spec, _ = load_spec()
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    json.dump(vagrantfile_data(spec), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
