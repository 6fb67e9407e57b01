"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# The e2e modules with labs of their own; every other e2e module runs on the suite's
# shared lab (the `lab` fixture of tests/e2e/conftest.py). Checked at collection.
OWN_LAB_MODULES = {
    "tests/e2e/test_00_ownership.py",
    "tests/e2e/test_95_ssh_road.py",
    "tests/e2e/test_96_offline.py",
    "tests/e2e/test_97_lb_pair.py",
    "tests/e2e/test_98_box.py",
}


def on_shared_lab(nodeid: str) -> bool:
    module = nodeid.split("::", 1)[0]
    return module.startswith("tests/e2e/") and module not in OWN_LAB_MODULES


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's two workers (`-n 2`, pyproject.toml) take two halves, each in file
    order: the modules on the shared lab on one, everything else (the unit suite and the
    e2e roads with labs of their own) on the other. The shared lab's tests mostly wait
    on the lab, so the halves overlap well on two cores."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedLabApart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "shared lab" if on_shared_lab(nodeid) else "own resources"

    return SharedLabApart(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """An e2e module is scheduled with the shared lab exactly when a test in it uses it
    (`lab` is tests/e2e/conftest.py's fixture; elsewhere the name is free)."""
    modules: dict[str, bool] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if not module.startswith("tests/e2e/"):
            continue
        modules[module] = modules.get(module, False) or "lab" in item.fixturenames
    for module, uses_lab in modules.items():
        if on_shared_lab(module) != uses_lab:
            raise pytest.UsageError(
                f"{module} {'uses' if uses_lab else 'does not use'} the shared e2e lab: "
                f"{'take it out of' if uses_lab else 'list it in'} OWN_LAB_MODULES "
                "(tests/conftest.py), so that pytest-xdist schedules it with its lab."
            )


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
