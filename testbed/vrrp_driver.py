"""Request loops for the VRRP pair prototype, run inside its client container (the
client is on the pair's bridge; the test or bench may not be). testbed/vrrp_pair.py
copies this file and traffic.py in and starts it:

    python3 vrrp_driver.py URL OUT STOP

Three loops against URL (the virtual address), each paced by PACE after every answer so
that they leave the two cores to keepalived: a fresh connection per request, one
keep-alive connection (with traffic.py's RFC 9112 retry), and a probe, fresh with a
short timeout, which finds when the address answers again rather than waiting for
TCP's one-second SYN retransmission. OUT.ready appears once every loop has had an
answer; when STOP appears the loops end and OUT receives their logs as JSON:
{"loops": [{"kind", "log": [[monotonic time, outcome], ...], "retried"}, ...]}.
"""

from __future__ import annotations

import json
import os
import sys
import time

from traffic import RequestLoop

PACE = 0.002
PROBE_TIMEOUT = 0.1
KINDS = {
    "fresh": {"keepalive": False},
    "keepalive": {"keepalive": True},
    "probe": {"keepalive": False, "timeout": PROBE_TIMEOUT},
}


class PacedLoop(RequestLoop):
    def _record(self, outcome, logged) -> None:
        super()._record(outcome, logged)
        time.sleep(PACE)


def main(url: str, out: str, stop: str) -> None:
    logs = {kind: [] for kind in KINDS}
    loops = {
        kind: PacedLoop(url, seconds=600, log=logs[kind], **options)
        for kind, options in KINDS.items()
    }
    for loop in loops.values():
        loop.__enter__()
    try:
        while not all(loop.answered for loop in loops.values()):
            time.sleep(0.01)
        open(out + ".ready", "w").close()
        while not os.path.exists(stop):
            time.sleep(0.01)
    finally:
        for loop in loops.values():
            loop.__exit__(None, None, None)
    result = {
        "loops": [
            {"kind": kind, "log": logs[kind], "retried": loops[kind].retried} for kind in KINDS
        ]
    }
    with open(out + ".tmp", "w") as file:
        json.dump(result, file)
    os.rename(out + ".tmp", out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
