"""The unit suite never reads or writes a real lab's local state (`.lab/` of this checkout:
a person's hosts, Consul tokens and gossip key) nor labctl's cache (~/.cache/labctl): for
every unit test both are folders of its own, empty at its start. It sees labctl's default
image namespace, whatever the environment says."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

import labctl
from labctl import paths
from labctl.images.tags import IMAGE_NAMESPACE_ENV

# Every labctl module (but the entry point, which runs the CLI), so that the cache paths
# they derive at import are all known here.
for module in pkgutil.walk_packages(labctl.__path__, "labctl."):
    if module.name != "labctl.__main__":
        importlib.import_module(module.name)

REAL_LABS = paths.labs_dir()
REAL_CACHE = paths.CACHE


def cache_paths() -> list[tuple[object, str, Path]]:
    """Every module-level path of labctl inside the real cache: module, name, path."""
    return [
        (module, name, value)
        for module_name, module in sorted(sys.modules.items())
        if module_name == "labctl" or module_name.startswith("labctl.")
        for name, value in vars(module).items()
        if isinstance(value, Path) and value.is_relative_to(REAL_CACHE)
    ]


@pytest.fixture(autouse=True)
def no_real_lab_state_or_cache(tmp_path_factory, monkeypatch):
    # labctl's own image namespace, not the e2e suite's (tests/e2e/conftest.py) nor a
    # developer's.
    monkeypatch.delenv(IMAGE_NAMESPACE_ENV, raising=False)
    checkout = tmp_path_factory.mktemp("checkout")
    monkeypatch.setattr(paths, "PROJECT_ROOT", checkout)
    cache = tmp_path_factory.mktemp("cache") / "labctl"
    for module, name, value in cache_paths():
        monkeypatch.setattr(module, name, cache / value.relative_to(REAL_CACHE))
