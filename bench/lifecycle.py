"""Wall time of the lab's lifecycle on the docker provider; prints JSON and a table.

    .venv/bin/python bench/lifecycle.py [--cold]

Consul and consul-template are the test stand-ins (as in the e2e suite); their
build is timed apart from `up`. --cold first removes every image of the local
engine (base, host, stand-ins, demo, LB) and the cached archives, so `up` rebuilds
them all, debootstrap included. Uses a lab of its own (labbench, 192.168.62.0/24)
and tears it down at the end.
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
from pathlib import Path

import docker
import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.e2e.conftest import standin_images  # noqa: E402  (the e2e suite's stand-ins)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="remove cached images first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "lab.yaml"
        spec.write_text(yaml.safe_dump(SPEC))
        labctl(spec, "down")
        if args.cold:
            remove_cached_images()
        figures = {}
        started = time.monotonic()
        images = standin_images()
        figures["standin_build"] = time.monotonic() - started
        spec.write_text(yaml.safe_dump(SPEC | {"images": images}))
        try:
            figures["up_cold" if args.cold else "up_cached"], out = labctl(spec, "up")
            figures["up_changes"] = changes(out)
            figures["apply_noop"], out = labctl(spec, "apply")
            figures["apply_changes"] = changes(out)
        finally:
            figures["down"], _ = labctl(spec, "down")
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}))
    table = Table(title="lab lifecycle (docker provider, 3 hosts)")
    table.add_column("step")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.1f} s" if isinstance(value, float) else str(value))
    Console(stderr=True).print(table)


if __name__ == "__main__":
    main()
