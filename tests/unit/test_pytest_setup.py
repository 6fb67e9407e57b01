"""pytest's own settings (pyproject.toml) say nothing untrue: every marker they declare is
carried by a test, and a marker no one declared stops the run (--strict-markers)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from tests.conftest import PROJECT_ROOT

SETTINGS = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]


def test_every_declared_marker_is_carried_by_a_test():
    declared = [m.split(":", 1)[0].strip() for m in SETTINGS["ini_options"].get("markers", [])]
    sources = "\n".join(p.read_text() for p in (PROJECT_ROOT / "tests").rglob("test_*.py"))
    for marker in declared:
        assert re.search(rf"pytest\.mark\.{marker}\b", sources), f"{marker}: no test carries it"


def test_an_undeclared_marker_stops_the_run(tmp_path):
    (tmp_path / "test_marked.py").write_text(
        "import pytest\n\n@pytest.mark.e2e\ndef test_marked():\n    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0",
         "-c", str(PROJECT_ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "'e2e' not found in `markers` configuration option" in result.stdout + result.stderr
