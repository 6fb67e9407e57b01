"""The Vagrantfile, checked for both providers with Vagrant's own config loader.

Vagrant evaluates the Vagrantfile and resolves each machine's configuration for a
provider without asking whether it is usable. What VirtualBox would be sent at
`vagrant up` is checked in test_virtualbox_up.py, against a fake VBoxManage.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labctl import virtualbox
from labctl.spec import load_spec
from tests.conftest import PROJECT_ROOT

HARNESS = PROJECT_ROOT / "tests" / "support" / "vagrant_config.rb"


def vagrant_env(spec: Path, tmp_path: Path) -> dict[str, str]:
    return os.environ | {
        "LAB_SPEC": str(spec),
        "LAB_PYTHON": sys.executable,
        "VAGRANT_DOTFILE_PATH": str(tmp_path / "vagrant"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
    }


def machines(spec: Path, provider: str, tmp_path: Path) -> dict[str, dict]:
    result = subprocess.run(
        ["ruby", str(HARNESS), str(PROJECT_ROOT), provider],
        env=vagrant_env(spec, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return {m["name"]: m for m in json.loads(result.stdout)}


DEFAULT = PROJECT_ROOT / "lab.yaml"
FIVE = PROJECT_ROOT / "examples" / "five-hosts.yaml"


def test_virtualbox_machines_follow_the_spec(tmp_path):
    spec, _ = load_spec(DEFAULT)
    box = virtualbox.box_for(spec)  # this machine's architecture
    vms = machines(DEFAULT, "virtualbox", tmp_path)
    # Machine names carry the lab's name: Vagrant's machine index is keyed by name and folder.
    assert list(vms) == ["dynlb-server1", "dynlb-server2", "dynlb-server3"]
    for name, ip in zip(vms, ["192.168.56.2", "192.168.56.3", "192.168.56.4"], strict=True):
        vm = vms[name]
        host = name.removeprefix("dynlb-")
        assert (vm["box"], vm["box_version"]) == (box.box, box.version)
        assert vm["hostname"] == host
        # VirtualBox's host-only network takes a dotted mask (a String: VBoxManage's argv),
        # and has no name: the docker provider's network is not VirtualBox's.
        [network] = vm["private_networks"]
        assert (network["ip"], network["netmask"]) == (ip, "255.255.255.0")
        assert "name" not in network
        # VirtualBox VM names are global per user: this one carries the checkout's ID.
        assert vm["provider"]["name"] == virtualbox.vm_name(spec, host)
        modifyvm = [c[1][2:] for c in vm["provider"]["customizations"] if c[1][0] == "modifyvm"]
        assert ["--cpus", 1] in modifyvm and ["--memory", "1024"] in modifyvm
        assert vm["invalid_settings"] == []
        assert vm["synced_folders"]["/vagrant"]["disabled"] is True


def test_docker_machines_are_vm_like_containers(tmp_path):
    vms = machines(FIVE, "docker", tmp_path)
    assert len(vms) == 5
    web2 = vms["dynlb-five-web2"]
    settings = web2["provider"]
    assert settings["name"] == "dynlb-five-web2"
    assert settings["has_ssh"] == "true"
    assert Path(settings["build_dir"], "Dockerfile").is_file()
    assert "BASE_IMAGE=debian:bookworm" in settings["build_args"]
    assert any(arg.startswith("VAGRANT_PUBKEY=ssh-") for arg in settings["build_args"])
    args = settings["create_args"]
    assert "--privileged" not in args
    assert "--cgroupns=host" in args and "--cap-drop=SYS_RESOURCE" in args
    mount = args[args.index("--mount") + 1]
    assert "src=dynlb-five-web2-var-lib-docker,dst=/var/lib/docker" in mount
    assert "io.labctl.lab=dynlb-five" in args
    # The lab's network, which labctl makes: Vagrant only checks it (a prefix length).
    [network] = web2["private_networks"]
    assert (network["ip"], network["netmask"]) == ("192.168.57.22", 24)
    assert network["name"] == "vagrant_network_192.168.57.0/24"
    # SSH goes to the container's own address: no forwarded host port to race on.
    ssh = next(p for p in web2["forwarded_ports"] if p["id"] == "ssh")
    assert ssh["disabled"] is True
    assert web2["invalid_settings"] == []


PAIR = PROJECT_ROOT / "examples" / "lb-pair.yaml"


def test_the_lb_hosts_of_a_pair_answer_arp_for_their_interfaces_own_addresses_only(tmp_path):
    """Docker sets it on the LB host containers of a pair (their /proc/sys is read-only
    inside): the shared address every LB keeps on loopback stays unannounced."""
    spec, _ = load_spec(PAIR)
    lbs = {host.name for host in spec.lb_hosts}
    wanted = ["--sysctl=net.ipv4.conf.all.arp_ignore=1",
              "--sysctl=net.ipv4.conf.all.arp_announce=2"]  # fmt: skip
    for name, vm in machines(PAIR, "docker", tmp_path).items():
        sysctls = [a for a in vm["provider"]["create_args"] if a.startswith("--sysctl")]
        assert sysctls == (wanted if name.removeprefix(f"{spec.name}-") in lbs else []), name
    for vm in machines(FIVE, "docker", tmp_path / "five").values():
        assert not [a for a in vm["provider"]["create_args"] if a.startswith("--sysctl")]


def test_host_image_does_not_contain_docker():
    dockerfile = (PROJECT_ROOT / "templates" / "host" / "Dockerfile").read_text()
    installs = " ".join(line for line in dockerfile.splitlines() if not line.startswith("#"))
    assert "docker.io" not in installs and "docker-ce" not in installs
    assert 'CMD ["/sbin/init"]' in dockerfile
    assert "STOPSIGNAL SIGRTMIN+3" in dockerfile


@pytest.mark.parametrize("provider", ["virtualbox", "docker"])
def test_vagrant_validate_passes(tmp_path, provider):
    result = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=PROJECT_ROOT,
        env=vagrant_env(DEFAULT, tmp_path) | {"VAGRANT_DEFAULT_PROVIDER": provider},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_bad_spec_stops_vagrant_with_the_spec_sentence(write_spec, tmp_path):
    spec = write_spec({"hosts": [{"name": "a1", "address": "192.168.56.2", "demo": -1}]})
    result = subprocess.run(
        ["vagrant", "status"],
        cwd=PROJECT_ROOT,
        env=vagrant_env(spec, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "hosts[0].demo = -1 is below zero" in result.stderr
    assert "no host has consul: server" in result.stderr


def missing_python_sentence(env: dict[str, str]) -> str:
    """`vagrant status` with this environment; returns its one-line complaint."""
    vagrant = shutil.which("vagrant")  # absolute: PATH may be emptied below
    result = subprocess.run(
        [vagrant, "status"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one sentence, no Ruby backtrace
    assert "activate .venv" in lines[0] and "set LAB_PYTHON" in lines[0]
    return lines[0]


def test_a_missing_lab_python_is_one_sentence(tmp_path):
    env = vagrant_env(DEFAULT, tmp_path) | {"LAB_PYTHON": str(tmp_path / "no" / "python3")}
    sentence = missing_python_sentence(env)
    assert f"cannot run {tmp_path}/no/python3 (No such file or directory)" in sentence


def test_no_python3_on_path_is_one_sentence(tmp_path):
    """Windows without python3 on PATH, and any machine where it is missing."""
    env = vagrant_env(DEFAULT, tmp_path) | {"PATH": str(tmp_path)}
    del env["LAB_PYTHON"]
    assert "cannot run python3 (No such file or directory)" in missing_python_sentence(env)


def test_a_python_without_the_project_is_one_sentence(tmp_path):
    bare = tmp_path / "python3"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')  # no site-packages
    bare.chmod(0o755)
    sentence = missing_python_sentence(vagrant_env(DEFAULT, tmp_path) | {"LAB_PYTHON": str(bare)})
    assert re.search(r"lacks this project's packages \(No module named '\w+'\)", sentence)
