"""Where a verb's time goes, read from the lab's own logs while the verb runs.

labctl writes `.lab/<name>/logs/vagrant-up.log` while Vagrant creates the hosts and
`converge.log` while pyinfra converges them (line-buffered). A LogClock tails both
from a thread and stamps each line as it appears, so the breakdown needs nothing
from labctl itself and reads any checkout the same way (before and after a change):

  preflight         labctl's start up to the hosts' creation: the provider, the base
                    image, the images resolved on this machine (archives saved)
  host creation     `vagrant up`, up to the first converge
  converge start-up pyinfra's own start: inventory (connection data), connecting,
                    preparing the deploy, up to its first operation
  engine install    operations of `Mark the machine` and `Deploy Docker`
  image delivery    `Deliver images`
  Consul            `Deploy Consul agent`, and what labctl does between two converges
                    of one `up` (the ACL bootstrap and the tokens)
  services          `Deploy demo service`
  LB                `Deploy load balancer`
  teardown          `Remove the lab` (the ssh road's `down`)
  verify            from the last converge's results to the verb's end (`up` ends with
                    `verify --wait`, which waits for every check to pass)

An operation lasts from its start line to the next one (pyinfra runs one operation on
every host, then the next), the last one to pyinfra's `--> Results:`.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import defaultdict
from pathlib import Path

OPERATION_RE = re.compile(r"^--> Starting (?:serial )?operation: (?P<name>.+?)\s*$")
CATEGORIES = {
    "Mark the machine": "engine install",
    "Deploy Docker": "engine install",
    "Deliver images": "image delivery",
    "Deploy Consul agent": "Consul",
    "Deploy demo service": "services",
    "Deploy load balancer": "LB",
    "Remove the lab": "teardown",
}
PHASES = (
    "preflight", "host creation", "converge start-up", "engine install", "image delivery",
    "Consul", "services", "LB", "teardown", "verify", "other",
)  # fmt: skip
LOGS = ("vagrant-up.log", "converge.log")
POLL = 0.05


def category(operation: str) -> str:
    return CATEGORIES.get(operation.split(" | ", 1)[0], "other")


class LogClock:
    """Stamps every new line of a lab's logs (in `logs_dir`) while a verb runs."""

    def __init__(self, logs_dir: Path):
        self.logs_dir = logs_dir
        self.events: list[tuple[float, str, str]] = []  # (monotonic, log, line)
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LogClock:
        self.started = time.monotonic()
        # Lines already there belong to earlier verbs: start at their end.
        for name in LOGS:
            path = self.logs_dir / name
            self._offsets[name] = path.stat().st_size if path.exists() else -1
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.ended = time.monotonic()
        self._stop.set()
        self._thread.join()
        self._read()

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            self._read()

    def _read(self) -> None:
        now = time.monotonic()
        for name in LOGS:
            path = self.logs_dir / name
            try:
                size = path.stat().st_size
            except OSError:
                continue
            offset = self._offsets.get(name, -1)
            if offset < 0 or size < offset:  # created (or made afresh) during this verb
                self.events.append((now, name, "<created>"))
                offset = 0
            if size == offset:
                self._offsets[name] = offset
                continue
            with path.open("rb") as log:
                log.seek(offset)
                chunk = log.read(size - offset).decode(errors="replace")
            self._offsets[name] = size
            text = self._partial.get(name, "") + chunk
            *lines, self._partial[name] = text.split("\n")
            self.events.extend((now, name, line) for line in lines)

    def operations(self) -> list[tuple[str, float]]:
        """Every pyinfra operation with its seconds, in run order (both converges)."""
        marks = []  # (time, operation name, or None for a converge's end)
        for at, log, line in self.events:
            if log == "converge.log" and (match := OPERATION_RE.match(line)):
                marks.append((at, match["name"]))
            elif log == "converge.log" and line.startswith("--> Results:"):
                marks.append((at, None))
        return [
            (name, round(until - at, 1))
            for (at, name), (until, _) in itertools.pairwise(marks)
            if name is not None
        ]

    def breakdown(self) -> dict[str, float]:
        """Seconds per phase (PHASES), summing to the verb's wall time."""
        marks: list[tuple[float, str]] = [(self.started, "preflight")]
        for at, log, line in self.events:
            if log == "vagrant-up.log":
                if marks[-1][1] == "preflight":
                    marks.append((at, "host creation"))
            elif line.startswith("--> Loading config"):
                marks.append((at, "converge start-up"))
            elif match := OPERATION_RE.match(line):
                marks.append((at, category(match["name"])))
            elif line.startswith("--> Results:"):
                # Between two converges of one `up`: labctl's ACL work (Consul).
                marks.append((at, "after converge"))
        if marks[-1][1] == "after converge":
            # After the last converge: the verification (and printing the result).
            marks[-1] = (marks[-1][0], "verify")
        seconds: dict[str, float] = defaultdict(float)
        for (at, phase), (until, _) in zip(marks, [*marks[1:], (self.ended, "")], strict=True):
            seconds["Consul" if phase == "after converge" else phase] += until - at
        return {name: round(seconds[name], 1) for name in PHASES if seconds.get(name)}
