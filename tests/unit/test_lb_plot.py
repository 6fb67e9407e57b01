"""bench/lb_plot.py: requests per instance over time, events marked, failures highlighted."""

from __future__ import annotations

import sys

import matplotlib.image

from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))  # the bench's modules import each other by name
from lb_plot import Mark, plot, series

# Two seconds of answers from two instances, a crash in the second: one failed request,
# one keep-alive retry (neither an answer nor a failure), then only zhibo-1.
REQUESTS = [
    (100.1, "zhibo-1"), (100.4, "zhibo-2"), (100.7, "zhibo-1"),
    (101.2, "zhibo-2"), (101.5, "error ReadError"), (101.6, "retry"), (101.8, "zhibo-1"),
    (102.3, "zhibo-1"), (102.9, "HTTP 502"), (103.5, "zhibo-1"),
]  # fmt: skip


def test_series_counts_answers_per_instance_and_failures_per_second():
    data = series(REQUESTS, 100.0, 104.0)
    assert data.seconds == [0.0, 1.0, 2.0, 3.0]
    assert data.answers == {"zhibo-1": [2, 1, 1, 1], "zhibo-2": [1, 1, 0, 0]}
    assert data.failures == [0, 1, 1, 0]
    assert [round(t, 1) for t in data.failed_at] == [1.5, 2.9]


def test_requests_outside_the_window_are_left_out():
    data = series(REQUESTS, 101.0, 102.0)
    assert data.answers == {"zhibo-1": [1], "zhibo-2": [1]} and data.failures == [1]


def test_plot_writes_a_png_with_the_failures_it_counted(tmp_path):
    path = tmp_path / "failover.png"
    marks = [Mark("instance_crash", 101.0, 101.4, 103.0), Mark("instance_recover", 103.0,
                                                              103.2, 104.0)]  # fmt: skip
    data = plot(path, REQUESTS, marks, "unit")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert (width, height) == (14 * 110, round(6.5 * 110))
    assert len(data.failed_at) == 2
