"""Two LBs sharing one virtual address with keepalived (VRRPv3, 0.2 s adverts), under
request loops: how long each event leaves the address unanswered and what clients lose.
Prints JSON on stdout and a table on stderr.

    .venv/bin/python bench/vrrp_pair.py [--rounds 3] [--unicast] [--events NAME,...]
                                        [--advert-int 0.2] [--markdown]

The pair is testbed/vrrp_pair.py's: per LB host a namespace container on a Docker
bridge of its own (192.168.251.0/24; LAB_VRRP_SUBNET, a /24, moves it), Debian's nginx
naming itself and the real keepalived image (templates/keepalived) with the configuration
rendered from templates/keepalived/keepalived.conf.j2; lb1 (priority 200) is the master,
lb2 (190) the backup; the address is .100. A client container on the bridge runs three
loops against it (testbed/vrrp_driver.py): fresh (a connection per request),
keep-alive (one connection, RFC 9112 retry of a request its reused connection lost before
any answer, counted apart), and a probe (fresh, 0.1 s timeout: when the address answers
again, rather than when a client's SYN retransmission, 1 s later, gets through).

Events (testbed/vrrp_events.py), each followed by the recovery that brings the
address back to lb1 (preemption), every one on a fresh pair:

  host_lost          lb1's host powered off (its namespace gone, then its containers)
  lb_killed          lb1's LB container killed: keepalived lives, its track script acts
  lb_hung            lb1's nginx frozen (docker pause): accepts, never answers
  planned            labctl's hand-over, with the lab's script (vrrp-handover): drain
                     lb1 (new connections held while the address moves), stop its LB;
                     then start it, wait until it serves, drain lb2 towards it, undrain
                     both
  partition          VRRP cut between them (iptables, protocol 112): both hold the
                     address; then healed
  keepalived_killed  lb1's keepalived killed, nginx left: the address stays on lb1 too
  lb_with_keepalived_killed
                     keepalived inside the LB container, the other shape, at a kill of
                     that container: keepalived and nginx on lb1 killed together

Per event: moved (event -> the new holder's keepalived entered MASTER, from its state
file), answering (event -> the probe's first answer from the new holder), per client kind
failed requests of all, keep-alive retries, and the longest time a client went without
an answer. Where an event leaves the address on two hosts, 20 GETs from a client
that forgets its ARP entry before each (it has to ask who holds the address) say who
served them, and arping who answers for the address. With --rounds N every event runs N
times (fresh pairs); the table shows each figure's median and worst. Not part of the test
suite: it measures, it neither passes nor fails. Run it alone (under the machine-wide e2e
lock): it measures sub-second timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testbed/ is not an installed package: take it from the checkout
from testbed.vrrp_events import SCENARIOS, Measured  # noqa: E402
from testbed.vrrp_pair import VrrpPair  # noqa: E402

PREFIX = "vrrp-bench"
SUBNET = os.environ.get("LAB_VRRP_SUBNET", "192.168.251.0/24")
KINDS = ("fresh", "keepalive")


def figures(measured: Measured) -> dict:
    runs = measured.runs
    return {
        "event": measured.event,
        "to": measured.to,
        "moved": measured.moved,
        "answering": measured.answering,
        "holders": measured.holders,
        "new_clients": measured.new_clients,
        "arp": measured.arp,
        **{
            kind: {
                "requests": len(runs[kind].log),
                "failed": len(runs[kind].failures),
                "retried": runs[kind].retried,
                "longest_wait": runs[kind].longest_wait(),
                "rate": runs[kind].rate(),
                # When each failed, from the event, and how.
                "failures": [
                    [round(t - measured.at, 3), outcome] for t, outcome in runs[kind].failures
                ],
            }
            for kind in KINDS
        },
    }


def spread(values: list[float | None], unit: str = "s") -> str:
    """median / worst of the figures that exist; '-' when none does."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if unit == "n":
        return f"{statistics.median(present):g}/{max(present):g}"
    return f"{statistics.median(present):.2f}/{max(present):.2f}"


def markdown(rows: dict[str, list[dict]]) -> str:
    """The same figures as a Markdown table (docs/lb-pair.md)."""
    lines = [
        "| event | moved | answering | fresh: failed, longest wait "
        "| keep-alive: failed (retries), longest wait | holders after |",
        "|---|---|---|---|---|---|",
    ]
    for event, results in rows.items():
        fresh = [r["fresh"] for r in results]
        kept = [r["keepalive"] for r in results]
        lines.append(
            f"| {event} | {spread([r['moved'] for r in results])} "
            f"| {spread([r['answering'] for r in results])} "
            f"| {spread([f['failed'] for f in fresh], 'n')}, "
            f"{spread([f['longest_wait'] for f in fresh])} "
            f"| {spread([k['failed'] for k in kept], 'n')} "
            f"({spread([k['retried'] for k in kept], 'n')}), "
            f"{spread([k['longest_wait'] for k in kept])} "
            f"| {' and '.join(results[-1]['holders'])} |"
        )
    return "\n".join(lines)


def table(rows: dict[str, list[dict]]) -> str:
    header = (
        f"{'event':<40} {'moved':>9} {'answering':>10} "
        f"{'fresh failed':>13} {'fresh wait':>11} {'ka failed':>10} {'ka retried':>11} "
        f"{'ka wait':>10}  holders"
    )
    lines = [header, "-" * len(header)]
    for event, results in rows.items():
        lines.append(
            f"{event:<40} {spread([r['moved'] for r in results]):>9} "
            f"{spread([r['answering'] for r in results]):>10} "
            f"{spread([r['fresh']['failed'] for r in results], 'n'):>13} "
            f"{spread([r['fresh']['longest_wait'] for r in results]):>11} "
            f"{spread([r['keepalive']['failed'] for r in results], 'n'):>10} "
            f"{spread([r['keepalive']['retried'] for r in results], 'n'):>11} "
            f"{spread([r['keepalive']['longest_wait'] for r in results]):>10}  "
            f"{','.join(results[-1]['holders'])}"
        )
    lines.append("(median/worst over the rounds; seconds, or requests)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--unicast", action="store_true", help="unicast peers, not multicast")
    parser.add_argument("--advert-int", type=float, default=0.2)
    parser.add_argument("--events", default=",".join(SCENARIOS))
    parser.add_argument("--markdown", action="store_true", help="the table in Markdown")
    args = parser.parse_args()
    events = args.events.split(",")
    unknown = sorted(set(events) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown event(s) {', '.join(unknown)}; pick from {', '.join(SCENARIOS)}")

    rows: dict[str, list[dict]] = {}
    started = time.monotonic()
    for round_ in range(1, args.rounds + 1):
        for name in events:
            pair = VrrpPair(PREFIX, SUBNET, unicast=args.unicast, advert_int=args.advert_int)
            with pair:
                for measured in SCENARIOS[name](pair):
                    rows.setdefault(measured.event, []).append(figures(measured))
                print(f"round {round_}: {name} done", file=sys.stderr)
    print(json.dumps({
        "unicast": args.unicast,
        "advert_int": args.advert_int,
        "rounds": args.rounds,
        "seconds": round(time.monotonic() - started, 1),
        "events": rows,
    }, indent=1))  # fmt: skip
    print(markdown(rows) if args.markdown else table(rows), file=sys.stderr)
    for event, results in rows.items():
        asked = [(r["new_clients"], r["arp"]) for r in results if r["new_clients"] is not None]
        for served, arp in asked:
            print(f"{event}: new clients served by {served}; ARP answered by {arp}",
                  file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
