"""The LB's published record (templates/lb/lb-publish writes lb.json) made on the control
machine: lb-publish run on a configuration in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from roles.contract import TEMPLATES

LB_PUBLISH = TEMPLATES / "lb" / "lb-publish"


def publish(tmp_path: Path, live: str, reloads: int = 0, rejected: int = 0,
            refused: bool = False) -> dict:  # fmt: skip
    """Run lb-publish on `live` (the configuration nginx runs) with these counters; the
    lb.json it wrote."""
    (tmp_path / "service.conf").write_text(live)
    (tmp_path / "reloads").write_text(f"{reloads}\n")
    (tmp_path / "rejected").write_text(f"{rejected}\n")
    if refused:
        (tmp_path / "rejected-render").write_text("upstream broken {\n")
    env = os.environ | {"LB_LIVE": str(tmp_path / "service.conf"), "LB_STATE": str(tmp_path)}
    subprocess.run(["sh", str(LB_PUBLISH)], env=env, check=True, timeout=30)
    return json.loads((tmp_path / "lb.json").read_text())
