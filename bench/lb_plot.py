"""A picture of every failover: requests per instance over time, each event marked, every
failed request highlighted (bench/lb_events.py --plot FILE.png; matplotlib, the `bench`
extra).

Requests come as bench/lb_figures.py logs them: (monotonic time, outcome), the outcome
being the X-Instance that answered, "HTTP <status>", "error <name>" or "retry".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a lab machine or in CI
import matplotlib.pyplot as plt
from lb_figures import Log, is_answer, is_failure

BIN_SECONDS = 1.0


@dataclass(frozen=True)
class Mark:
    """An event on the time line: its trigger, when its command returned, when it settled."""

    name: str
    started: float
    command_done: float
    ended: float


@dataclass
class Series:
    """Requests per second of each answering instance, and failures per second, from `t0`."""

    seconds: list[float]
    answers: dict[str, list[int]]
    failures: list[int]
    failed_at: list[float]  # every failed request, seconds since t0


def series(requests: Log, t0: float, t1: float, bin_s: float = BIN_SECONDS) -> Series:
    """Bin `requests` (every client's, any order) into `bin_s` slots over [t0, t1]."""
    slots = max(1, math.ceil((t1 - t0) / bin_s))
    answers: dict[str, Counter] = {}
    failures: Counter = Counter()
    failed_at = []
    for when, outcome in requests:
        if not t0 <= when <= t1:
            continue
        slot = min(int((when - t0) / bin_s), slots - 1)
        if is_answer(outcome):
            answers.setdefault(outcome, Counter())[slot] += 1
        elif is_failure(outcome):
            failures[slot] += 1
            failed_at.append(when - t0)
    return Series(
        seconds=[i * bin_s for i in range(slots)],
        answers={
            name: [round(counts[i] / bin_s) for i in range(slots)]
            for name, counts in sorted(answers.items())
        },
        failures=[round(failures[i] / bin_s) for i in range(slots)],
        failed_at=sorted(failed_at),
    )


def plot(path: Path, requests: Log, marks: list[Mark], title: str) -> Series:
    """Draw requests per instance over the marks' span into `path` (PNG); return the data."""
    t0 = min(m.started for m in marks) - 5
    t1 = max(m.ended for m in marks) + 2
    data = series(requests, t0, t1)
    figure, axes = plt.subplots(figsize=(14, 6.5), dpi=110)
    for name, counts in data.answers.items():
        axes.step(data.seconds, counts, where="post", linewidth=1.2, label=name)
    top = max([1, *(max(c) for c in data.answers.values())]) * 1.25
    for i, mark in enumerate(marks):
        start, done, end = (t - t0 for t in (mark.started, mark.command_done, mark.ended))
        axes.axvspan(start, end, color="0.93" if i % 2 else "0.87", zorder=0)
        axes.axvline(start, color="0.35", linestyle="--", linewidth=0.8)
        axes.axvline(done, color="0.55", linestyle=":", linewidth=0.8)
        axes.text(start + 0.5, top * 0.98, mark.name, rotation=90, va="top", ha="left",
                  fontsize=8, color="0.2")  # fmt: skip
    if data.failed_at:
        axes.bar(data.seconds, data.failures, width=BIN_SECONDS, align="edge", color="red",
                 alpha=0.6, label=f"failed requests ({len(data.failed_at)})")  # fmt: skip
        axes.plot(data.failed_at, [0] * len(data.failed_at), "|", color="red", markersize=14)
    axes.set_xlim(0, t1 - t0)
    axes.set_ylim(0, top)
    axes.set_xlabel("seconds (dashed: an event's trigger; dotted: its command returned; "
                    "shaded: until the LB settled)")  # fmt: skip
    axes.set_ylabel(f"requests answered per {BIN_SECONDS:.0f} s")
    failed = f"{len(data.failed_at)} failed requests" if data.failed_at else "no failed request"
    axes.set_title(f"{title}: {failed}")
    axes.legend(loc="upper right", fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return data
