"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def seed_hosts() -> list[dict]:
    """The seed's three hosts, as the default lab.yaml has them."""
    return yaml.safe_load((PROJECT_ROOT / "lab.yaml").read_text())["hosts"]


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec dict to a file and return its path."""

    def write(data: dict, name: str = "lab.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
