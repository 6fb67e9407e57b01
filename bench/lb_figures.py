"""What bench/lb_events.py makes of its logs: per-event figures and the table.

Requests are logged per client as (monotonic time of the answer, outcome): the
X-Instance that answered, "HTTP <status>", "error <name>", or "retry" (a keep-alive
client retrying on a new connection a GET whose reused connection nginx closed
before answering, RFC 9112 section 9.3.1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import pairwise

from rich.table import Table

MAX_LISTED = 20  # failure times listed per event
RELOAD_MARGIN = 1.0  # a failure this close to a seen reload counts as "near" it

Log = list[tuple[float, str]]


def is_answer(outcome: str) -> bool:
    return not outcome.startswith(("HTTP ", "error ", "retry"))


def is_failure(outcome: str) -> bool:
    return outcome.startswith(("HTTP ", "error "))


def since(start: float, when: float | None) -> float | None:
    return None if when is None else round(when - start, 1)


def first_change(
    log: list[tuple[float, object]], start: float, end: float, holds: Callable[[object], bool]
) -> float | None:
    """When the logged value first satisfies `holds` within [start, end]; the value current
    at `start` counts (as of `start`)."""
    current = [(t, v) for t, v in log if t <= start][-1:]
    for t, value in current + [(t, v) for t, v in log if start < t <= end]:
        if holds(value):
            return max(t, start)
    return None


def reloads_between(log: list[tuple[float, int]], start: float, end: float) -> int:
    """Reloads in (start, end]. The counter lives on the LB's volume and only grows; a
    drop (a new volume) counts the new value whole."""
    values = [v for t, v in log if t <= start][-1:] + [v for t, v in log if start < t <= end]
    return sum(b - a if b >= a else b for a, b in pairwise(values))


def near(when: float, moments: list[float], margin: float = RELOAD_MARGIN) -> bool:
    return any(abs(when - m) <= margin for m in moments)


def serving_gap(requests: Log, start: float, end: float) -> float:
    """The longest time in [start, end] without an answer from any client: how long the
    LB stopped serving (a restart, a reboot), 0.0 when it never did."""
    answers = [start] + [t for t, o in requests if start <= t <= end and is_answer(o)] + [end]
    return round(max(b - a for a, b in pairwise(answers)), 1)


def client_figures(log: Log, start: float, end: float) -> dict:
    window = [o for t, o in log if start <= t <= end]
    failures = Counter(o for o in window if is_failure(o))
    return {
        "requests": sum(1 for o in window if o != "retry"),
        "failed": sum(failures.values()),
        "failure_kinds": dict(failures),
        "retries": window.count("retry"),
    }


def _latest(times: dict[str, float | None], start: float) -> float | None:
    """The time by which every instance had shifted; None if one never did."""
    if any(t is None for t in times.values()):
        return None
    return since(start, max(times.values()))


def measure(
    phase,
    clients: dict[str, Log],
    upstreams: list[tuple[float, frozenset[str]]],
    reloads: list[tuple[float, int]],
    checks: list[tuple[float, dict[str, str]]],
) -> dict:
    """The figures of one phase (an event from its trigger until the lab settled)."""
    start, end = phase.started, phase.ended
    event = phase.event
    added = {i: a for i, a in event.expected.items() if i not in phase.before}
    removed = {i: a for i, a in phase.before.items() if i not in event.expected}
    requests = sorted(entry for log in clients.values() for entry in log)
    window = [(t, o) for t, o in requests if start <= t <= end]
    failed_at = [t for t, o in window if is_failure(o)]
    reloaded_at = [t for t, _ in reloads if start < t <= end]
    figures: dict = {
        "command": round(phase.command_done - start, 1),
        "to_upstream": since(
            start,
            first_change(
                upstreams,
                start,
                end,
                lambda up: set(added.values()) <= up and not set(removed.values()) & up,
            ),
        ),
        "serving_gap": serving_gap(requests, start, end),
    }
    if added:
        first = {i: next((t for t, o in window if o == i), None) for i in added}
        figures["first_response"] = {i: since(start, t) for i, t in first.items()}
        figures["traffic_shifted"] = _latest(first, start)
    if removed:
        last = {i: max((t for t, o in window if o == i), default=start) for i in removed}
        figures["last_response"] = {i: since(start, t) for i, t in last.items()}
        figures["traffic_shifted"] = _latest(last, start)
    for key in event.critical:
        name = "to_node_failed" if key.startswith("node:") else "to_critical"
        figures[name] = since(
            start, first_change(checks, start, end, lambda s, k=key: s.get(k) == "critical")
        )
    figures |= {
        "clients": {kind: client_figures(log, start, end) for kind, log in clients.items()},
        "failed_requests": len(failed_at),
        "reloads": reloads_between(reloads, start, end),
        # When, to line failures up with reloads: nginx closes idle keep-alive client
        # connections at a reload.
        "failed_at": [since(start, t) for t in failed_at][:MAX_LISTED],
        "reloaded_at": [since(start, t) for t in reloaded_at],
        "failed_near_reload": sum(near(t, reloaded_at) for t in failed_at),
        "phase": round(end - start, 1),
        "settled": phase.settled,
    }
    figures |= phase.extra
    if phase.error:
        figures["error"] = phase.error
    return figures


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def critical(figures: dict) -> str:
    """The instance's check; for a lost host, whose agent cannot report it, the node's."""
    if figures.get("to_critical") is None and "to_node_failed" in figures:
        return f"{secs(figures['to_node_failed'])} (node)"
    return secs(figures.get("to_critical"))


def _failed(client: dict) -> str:
    text = f"{client['failed']}/{client['requests']}"
    if client["retries"]:
        text += f" ({client['retries']} retried)"
    return text


def consul_template_usage(figures: dict) -> str:
    """An outage's consul-template CPU share and log growth, per LB host (older runs: one
    figure for the single LB)."""
    shares, logs = figures["consul_template_cpu_share"], figures["lb_log_bytes"]
    if not isinstance(shares, dict):
        shares, logs = {"LB": shares}, {"LB": logs}
    return "; ".join(
        f"{lb}: consul-template {share:.1%} of a core, log +{logs[lb]} B"
        for lb, share in shares.items()
    ) + f" in {figures['outage_seconds']:.0f} s"


def side_by_side(single: dict[str, dict], pair: dict[str, dict]) -> Table:
    """Every event of both runs (`lb_events.py --side-by-side`): the time nothing answered
    and the failed GETs per client kind, the single LB beside the two sharing an address."""
    out = Table(title="one LB vs two LBs sharing an address (same events, same load)")
    out.add_column("event")
    for shape in ("one LB", "two LBs"):
        out.add_column(f"{shape}: not serving", justify="right")
        out.add_column(f"{shape}: failed fresh", justify="right")
        out.add_column(f"{shape}: failed keep-alive", justify="right")
    for name in single:
        row = [name]
        for results in (single, pair):
            figures = results.get(name, {"skipped": "not run"})
            if "skipped" in figures:
                row += [f"[dim]{figures['skipped']}[/]", "", ""]
                continue
            clients = figures["clients"]
            gap = secs(figures["serving_gap"]) + ("" if figures["settled"] else " [red]*[/]")
            row += [gap, _failed(clients["fresh"]), _failed(clients["keep-alive"])]
        out.add_row(*row)
    return out


def table(results: dict[str, dict], title: str) -> Table:
    out = Table(title=title)
    out.add_column("event")
    for column in ("to upstream change", "traffic shifted", "to critical", "not serving"):
        out.add_column(column, justify="right")
    out.add_column("failed: fresh", justify="right")
    out.add_column("failed: keep-alive", justify="right")
    out.add_column("reloads", justify="right")
    for name, figures in results.items():
        if "skipped" in figures:
            out.add_row(name, f"[dim]skipped: {figures['skipped']}[/]", *[""] * 6)
            continue
        clients = figures["clients"]
        label = name + ("" if figures["settled"] else " [red](not settled)[/]")
        if "consul_template_cpu_share" in figures:
            label += f"\n[dim]{consul_template_usage(figures)}[/]"
        if "first_answer" in figures:
            label += (
                f"\n[dim]apply {secs(figures['apply_seconds'])}, its first answer through the "
                f"LB after {secs(figures['first_answer'])}[/]"
            )
        if "location_gone" in figures:
            label += (
                f"\n[dim]its location gone after {secs(figures['location_gone'])}; it answered "
                f"{figures['second_service']}[/]"
            )
        out.add_row(
            label,
            secs(figures["to_upstream"]),
            secs(figures.get("traffic_shifted")),
            critical(figures),
            secs(figures["serving_gap"]),
            _failed(clients["fresh"]),
            _failed(clients["keep-alive"]),
            str(figures["reloads"]),
        )
    return out
