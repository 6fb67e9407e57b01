"""`up` with and without the lab's host box (docs/boxes.md), with where its time goes;
prints JSON and tables.

    .venv/bin/python bench/boxes.py [--hosts 3] [--name NAME] [--subnet A.B.C]

Docker provider, the seed's hosts (bench/verbs.py), stand-in images built first. In
turn: `down --purge` (no box), the first `up` (hosts from the template, then the box is
kept), `apply`, `down` (the box stays), `up` from the box, `apply`, `down`, `up
--no-box`, `down --purge`. The box's sizes are read before the last `down`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from phases import PHASES, LogClock  # bench/, beside this file
from rich.console import Console
from rich.table import Table
from verbs import LAB, ROOT, SUBNET_PREFIX, changes, labctl, spec_data

sys.path.insert(0, str(ROOT))  # testbed/ is not an installed package: take it from the checkout
from testbed.standin_build import standin_images

console = Console(stderr=True)
RUNS = (("first up", ()), ("up from the box", ()), ("up --no-box", ("--no-box",)))


def measure(spec: Path, name: str) -> list[dict]:
    logs = ROOT / ".lab" / name / "logs"
    rows = []
    labctl(spec, "down", "--purge")
    try:
        for run, args in RUNS:
            with LogClock(logs) as clock:
                up = labctl(spec, "up", *args)
            note = re.search(r"box: (.+)", up.output)
            row = {"run": run, "up": round(up.seconds, 1), "up_cpu": round(up.cpu, 1),
                   "phases": clock.breakdown(), "box": note[1].strip() if note else "",
                   "apply_changes": changes(labctl(spec, "apply").output)}  # fmt: skip
            if run == "up --no-box":
                row["boxes"] = box_list(spec)
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
            labctl(spec, "down")
    finally:
        labctl(spec, "down", "--purge", check=False)
    return rows


def box_list(spec: Path) -> list[dict]:
    listed = subprocess.run(
        [sys.executable, "-m", "labctl", "--spec", str(spec), "box", "list", "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(listed.stdout)


def table(rows: list[dict]) -> Table:
    out = Table(title="`up`, 3 hosts, docker road (s)")
    out.add_column("phase")
    for row in rows:
        out.add_column(row["run"], justify="right")
    for phase in PHASES:
        cells = [row["phases"].get(phase) for row in rows]
        if any(cells):
            out.add_row(phase, *(f"{c:.1f}" if c else "" for c in cells))
    out.add_row("total", *(f"{row['up']:.1f}" for row in rows))
    out.add_row("cpu (this machine)", *(f"{row['up_cpu']:.1f}" for row in rows))
    out.add_row("apply after: changes", *(str(row["apply_changes"]) for row in rows))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--name", default=LAB)
    parser.add_argument("--subnet", default=SUBNET_PREFIX, help="three octets, e.g. 192.168.81")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "lab.yaml"
        data = spec_data(args.hosts, standin_images(), args.subnet, args.name)
        data["network"]["allow_any_subnet"] = True
        spec.write_text(yaml.safe_dump(data))
        rows = measure(spec, args.name)
    print(json.dumps(rows))
    console.print(table(rows))
    for row in rows:
        console.print(f"{row['run']}: box: {row['box']}")
    for kept in rows[-1].get("boxes", []):
        console.print(
            f"box {kept['image']}: image {kept['image_bytes'] / 1e6:.0f} MB, "
            f"volume {kept['volume']} {(kept['data_bytes'] or 0) / 1e6:.0f} MB; {kept['engine']}"
        )


if __name__ == "__main__":
    main()
