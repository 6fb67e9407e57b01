"""Wall time of every lifecycle verb on both roads at several sizes, checkouts side by side.

For one or more checkouts in one run, with where `up`'s time goes; prints JSON and
tables.

    .venv/bin/python bench/lifecycle.py [--hosts 3,6] [--roads docker,ssh] [--ssh-hosts 3]
                                        [--checkout NAME=DIR ...]
    .venv/bin/python bench/lifecycle.py --delivery [--hosts 3,6]

Docker road: lab `labspeed` on 192.168.81.0/24 (`--lab` and `--subnet-prefix` choose
others): the seed's three hosts (two servers, the LB on a client), plus one client host
with a demo instance for each host beyond three (bench/verbs.py). Ssh road: lab
`labbench-ssh` on as many existing machines made like the e2e suite's
(testbed/machines.py, 192.168.83.0/24, reached as `admin` with sudo), fresh for each
checkout and size, so that none starts with an engine another installed
(bench/ssh_road.py).

For each road, size and checkout, in turn: `up`, a no-op `apply` (once the machine's
load average is below its core count again), `status`, `verify`, `down`, then `up`
again after that `down` (its own row, "up again": what a person waits for on the lab's
daily round, and what a host box shortens), and `down` again (of the hosts made from
the box); each verb the CLI a user runs, in that checkout (its own labctl, roles and
.lab). `--checkout before=/tmp/main --checkout after=.` compares main and a branch in
one run, size by size, so both meet the same machine load. Per verb: wall time, CPU
spent on this machine (the verb's whole process tree) and the load average before it;
for `up`, `up again` and `apply`, the phases (bench/phases.py).

Consul and consul-template are the e2e suite's stand-ins, built before anything is
timed, and so are the lab's recipe images for each checkout: `up` runs with images
cached, as a user's second `up` does. Images are tagged under LAB_IMAGE_NAMESPACE
(default `dev-speed`), apart from the lead's `lab/*`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from phases import PHASES, LogClock  # bench/, beside this file
from rich.console import Console
from rich.table import Table
from verbs import LAB, ROOT, SUBNET_PREFIX, Timed, changes, labctl, spec_data

sys.path.insert(0, str(ROOT))  # testbed/ is not an installed package: take it from the checkout
from testbed.standin_build import standin_images

# Timed in this order; "up again" is `up` after the `down` before it, "down again" the
# `down` after that.
VERBS = ("up", "apply", "status", "verify", "down", "up again", "down again")
BREAKDOWN = ("up", "up again", "apply")
# The verbs after an `up` meet the load that `up` left (the 1-minute load average decays
# over minutes), the more of it the bigger the lab, and sizes would not compare: before
# the first of them the machine settles, its load average below its core count, for at
# most SETTLE_DEADLINE seconds. The load each verb met is in the row all the same.
SETTLED_AFTER = "up"
SETTLE_DEADLINE = 150.0
# Resolve (build) every image the spec needs with the checkout's own code, untimed.
WARM_UP = (
    "import sys; from labctl import system; from labctl.images import on_control, spec_images; "
    "from labctl.spec import load_spec; "
    "spec, _ = load_spec(sys.argv[1]); engine = system.ensure_engine(); "
    "[on_control.resolve(engine, spec, image) for image in spec_images.lab_images(spec)]"
)

# Wide enough for every column when the tables go to a file or a pipe.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


def checkout_arg(text: str) -> tuple[str, Path]:
    name, sep, directory = text.partition("=")
    path = Path(directory if sep else name).resolve()
    if not (path / "labctl" / "cli.py").is_file():
        raise argparse.ArgumentTypeError(f"{path} holds no labctl checkout")
    return (name if sep else path.name), path


def warm_up(checkout: Path, spec: Path) -> None:
    subprocess.run([sys.executable, "-c", WARM_UP, str(spec)], cwd=checkout, check=True)


def lifecycle(checkout: Path, spec: Path) -> dict:
    """Every verb once, in order; a last `down` always runs (after "down again", it
    finds nothing to do)."""
    logs = checkout / ".lab" / yaml.safe_load(spec.read_text())["name"] / "logs"
    row: dict = {}

    def timed(name: str) -> Timed:
        with LogClock(logs) as clock:
            result = labctl(spec, name.split()[0], checkout=checkout)
        row[name] = round(result.seconds, 1)
        row[f"{name}_cpu"] = round(result.cpu, 1)
        row[f"{name}_load"] = round(result.load, 2)
        if name in BREAKDOWN:
            row[f"{name}_phases"] = clock.breakdown()
            row[f"{name}_operations"] = clock.operations()
        return result

    # What an interrupted run left, and the lab's host boxes: another checkout may have
    # kept one for this spec, and each checkout's first `up` makes its own (a checkout
    # from before boxes knows no --purge: its plain `down` follows).
    labctl(spec, "down", "--purge", checkout=checkout, check=False)
    labctl(spec, "down", checkout=checkout)
    try:
        for verb in VERBS:
            result = timed(verb)
            if verb == SETTLED_AFTER:
                row["settled"] = settle()
            if verb in ("apply", "up again"):
                row[f"{verb}_changes"] = changes(result.output)
    finally:
        labctl(spec, "down", checkout=checkout)
    return row


def settle() -> float:
    """Wait until the 1-minute load average is below the core count (at most
    SETTLE_DEADLINE); the seconds waited."""
    started = time.monotonic()
    while os.getloadavg()[0] >= (os.cpu_count() or 1):
        if time.monotonic() - started >= SETTLE_DEADLINE:
            break
        time.sleep(2)
    return round(time.monotonic() - started, 1)


def docker_road(
    sizes: list[int], checkouts: list[tuple[str, Path]], tmp: Path, lab: str = LAB,
    prefix: str = SUBNET_PREFIX,
) -> list[dict]:  # fmt: skip
    images = standin_images()
    rows = []
    for hosts in sizes:
        spec = tmp / f"lab-{hosts}.yaml"
        spec.write_text(yaml.safe_dump(spec_data(hosts, images, prefix=prefix, name=lab)))
        for name, checkout in checkouts:
            warm_up(checkout, spec)
            row = {"road": "docker", "checkout": name, "hosts": hosts}
            rows.append(row | lifecycle(checkout, spec))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def ssh_road(sizes: list[int], checkouts: list[tuple[str, Path]], tmp: Path) -> list[dict]:
    from ssh_road import SSH_ROAD_PREFIX, machines, ssh_spec_data

    images = standin_images()
    rows = []
    for hosts in sizes:
        for name, checkout in checkouts:
            work = tmp / f"ssh-{hosts}-{name}"
            work.mkdir()
            with machines("labbench-ssh", SSH_ROAD_PREFIX, hosts, work) as pool:
                spec = work / "ssh.yaml"
                spec.write_text(yaml.safe_dump(ssh_spec_data(pool, images, work / "known_hosts")))
                warm_up(checkout, spec)
                row = {"road": "ssh", "checkout": name, "hosts": hosts}
                rows.append(row | lifecycle(checkout, spec))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def verb_table(rows: list[dict], road: str) -> Table:
    """Seconds per verb at each size, and each size's ratio to the smallest."""
    rows = [r for r in rows if r["road"] == road]
    checkouts = list(dict.fromkeys(r["checkout"] for r in rows))
    sizes = sorted({r["hosts"] for r in rows})
    table = Table(title=f"labctl verbs, {road} road (s; ratio to the smallest lab)")
    table.add_column("verb")
    by = {(r["checkout"], r["hosts"]): r for r in rows}
    for name in checkouts:
        for hosts in sizes:
            table.add_column(f"{name} {hosts}", justify="right")
        for hosts in sizes[1:]:
            table.add_column(f"{name} {hosts}/{sizes[0]}", justify="right")
    for verb in VERBS:
        cells = []
        for name in checkouts:
            base = by[(name, sizes[0])][verb]
            cells += [f"{by[(name, h)][verb]:.1f}" for h in sizes]
            cells += [f"{by[(name, h)][verb] / base:.2f}" for h in sizes[1:]]
        table.add_row(verb, *cells)
    cells = []
    for name in checkouts:
        base = by[(name, sizes[0])]["up"]
        cells += [""] * len(sizes)
        cells += [f"{(by[(name, h)]['up'] - base) / (h - sizes[0]) / base:.0%}" for h in sizes[1:]]
    table.add_row("up: each added host / smallest up", *cells)
    return table


def phase_table(rows: list[dict], verb: str, road: str) -> Table:
    rows = [r for r in rows if r["road"] == road]
    table = Table(title=f"where `{verb}` spends its time, {road} road (s)")
    table.add_column("phase")
    for row in rows:
        table.add_column(f"{row['checkout']} {row['hosts']}", justify="right")
    for phase in PHASES:
        cells = [row[f"{verb}_phases"].get(phase) for row in rows]
        if any(cells):
            table.add_row(phase, *(f"{c:.1f}" if c else "" for c in cells))
    table.add_row("cpu (this machine)", *(f"{row[f'{verb}_cpu']:.1f}" for row in rows))
    table.add_row("load before", *(f"{row[f'{verb}_load']:.2f}" for row in rows))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--roads", default="docker,ssh", type=lambda s: s.split(","),
        help="roads to measure, e.g. docker,ssh",
    )  # fmt: skip
    parser.add_argument("--delivery", action="store_true", help="compare image delivery shapes")
    parser.add_argument(
        "--hosts", default="3,6", type=lambda s: [int(n) for n in s.split(",")],
        help="lab sizes, e.g. 3,6,9 (--delivery: 3 and/or 6)",
    )  # fmt: skip
    parser.add_argument(
        "--ssh-hosts", type=lambda s: [int(n) for n in s.split(",")],
        help="lab sizes on the ssh road (default: --hosts)",
    )  # fmt: skip
    parser.add_argument(
        "--checkout", action="append", type=checkout_arg, metavar="NAME=DIR",
        help="a checkout to measure (repeat to compare); default: this one",
    )  # fmt: skip
    parser.add_argument(
        "--lab", default=LAB, help=f"the docker road's lab name (default {LAB})"
    )  # fmt: skip
    parser.add_argument(
        "--subnet-prefix", default=SUBNET_PREFIX, metavar="A.B.C",
        help=f"the docker road's /24, its first three numbers (default {SUBNET_PREFIX})",
    )  # fmt: skip
    args = parser.parse_args()
    if unknown := set(args.roads) - set(ROADS):
        parser.error(f"unknown road {', '.join(sorted(unknown))}: use {' or '.join(ROADS)}")
    checkouts = args.checkout or [("this", ROOT)]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if args.delivery:
            from ssh_road import delivery, delivery_table

            rows = delivery(tmp, standin_images(), args.hosts)
            print(json.dumps(rows))
            console.print(delivery_table(rows))
            return
        rows = []
        sizes = {"docker": args.hosts, "ssh": args.ssh_hosts or args.hosts}
        for road in args.roads:
            if road == "docker":
                rows += docker_road(sizes[road], checkouts, tmp, args.lab, args.subnet_prefix)
            else:
                rows += ROADS[road](sizes[road], checkouts, tmp)
    print(json.dumps(rows))
    for road in args.roads:
        console.print(verb_table(rows, road))
        for verb in BREAKDOWN:
            console.print(phase_table(rows, verb, road))


ROADS = {"docker": docker_road, "ssh": ssh_road}

if __name__ == "__main__":
    main()
