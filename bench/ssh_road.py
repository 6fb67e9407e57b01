"""The ssh road's machines and specs for bench/lifecycle.py, and what image delivery costs.

    .venv/bin/python bench/lifecycle.py --roads ssh       ssh road lifecycle
    .venv/bin/python bench/lifecycle.py --delivery [--hosts 3 6]

The ssh road runs on machines made like the e2e suite's (testbed/machines.py),
192.168.83.0/24 (lifecycle.py times its verbs). --delivery
compares, on N machines (192.168.84.0/24 for 3, .85 for 6) whose Docker engine is
installed beforehand (so that `up` times image delivery and the converge, not apt),
three shapes:

  control         images.delivery control: the control machine's engine holds every
                  image and uploads one archive per host over SSH;
  registry        the hosts pull every image from a registry (docker-registry on the
                  control machine, standing in for a datacenter mirror holding them);
  registry+build  the registry holds what Docker Hub would (Consul, the Debian base):
                  the hosts pull those and build the lab's recipes themselves.

For each: wall time of `up`, and the bytes the control machine sent to the machines
over SSH and from the registry, counted by iptables rules on its OUTPUT chain.
Everything is torn down at the end.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from rich.table import Table
from verbs import labctl, spec_data

from labctl.images.spec_images import lab_images
from labctl.spec import parse_spec
from testbed.machines import MachinePool
from testbed.registry import Registry

SSH_ROAD_PREFIX = "192.168.83"
DELIVERY_PREFIXES = {3: "192.168.84", 6: "192.168.85"}


def ssh_spec_data(pool: MachinePool, images: dict, known_hosts: Path) -> dict:
    """N machines as `admin` with sudo: servers on the first three, the LB on the last."""
    hosts = []
    for n, machine in enumerate(pool.machines):
        hosts.append(
            {"name": machine.name, "address": machine.address,
             "consul": "server" if n < 3 else "client", "bootstrap": n == 0, "demo": 1,
             "lb": n == len(pool.machines) - 1}
        )  # fmt: skip
    return {
        "name": "labbench-ssh",
        "provider": "ssh",
        "network": {"subnet": f"{pool.prefix}.0/24"},
        "images": images,
        "ssh": {"user": "admin", "key": str(pool.admin_key), "known_hosts": str(known_hosts)},
        "hosts": hosts,
    }


@contextlib.contextmanager
def machines(name: str, prefix: str, count: int, tmp: Path) -> Iterator[MachinePool]:
    pool = MachinePool(name, prefix, count, tmp)
    pool.create()
    try:
        yield pool
    finally:
        pool.remove()


def install_engines(pool: MachinePool) -> None:
    """What the docker role installs, done beforehand on every machine at once."""
    command = (
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io"
    )
    with ThreadPoolExecutor(len(pool.machines)) as workers:
        list(workers.map(lambda m: pool.exec(m, command), pool.machines))


class ByteCounter:
    """Bytes this machine sends to a subnet over SSH and from a port, per iptables rule."""

    def __init__(self, subnet: str, registry_port: int):
        self.rules = {
            "ssh_bytes": ["-d", subnet, "-p", "tcp", "--dport", "22"],
            "registry_bytes": ["-d", subnet, "-p", "tcp", "--sport", str(registry_port)],
        }

    def __enter__(self) -> ByteCounter:
        for name, rule in self.rules.items():
            self._iptables("-I", "OUTPUT", *rule, "-m", "comment", "--comment", f"labbench-{name}")
        return self

    def __exit__(self, *exc) -> None:
        for name, rule in self.rules.items():
            self._iptables("-D", "OUTPUT", *rule, "-m", "comment", "--comment", f"labbench-{name}")

    @staticmethod
    def _iptables(*args: str) -> str:
        command = ["iptables", "-w", *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def read(self) -> dict[str, int]:
        listing = self._iptables("-L", "OUTPUT", "-n", "-v", "-x")
        counts = {}
        for name in self.rules:
            line = next(x for x in listing.splitlines() if f"labbench-{name}" in x)
            counts[name] = int(line.split()[1])
        return counts


def delivery(tmp: Path, images: dict, counts: list[int]) -> list[dict]:
    recipe_refs = [i.ref for i in lab_images(parse_spec(spec_data(3, images))[0]) if i.recipe]
    rows = []
    for count in counts:
        prefix = DELIVERY_PREFIXES[count]
        # A registry of its own per count: it starts with what Docker Hub would serve.
        registry = Registry(tmp / f"registry-{count}").start()
        try:
            registry.push(images["consul"])
            registry.push("debian:bookworm", "library/debian:bookworm")
            with machines(f"labbench-d{count}", prefix, count, tmp / f"m{count}") as pool:
                install_engines(pool)
                mirror = {"registry_mirrors": [registry.mirror(pool.gateway)]}
                shapes = {
                    "control": images | {"delivery": "control"},
                    "registry+build": images | mirror,
                    "registry": images | mirror,
                }
                for shape, settings in shapes.items():
                    if shape == "registry":  # now the registry holds the recipes' images too
                        for ref in recipe_refs:
                            registry.push(ref)
                    spec = tmp / f"{shape}-{count}.yaml"
                    data = ssh_spec_data(pool, settings, tmp / f"kh-{count}")
                    spec.write_text(yaml.safe_dump(data))
                    with ByteCounter(f"{prefix}.0/24", registry.port) as counter:
                        seconds = labctl(spec, "up").seconds
                        sent = counter.read()
                    labctl(spec, "down")
                    row = {"hosts": count, "shape": shape, "up_s": round(seconds, 1)}
                    row["ssh_MB"] = round(sent["ssh_bytes"] / 1e6, 1)
                    row["registry_MB"] = round(sent["registry_bytes"] / 1e6, 1)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
        finally:
            registry.stop()
    return rows


def delivery_table(rows: list[dict]) -> Table:
    table = Table(title="image delivery on the ssh road (stand-in images)")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table
