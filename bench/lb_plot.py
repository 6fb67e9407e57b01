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
    """Draw requests per instance over the marks' span into `path` (PNG); return the data.

    Above, the answers of each instance per second, stacked: the band of an instance that
    leaves the upstream thins out, one that joins appears, the total is the load. Below,
    failed requests per second, in red; every second with one is also shaded red above."""
    t0 = min(m.started for m in marks) - 5
    t1 = max(m.ended for m in marks) + 2
    data = series(requests, t0, t1)
    figure, (above, below) = plt.subplots(
        2, 1, figsize=(14, 6.5), dpi=110, sharex=True, gridspec_kw={"height_ratios": [5, 1]}
    )
    names = list(data.answers)
    if names:
        above.stackplot(data.seconds, *(data.answers[n] for n in names), labels=names,
                        step="post", alpha=0.85)  # fmt: skip
    top = max([1, *(sum(c) for c in zip(*data.answers.values(), strict=True))]) * 1.2
    for i, mark in enumerate(marks):
        start, done, end = (t - t0 for t in (mark.started, mark.command_done, mark.ended))
        for axes in (above, below):
            axes.axvspan(start, end, color="0.9" if i % 2 else "0.8", zorder=0)
            axes.axvline(start, color="0.3", linestyle="--", linewidth=0.8)
            axes.axvline(done, color="0.5", linestyle=":", linewidth=0.8)
        above.text(start + 0.4, top * 0.98, mark.name, rotation=90, va="top", ha="left",
                   fontsize=8, color="0.15")  # fmt: skip
    for second, failed in zip(data.seconds, data.failures, strict=True):
        if failed:
            above.axvspan(second, second + BIN_SECONDS, color="red", alpha=0.25, zorder=3)
    below.bar(data.seconds, data.failures, width=BIN_SECONDS, align="edge", color="red")
    failed = f"{len(data.failed_at)} failed requests" if data.failed_at else "no failed request"
    below.set_ylabel("failed", color="red")
    below.set_ylim(0, max([1, *data.failures]) * 1.2)
    above.set_xlim(0, t1 - t0)
    above.set_ylim(0, top)
    above.set_ylabel(f"answers per {BIN_SECONDS:.0f} s, by instance")
    above.set_title(f"{title}: {failed}")
    above.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8)
    below.set_xlabel("seconds (dashed: an event's trigger; dotted: its command returned; "
                     "shaded: until the LB settled)")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return data
