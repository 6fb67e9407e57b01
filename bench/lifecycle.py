"""Wall time of the lab's lifecycle, and what image delivery costs; prints JSON and tables.

    .venv/bin/python bench/lifecycle.py [--cold]          docker provider, 3 hosts
    .venv/bin/python bench/lifecycle.py --road ssh        ssh road, 3 existing machines
    .venv/bin/python bench/lifecycle.py --delivery [--hosts 3 6]

Consul and consul-template are the test stand-ins (as in the e2e suite); their build is
timed apart from `up`. --cold first removes every image of the local engine (base,
host, stand-ins, demo, LB) and the cached archives, so `up` rebuilds them all,
debootstrap included. The docker provider's lab is labbench on 192.168.62.0/24.

The ssh road runs on machines made like the e2e suite's (tests/support/machines.py),
192.168.73.0/24: `up`, a no-op `apply`, `down`. --delivery compares, on N machines
(192.168.71.0/24 for 3, .72 for 6) whose Docker engine is installed beforehand (so
that `up` times image delivery and the converge, not apt), three shapes:

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

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from labctl.images import lab_images  # noqa: E402
from labctl.spec import parse_spec  # noqa: E402
from tests.e2e.conftest import standin_images  # noqa: E402  (the e2e suite's stand-ins)
from tests.support.machines import MachinePool  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

SPEC = {
    "name": "labbench",
    "provider": "docker",
    "network": {"subnet": "192.168.62.0/24"},
    "hosts": [
        {"name": "node1", "address": "192.168.62.2", "consul": "server", "bootstrap": True,
         "demo": 1},
        {"name": "node2", "address": "192.168.62.3", "consul": "server", "demo": 1},
        {"name": "node3", "address": "192.168.62.4", "consul": "client", "lb": True, "demo": 1},
    ],
}  # fmt: skip
SSH_ROAD_PREFIX = "192.168.73"
DELIVERY_PREFIXES = {3: "192.168.71", 6: "192.168.72"}


def labctl(spec: Path, *args: str) -> tuple[float, str]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "labctl", "--spec", str(spec), *args],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"labctl {' '.join(args)} failed:\n{result.stderr}")
    return elapsed, result.stderr


def changes(output: str) -> int:
    match = re.search(r"(\d+) changed", output)
    return int(match.group(1)) if match else 0


def remove_cached_images() -> None:
    """Every image (children before parents) and the build cache: a cold engine."""
    client = docker.from_env()
    for _ in range(5):  # a parent refuses to go before its children: repeat
        for image in client.images.list(all=True):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id, force=True)
    client.api.prune_builds()


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


def ssh_road(tmp: Path, images: dict) -> dict:
    with machines("labbench-ssh", SSH_ROAD_PREFIX, 3, tmp) as pool:
        spec = tmp / "ssh.yaml"
        spec.write_text(yaml.safe_dump(ssh_spec_data(pool, images, tmp / "known_hosts")))
        figures = {}
        figures["ssh_up"], out = labctl(spec, "up")
        figures["ssh_up_changes"] = changes(out)
        figures["ssh_apply_noop"], out = labctl(spec, "apply")
        figures["ssh_apply_changes"] = changes(out)
        figures["ssh_down"], _ = labctl(spec, "down")
        return figures


def delivery(tmp: Path, images: dict, counts: list[int]) -> list[dict]:
    recipe_refs = [i.ref for i in lab_images(parse_spec({**SPEC, "images": images})[0]) if i.recipe]
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
                        seconds, _ = labctl(spec, "up")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="remove cached images first")
    parser.add_argument("--road", choices=("docker", "ssh"), default="docker")
    parser.add_argument("--delivery", action="store_true", help="compare image delivery shapes")
    parser.add_argument("--hosts", type=int, nargs="+", default=[3, 6], choices=(3, 6))
    args = parser.parse_args()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        docker_spec = tmp / "lab.yaml"
        docker_spec.write_text(yaml.safe_dump(SPEC))
        labctl(docker_spec, "down")  # a lab left by an interrupted run holds images
        if args.cold:
            remove_cached_images()
        started = time.monotonic()
        images = standin_images()
        build = time.monotonic() - started
        if args.delivery:
            rows = delivery(tmp, images, args.hosts)
            print(json.dumps(rows))
            table = Table(title="image delivery on the ssh road (stand-in images)")
            for column in rows[0]:
                table.add_column(column, justify="right")
            for row in rows:
                table.add_row(*(str(v) for v in row.values()))
            console.print(table)
            return
        if args.road == "ssh":
            figures = {"standin_build": build, **ssh_road(tmp, images)}
        else:
            figures = {"standin_build": build, **docker_road(docker_spec, images, args.cold)}
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}))
    table = Table(title=f"lab lifecycle ({args.road} road, 3 hosts)")
    table.add_column("step")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.1f} s" if isinstance(value, float) else str(value))
    console.print(table)


def docker_road(spec: Path, images: dict, cold: bool) -> dict:
    spec.write_text(yaml.safe_dump(SPEC | {"images": images}))
    figures = {}
    try:
        figures["up_cold" if cold else "up_cached"], out = labctl(spec, "up")
        figures["up_changes"] = changes(out)
        figures["apply_noop"], out = labctl(spec, "apply")
        figures["apply_changes"] = changes(out)
    finally:
        figures["down"], _ = labctl(spec, "down")
    return figures


if __name__ == "__main__":
    main()
