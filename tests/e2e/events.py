"""The order of what happened on the lab during an event, read from the lab itself: when
the LB stopped (or started again) routing to an address, when a container was stopped
or started, when each Consul server answered with a leader and every server in its raft
peer set. Request loops cannot tell it: nginx's proxy_next_upstream retries a stopped
instance on the next one, so a client never sees an instance stopped before the LB
dropped it. These can.

Times are Unix seconds. The lab's hosts on the docker road are containers on this
machine's kernel, so their clocks are this machine's: the LB's publish times, Docker's
event times and time.time() here compare directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import pairwise

import httpx

from labctl import security
from tests.e2e.probes import LB, on_host
from tests.support.polling import BackgroundPoll

POLL = BackgroundPoll.interval
# A container stops serving at its first of these events (`docker rm -f` kills it,
# `docker stop` sends a signal first: "kill"), and serves again after "start".
STOPPING = ("kill", "die", "stop", "destroy")


@dataclass
class Publish:
    published: int  # the LB's own clock, whole seconds (lb-publish: `date +%s`)
    reloads: int
    upstreams: dict[str, frozenset[str]]


class LbTimeline(BackgroundPoll):
    """Every configuration the LB published while it ran (its /_lab/lb.json, written by
    lb-publish after each render it handled), polled every 0.1 s in a thread: consul-template
    renders at least lb_wait's 2 s apart, so no publish goes unseen. A context manager."""

    def __init__(self) -> None:
        super().__init__()
        self.publishes: list[Publish] = []
        self.errors = 0

    def poll(self, client: httpx.Client) -> None:
        try:
            state = client.get(f"http://{LB}/_lab/lb.json").json()
        except (httpx.HTTPError, ValueError):
            self.errors += 1  # a restarting LB; its next publish is read then
            return
        publish = Publish(
            state["published"],
            state["reloads"],
            {s: frozenset(m) for s, m in state["upstreams"].items()},
        )
        if not self.publishes or publish != self.publishes[-1]:
            self.publishes.append(publish)

    def __enter__(self) -> LbTimeline:
        super().__enter__()
        # The configuration the LB ran before the event.
        deadline = time.monotonic() + 10
        while not self.publishes and time.monotonic() < deadline:
            time.sleep(POLL)
        assert self.publishes, "the LB's lb.json did not answer"
        return self

    def _first(self, service: str, address: str, present: bool, after: int = 0) -> int | None:
        """The index of the first publish from `after` on that has (or lacks) `address`."""
        for index in range(after, len(self.publishes)):
            if (address in self.publishes[index].upstreams.get(service, frozenset())) == present:
                return index
        return None

    def in_effect_at(self, moment: float) -> int:
        """The index of the configuration the LB ran at `moment` (Unix time): its last
        publish no later than it (publish times are whole seconds, rounded down)."""
        return max(i for i, p in enumerate(self.publishes) if p.published <= moment or i == 0)

    def back_after(self, service: str, address: str, index: int) -> Publish:
        """The first publish after `index` routing to `address` again."""
        again = self._first(service, address, True, index + 1)
        assert again is not None, f"the LB never routed {service} to {address} again"
        return self.publishes[again]


@dataclass
class ContainerEvent:
    time: float
    action: str
    host: str
    name: str


def container_events(
    connections, hosts, role: str, since: float, until: float
) -> list[ContainerEvent]:
    """Docker's own record of the lab containers of `role` (io.labctl.role) on `hosts`
    between `since` and `until`, in time order: starts, kills, stops, removals."""
    events = []
    for host in hosts:
        output = on_host(connections, host, (
            f"docker events --since {since:.3f} --until {until:.3f} --filter type=container "
            f"--filter label=io.labctl.role={role} "
            "--format '{{.TimeNano}} {{.Action}} {{.Actor.Attributes.name}}'"
        ))  # fmt: skip
        for line in output.splitlines():
            nanos, action, name = line.split(maxsplit=2)
            events.append(ContainerEvent(int(nanos) / 1e9, action.split(":")[0], host, name))
    return sorted(events, key=lambda e: e.time)


def _first_event(events, name: str, actions, after: float, host: str | None) -> float | None:
    times = [
        e.time for e in events
        if e.name == name and e.action in actions and e.time > after and host in (None, e.host)
    ]  # fmt: skip
    return times[0] if times else None


def stopped_at(events: list[ContainerEvent], name: str, after: float = 0, host=None) -> float:
    """When container `name` (on `host`, if given) stopped serving: its first stopping
    event after `after`."""
    when = _first_event(events, name, STOPPING, after, host)
    assert when is not None, f"container {name} was never stopped: {events}"
    return when


def started_at(events: list[ContainerEvent], name: str, after: float = 0, host=None) -> float:
    when = _first_event(events, name, ("start",), after, host)
    assert when is not None, f"container {name} was never started: {events}"
    return when


def assert_left_the_lb_before_it_stopped(
    timeline: LbTimeline, events: list[ContainerEvent], service: str, instances: dict[str, str]
) -> dict[str, int]:
    """Each instance (container name -> its address:port) was out of the configuration
    the LB ran when its container stopped; returns, per instance, the index of that
    configuration in the timeline. The LB publishes in whole seconds; an instance
    stopped first would have left the LB only after Consul noticed and consul-template
    waited out lb_wait's minimum (2 s), so the configuration in effect at the stop,
    read with its time rounded down, still routed to it."""
    in_effect = {}
    for name, address in instances.items():
        stopped = stopped_at(events, name)
        index = timeline.in_effect_at(stopped)
        publish = timeline.publishes[index]
        routed = sorted(publish.upstreams.get(service, []))
        print(f"{name}: stopped at {stopped:.2f}; the LB's configuration then (published "
              f"{publish.published}) routes {service} to {routed}")  # fmt: skip
        assert address not in publish.upstreams.get(service, frozenset()), (
            f"{name} ({address}) stopped at {stopped:.2f} while the LB still routed to it "
            f"(its configuration published at {publish.published})"
        )
        in_effect[name] = index
    return in_effect


class ServerWatch(BackgroundPoll):
    """Polls every Consul server's HTTP API every 0.1 s in a thread: for each poll, which
    servers answered with a leader and all of the spec's servers in their raft peer set
    (Consul's /v1/status endpoints): "whole". A context manager."""

    timeout = 1.0

    def __init__(self, spec) -> None:
        super().__init__()
        self.servers = {h.name: str(h.address) for h in spec.consul_servers}
        self.polls: list[tuple[float, dict[str, bool]]] = []
        self._headers = {"X-Consul-Token": security.token(spec, "read")}

    def _whole(self, client: httpx.Client, address: str) -> bool:
        try:
            base = f"http://{address}:8500/v1/status"
            leader = client.get(f"{base}/leader", headers=self._headers)
            peers = client.get(f"{base}/peers", headers=self._headers)
            return (
                leader.status_code == 200 and leader.json() not in ("", None)
                and peers.status_code == 200 and len(peers.json()) == len(self.servers)
            )  # fmt: skip
        except (httpx.HTTPError, ValueError):
            return False

    def poll(self, client: httpx.Client) -> None:
        now = time.time()
        self.polls.append((now, {n: self._whole(client, a) for n, a in self.servers.items()}))

    def whole_between(self, name: str, start: float, end: float) -> bool:
        """Server `name` answered whole at some poll strictly between start and end."""
        return any(start < t < end and whole[name] for t, whole in self.polls)

    def seconds_not_whole(self, name: str | None = None) -> float:
        """About how long server `name` (None: every server) did not answer whole, from
        one poll to the next."""
        return sum(
            later - t
            for (t, whole), (later, _) in pairwise(self.polls)
            if not (whole[name] if name else any(whole.values()))
        )
