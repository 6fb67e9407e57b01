"""Clients that send GETs through the LB in a background thread and count what came back.

Two kinds, because nginx treats them differently at every reload:

- fresh: a new connection per request, like `curl` in a loop;
- keep-alive: one reused connection, as browsers and curl reuse theirs. nginx closes
  idle keep-alive connections at a reload, and a request sent on one just then is lost
  before any answer. RFC 9112 section 9.3.1 lets a client retry an idempotent request
  on a new connection when that happens, and browsers and curl do; httpx does not, so
  this client does it itself: once, only for a request sent on a reused connection
  that closed without an answer. Such retries are counted apart; a failed retry, or
  any other error, is a failed GET.

A loop keeps the time of every answer, so that a test can hold it to its own pace: its
rate measured in a calm window before the event (`calm_rates`), and then, over the
event, a share of that rate, no long silence, and an answer after the event's end
(`assert_served_throughout`). A loop that stalled, died or stopped early fails there
instead of passing on a handful of answers.
"""

from __future__ import annotations

import sys
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Collection, Sequence
from itertools import pairwise

import httpx

# What a reused connection closed by the server before it answered looks like in httpx.
CLOSED_BEFORE_ANSWER = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


# After a failed GET, so an LB refusing at once does not become a hot loop.
FAILURE_PAUSE = 0.01
# A loop's own end, should a test never stop it: far beyond any event a test runs (a
# loop that ends before its event does fails assert_served_throughout, never silently).
SAFETY_LIMIT = 3600
# The calm window before an event in which a loop's own rate is measured.
CALM_SECONDS = 2.0
# The least share of its calm rate a loop must keep over an event: an event loads the
# machine (a converge, containers restarting on the same two cores), so the rate drops,
# but a loop that stalls or dies keeps far less (the measured shares are in the report
# of tests/e2e, printed by assert_served_throughout).
MIN_SHARE = 0.2
# The longest a loop may go without an answer during an event: a request that waited
# out nginx's proxy_connect_timeout (1 s) on a vanished host, then went to the next
# instance, on a machine busy with the event.
MAX_SILENCE = 4.0


class RequestLoop:
    """GET `url` in a loop until stopped or `seconds` passed; count status codes and
    error names in `outcomes`, RFC 9112 retries in `retried`, and keep the time of every
    200 (`answer_times`) and of every other outcome (`refusals`). A context manager: its
    exit waits (up to twice the timeout) for one more answer, so an answer after the
    event's end shows that the loop ran through it.

    With `log`, every request is also logged as (monotonic time of the answer, what came
    back): the X-Instance that answered a 200, "HTTP <status>" or "error <name>"; a retry
    as "retry"."""

    def __init__(
        self,
        url: str,
        keepalive: bool = False,
        seconds: float = SAFETY_LIMIT,
        timeout: float = 5.0,
        log: list[tuple[float, str]] | None = None,
    ):
        self.url = url
        self.keepalive = keepalive
        self.timeout = timeout
        self.outcomes: Counter = Counter()
        self.retried = 0
        self.log = log
        self.answer_times = array("d")  # monotonic, ascending
        self.refusals: list[tuple[float, int | str]] = []
        self.expired = False  # ended by `seconds`, not by its exit
        self._halt = threading.Event()
        self._last_after: float | None = None  # exit: stop at the first answer after this
        self._deadline = time.monotonic() + seconds
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _client(self) -> httpx.Client:
        limits = httpx.Limits(max_keepalive_connections=1 if self.keepalive else 0)
        return httpx.Client(timeout=self.timeout, limits=limits, trust_env=False)

    def _record(self, outcome: int | str, logged: str) -> None:
        now = time.monotonic()
        self.outcomes[outcome] += 1
        if outcome == 200:
            self.answer_times.append(now)
        else:
            self.refusals.append((now, outcome))
        if self.log is not None:
            # Interned: a long run logs hundreds of thousands of a handful of strings.
            self.log.append((now, sys.intern(logged)))

    def _failed(self, exc: Exception) -> None:
        self._record(type(exc).__name__, f"error {type(exc).__name__}")
        time.sleep(FAILURE_PAUSE)

    def _done(self) -> bool:
        if self._halt.is_set():
            return True
        last_after = self._last_after
        if last_after is not None and self.answer_times and self.answer_times[-1] >= last_after:
            return True
        if time.monotonic() >= self._deadline:
            self.expired = True
            return True
        return False

    def _run(self) -> None:
        client = self._client()
        reused = False  # the next request goes out on a connection that answered before
        try:
            while not self._done():
                try:
                    response = client.get(self.url)
                except CLOSED_BEFORE_ANSWER as exc:
                    if not (self.keepalive and reused):
                        self._failed(exc)
                        continue
                    self.retried += 1
                    if self.log is not None:
                        self.log.append((time.monotonic(), "retry"))
                    client.close()
                    client = self._client()
                    try:
                        response = client.get(self.url)
                    except httpx.HTTPError as retry_error:
                        self._failed(retry_error)
                        reused = False
                        continue
                except httpx.HTTPError as exc:
                    self._failed(exc)
                    reused = False
                    continue
                if response.status_code == 200:
                    self._record(200, response.headers.get("X-Instance", "?"))
                else:
                    self._record(response.status_code, f"HTTP {response.status_code}")
                    time.sleep(FAILURE_PAUSE)
                reused = self.keepalive
        finally:
            client.close()

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._last_after = time.monotonic()
        self._thread.join(2 * self.timeout + 1)
        self._halt.set()
        self._thread.join()

    @property
    def failures(self) -> dict:
        return {k: v for k, v in self.outcomes.items() if k != 200}

    @property
    def answered(self) -> int:
        return self.outcomes[200]

    @property
    def last_answer(self) -> float | None:
        return self.answer_times[-1] if self.answer_times else None

    def answered_between(self, start: float, end: float, also: Collection[int | str] = ()) -> int:
        times = self.response_times(also)
        return bisect_right(times, end) - bisect_left(times, start)

    def response_times(self, also: Collection[int | str] = ()) -> Sequence[float]:
        """The times of the 200s, and of the outcomes in `also` (e.g. 502), in order."""
        if not also:
            return self.answer_times
        return sorted([*self.answer_times, *(t for t, o in self.refusals if o in also)])

    def longest_silence(self, start: float, end: float, also: Collection[int | str] = ()) -> float:
        """The longest stretch of [start, end] with no answer (nor an outcome in `also`)."""
        times = self.response_times(also)
        inside = times[bisect_left(times, start):bisect_right(times, end)]  # fmt: skip
        marks = [start, *inside, end]
        return max(b - a for a, b in pairwise(marks))

    def refused_between(self, start: float, end: float) -> Counter:
        return Counter(outcome for t, outcome in self.refusals if start <= t <= end)


def calm_rates(*loops: RequestLoop, seconds: float = CALM_SECONDS) -> list[float]:
    """Each running loop's answers per second over the next `seconds`: its pace with
    nothing happening, measured just before an event."""
    start = time.monotonic()
    time.sleep(seconds)  # the measurement window itself, not a wait for something
    end = time.monotonic()
    return [loop.answered_between(start, end) / (end - start) for loop in loops]


def assert_served_throughout(
    loop: RequestLoop,
    calm_rate: float,
    start: float,
    end: float,
    what: str,
    also: Collection[int | str] = (),
    share: float = MIN_SHARE,
    max_silence: float = MAX_SILENCE,
) -> None:
    """After the loop's exit: it ran through the event [start, end] (monotonic) — an
    answer after `end`, never its own deadline —, kept at least `share` of its calm
    rate over it, and never went `max_silence` s without an answer. Outcomes in `also`
    (the LB's own 502 with no instance left) count as answers here. Prints the figures."""
    kind = "keep-alive" if loop.keepalive else "fresh"
    answered = loop.answered_between(start, end, also)
    duration = end - start
    minimum = share * calm_rate * duration
    silence = loop.longest_silence(start, end, also)
    print(f"{what}, {kind} loop: calm {calm_rate:.0f}/s; over the event's {duration:.1f} s "
          f"{answered} answers ({answered / duration:.0f}/s, "
          f"{answered / (calm_rate * duration):.0%} of calm; minimum {minimum:.0f}), "
          f"longest silence {silence:.2f} s, {loop.retried} RFC 9112 retries, "
          f"outcomes {dict(loop.outcomes)}")  # fmt: skip
    assert calm_rate > 0, f"{what}: the {kind} loop got no answer in its calm window"
    assert not loop.expired, f"{what}: the {kind} loop ended by itself before the event did"
    last = loop.last_answer
    assert last is not None and last >= end, (
        f"{what}: the {kind} loop's last answer came {end - (last or start):.1f} s before "
        "the event's end: it did not run through the event"
    )
    assert answered >= minimum, (
        f"{what}: the {kind} loop answered {answered} times in {duration:.1f} s, under "
        f"{share:.0%} of its calm {calm_rate:.0f}/s ({minimum:.0f})"
    )
    assert silence <= max_silence, (
        f"{what}: the {kind} loop went {silence:.1f} s without an answer (at most {max_silence} s)"
    )


def wall(monotonic: float) -> float:
    """Monotonic time -> Unix time, for comparing a loop's times with the lab's clocks
    (Docker's timestamps). The offset is read at each call, right after the event it
    converts: a virtual machine's clock may be stepped while a suite runs (this one's
    was, 40 s forward), and an offset read at import would put every later event off by
    the step."""
    return monotonic + (time.time() - time.monotonic())
