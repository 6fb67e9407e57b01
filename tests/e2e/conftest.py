"""End-to-end fixtures: a real lab on the docker provider, with a name and subnet
of its own so leftovers of an earlier run cannot collide, removed even on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labctl.inventory import connection_data
from labctl.spec import load_spec
from tests.conftest import PROJECT_ROOT

E2E_LAB = "labtest"
E2E_SUBNET = "192.168.63"  # inside VirtualBox's 192.168.56.0/21, unlike the default lab's .56


def e2e_spec_data() -> dict:
    return {
        "name": E2E_LAB,
        "provider": "docker",
        "network": {"subnet": f"{E2E_SUBNET}.0/24"},
        "hosts": [
            {"name": "node1", "address": f"{E2E_SUBNET}.2", "consul": "server",
             "bootstrap": True, "demo": 1},
            {"name": "node2", "address": f"{E2E_SUBNET}.3", "consul": "server", "demo": 1},
            {"name": "node3", "address": f"{E2E_SUBNET}.4", "consul": "client", "lb": True,
             "demo": 1},
        ],
    }  # fmt: skip


def labctl(spec: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    """Run the real CLI, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "labctl", "--spec", str(spec), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"COLUMNS": "200"},
    )


@pytest.fixture(scope="session")
def e2e_spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("e2e") / "lab.yaml"
    path.write_text(yaml.safe_dump(e2e_spec_data(), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def lab(e2e_spec):
    """The lab, up. Torn down at the end of the session whatever happened."""
    labctl(e2e_spec, "down")  # leftovers of an interrupted earlier run
    result = labctl(e2e_spec, "up")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        spec, _ = load_spec(e2e_spec)
        yield spec, connection_data(spec), result
    finally:
        labctl(e2e_spec, "down")
