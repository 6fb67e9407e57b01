"""The `e2e` marker pyproject.toml declares is carried by every end-to-end test, so that
`-m "not e2e"` runs all but them and `-m e2e` only them. (Without the marker, `-m e2e`
would collect nothing and `-m "not e2e"` every e2e test.)"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def collected(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist",
         "-p", "no:cacheprovider", "-o", "addopts=", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: none selected
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_every_e2e_test_carries_the_e2e_marker():
    assert len(collected("-m", "e2e", "tests/e2e")) > 50
    assert collected("-m", "not e2e", "tests/e2e") == []
