"""The events of issue 19 on a VRRP pair (testbed/vrrp_pair.py), under the
client's request loops, each measured the same way for bench/vrrp_pair.py (which prints
them) and tests/unit/test_vrrp_pair.py (which asserts on them).

Every scenario starts with the first LB (the preferred master) holding the address and
serving, and leaves the pair so again. Each returns one Measured per move of the address.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from testbed.vrrp_pair import ClientRun, VrrpPair, wait_for

# How long the loops go on after the address settled: one SYN retransmission (Linux
# sends the first after 1 s) and a little, so a fresh client whose connection attempt
# went to the old holder is seen to get through.
TAIL = 1.5
# Before the event: the loops' steady state.
LEAD = 0.5
# The longest any move may take before a scenario gives up on it.
SETTLE = 10
# Requests made, each by a client that asks anew who holds the address, where two hold it.
NEW_CLIENTS = 20


@dataclass
class Measured:
    """One move (or claim) of the address, seen by the pair and by the clients.

    moved:     event -> keepalived on `to` entered MASTER (its state file's `since`);
               None when it was master before the event
    answering: event -> the probe loop's first answer from `to` (the address answers)
    holders:   who held the address when it settled
    states:    each running LB's keepalived state then (its state file)
    runs:      the client loops over the event ("fresh", "keepalive", "probe")
    at:        the event's monotonic time (the loops' clock)
    settled:   when the address was seen settled (monotonic), TAIL before the loops ended
    new_clients: for events that leave the address on two hosts, who served clients
               that have to ask who holds it (VrrpPair.ask_anew), else None
    arp:       then too, who answered ARP requests for the address (VrrpPair.arp_answers)
    """

    event: str
    to: str
    moved: float | None
    answering: float | None
    holders: list[str]
    states: dict[str, str]
    runs: dict[str, ClientRun]
    at: float
    settled: float
    new_clients: dict[str, int] | None = None
    arp: dict[str, int] | None = None

    def failures_after(self, kind: str, seconds: float) -> list[tuple[float, str]]:
        """The failed requests of one client kind later than `seconds` after the event."""
        return [(t, o) for t, o in self.runs[kind].failures if t > self.at + seconds]


def _event(
    pair: VrrpPair,
    name: str,
    to: str,
    action: Callable[[], None],
    until: Callable[[], object],
    ask_anew: bool = False,
) -> Measured:
    """Run `action` under the loops, wait `until` the address settled, and measure the
    move to `to` (and, with `ask_anew`, new clients, VrrpPair.ask_anew)."""
    with pair.traffic() as traffic:
        time.sleep(LEAD)
        at, wall = time.monotonic(), time.time()
        action()
        wait_for(until, SETTLE, f"{name}: the address settling on {to}")
        settled_at = time.monotonic()
        holders, states = pair.holders(), pair.states()
        time.sleep(TAIL)
    # Once the loops have ended, from the observer: the ARP requests load the bridge.
    new_clients = pair.ask_anew(NEW_CLIENTS) if ask_anew else None
    arp = pair.arp_answers() if ask_anew else None
    state = pair.state(to)
    # None when `to` did not become master after the event (it already was).
    moved = state["since"] - wall if state["state"] == "MASTER" and state["since"] > wall else None
    probe = traffic["probe"].first_answer_by(to, at)
    return Measured(
        event=name,
        to=to,
        moved=moved,
        answering=None if probe is None else probe - at,
        holders=holders,
        states=states,
        runs=traffic.runs,
        at=at,
        settled=settled_at,
        new_clients=new_clients,
        arp=arp,
    )  # fmt: skip


def _serves_alone(pair: VrrpPair, name: str) -> Callable[[], bool]:
    return lambda: pair.holders() == [name] and pair.answering() == name


def _back_to(pair: VrrpPair, name: str, recover: Callable[[], None]) -> Measured:
    """Recover the first LB and measure the address coming back to it (preemption)."""
    master = pair.names[0]
    return _event(pair, name, master, recover, _serves_alone(pair, master))


def _away_and_back(
    pair: VrrpPair,
    away: str,
    fail: Callable[[str], None],
    back: str,
    recover: Callable[[str], None],
) -> list[Measured]:
    """`fail` the master (the address goes to the backup), then `recover` it."""
    master, backup = pair.names[:2]
    gone = _event(pair, away, backup, lambda: fail(master), _serves_alone(pair, backup))
    return [gone, _back_to(pair, back, lambda: recover(master))]


def host_lost(pair: VrrpPair) -> list[Measured]:
    """The master's host powered off, then on again."""
    return _away_and_back(
        pair,
        "master's host powered off",
        pair.kill_host,
        "its host powered on again",
        pair.restore_host,
    )


def lb_killed(pair: VrrpPair) -> list[Measured]:
    """The master's LB container killed (keepalived lives on: the track script acts),
    then started again."""
    return _away_and_back(
        pair, "master's LB killed", pair.kill_lb, "its LB started again", pair.start_lb
    )


def lb_hung(pair: VrrpPair) -> list[Measured]:
    """The master's nginx frozen (accepts, never answers), then thawed."""
    return _away_and_back(
        pair,
        "master's nginx hung",
        lambda name: pair.hang_lb(name, True),
        "its nginx thawed",
        lambda name: pair.hang_lb(name, False),
    )


def planned_handover(pair: VrrpPair) -> list[Measured]:
    """What labctl does before it stops the master's LB (a rolling apply, `fail` on the
    ssh road), with the lab's own script: drain it (new connections held while the
    address moves, the backup confirmed holding it), stop its LB; later start it, wait
    until it serves, drain the backup towards it (the move back planned too), and lift
    both drains, the master's first (roles/lb.py)."""
    master, backup = pair.names[:2]

    def hand_over() -> None:
        pair.handover(master, "drain")
        pair.stop_lb(master)

    away = _event(
        pair,
        "planned: drained, then its LB stopped",
        backup,
        hand_over,
        _serves_alone(pair, backup),
    )

    def give_back() -> None:
        pair.start_lb(master)
        pair.handover(master, "ready")
        if pair.handover(backup, "outranked").strip():
            pair.handover(backup, "drain")
        for name in (master, backup):
            pair.handover(name, "undrain")

    back = _back_to(pair, "planned: LB started, backup drained towards it", give_back)
    return [away, back]


def partition(pair: VrrpPair) -> list[Measured]:
    """VRRP between the two cut (clients still reach both): both claim the address;
    then healed."""
    master, backup = pair.names[:2]
    both = [master, backup]
    split = _event(
        pair,
        "partition: both hold the address",
        backup,
        lambda: pair.partition(master, True),
        lambda: pair.holders() == both and pair.state(backup)["state"] == "MASTER",
    )
    healed = _back_to(pair, "partition healed", lambda: pair.partition(master, False))
    return [split, healed]


def _both_hold(pair: VrrpPair) -> Callable[[], bool]:
    master, backup = pair.names[:2]
    return lambda: pair.holders() == [master, backup] and pair.state(backup)["state"] == "MASTER"


def keepalived_killed(pair: VrrpPair) -> list[Measured]:
    """keepalived killed on the master, nginx left serving: the backup takes over and the
    old master's kernel keeps the address (nobody removes it), but a client sent there is
    served. Restarting keepalived removes it."""
    master, backup = pair.names[:2]
    killed = _event(
        pair,
        "master's keepalived killed",
        backup,
        lambda: pair.kill_keepalived(master),
        _both_hold(pair),
        ask_anew=True,
    )
    back = _back_to(pair, "its keepalived started again", lambda: pair.start_keepalived(master))
    return [killed, back]


def lb_with_keepalived_killed(pair: VrrpPair) -> list[Measured]:
    """The other shape, keepalived inside the LB container, at a `docker kill` of the
    master's LB container: keepalived and nginx killed together, the host up. The backup
    takes over; the old host keeps the address with nothing listening on port 80, and a
    client that asks who holds the address may be answered by it. Starting both again
    removes it."""
    master, backup = pair.names[:2]

    def kill_both() -> None:
        pair.kill_keepalived(master)
        pair.kill_lb(master)

    def start_both() -> None:
        pair.start_lb(master)
        pair.start_keepalived(master)

    killed = _event(pair, "LB with keepalived inside killed", backup, kill_both,
                    _both_hold(pair), ask_anew=True)  # fmt: skip
    back = _back_to(pair, "both started again", start_both)
    return [killed, back]


SCENARIOS: dict[str, Callable[[VrrpPair], list[Measured]]] = {
    "host_lost": host_lost,
    "lb_killed": lb_killed,
    "lb_hung": lb_hung,
    "planned": planned_handover,
    "partition": partition,
    "keepalived_killed": keepalived_killed,
    "lb_with_keepalived_killed": lb_with_keepalived_killed,
}
