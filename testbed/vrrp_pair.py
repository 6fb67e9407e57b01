"""LB hosts sharing one virtual address with keepalived, on a Docker bridge of their own:
the prototype behind docs/lb-pair.md, for tests/unit/test_vrrp_pair.py and
bench/vrrp_pair.py.

Each LB host is three containers in one network namespace, as the lab's LB host runs
its containers with --net=host:
  <prefix>-<host>             the host: holds the namespace and its address on the bridge
  <prefix>-<host>-lb          nginx (testbed/vrrp_pair_image), naming itself
  <prefix>-<host>-keepalived  the real keepalived image (templates/keepalived), its
                              configuration rendered from keepalived.conf.j2 as pyinfra's
                              files.template renders it
The LB and keepalived share a volume, as the LB's state volume: keepalived's state file
(vrrp.json) lands where the LB serves /_lab/. A client container on the bridge runs the
request loops (testbed/vrrp_driver.py) against the virtual address; an observer
container beside it asks who holds the address (ARP), leaving the client's cache alone.

Nothing is bind-mounted and no address of the bridge is dialled from here: files go
into containers through the engine and everything on the bridge is done from a
container on it, so this works the same through a Docker socket shared into another
container (CI's unit job) as on the engine's own machine. Everything carries LABEL with
the pair's prefix and is removed on exit, leftovers of an earlier run first.
"""

from __future__ import annotations

import fcntl
import io
import ipaddress
import json
import re
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import docker
from docker.errors import NotFound
from jinja2 import Environment, StrictUndefined, Template

from labctl.images.engine import present
from labctl.images.on_control import build
from labctl.images.spec_images import LabImage
from labctl.images.tags import image_namespace, recipe_tag
from labctl.spec import DockerProvider, Versions
from roles.contract import ARP_OWN_INTERFACE_ONLY, TEMPLATES
from testbed.standin_build import BUILD_LOCK

LABEL = "io.labctl.vrrp-pair"
KEEPALIVED_VERSION = Versions().keepalived  # the lab's pin
KEEPALIVED_RECIPE = TEMPLATES / "keepalived"
KEEPALIVED_TEMPLATE = KEEPALIVED_RECIPE / "keepalived.conf.j2"
SUPPORT_RECIPE = Path(__file__).resolve().parent / "vrrp_pair_image"
CLIENT_FILES = (Path(__file__).resolve().parent / "vrrp_driver.py",
                Path(__file__).resolve().parent / "traffic.py")  # fmt: skip
VRRP_CAPS = ["NET_ADMIN", "NET_RAW", "NET_BROADCAST"]
# Host number n (1, 2, ...) is .10+n on the bridge; the client .50, the observer .51; the
# address .100.
HOST_OFFSET, CLIENT_OFFSET, VIRTUAL_OFFSET = 10, 50, 100
INTERFACE = "eth0"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` at the end
    (an OSError, ValueError or KeyError meanwhile counts as not yet)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last error: {last_error})")


@cache
def _keepalived_template() -> Template:
    # As pyinfra's files.template makes its template (pyinfra.api.util.get_template).
    environment = Environment(undefined=StrictUndefined, keep_trailing_newline=True)
    return environment.from_string(KEEPALIVED_TEMPLATE.read_text())


def render_keepalived_conf(**variables: object) -> str:
    """keepalived.conf.j2 rendered as pyinfra's files.template renders a template."""
    return _keepalived_template().render(**variables)


def _build(client: docker.DockerClient, image: LabImage) -> str:
    base = DockerProvider().base_image
    BUILD_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not present(client, image.ref):
            build(client, image, base)
    return image.ref


def keepalived_image(client: docker.DockerClient) -> str:
    """The product's keepalived image (templates/keepalived), built when missing."""
    args = (("KEEPALIVED_VERSION", KEEPALIVED_VERSION),)
    base = DockerProvider().base_image
    ref = f"{image_namespace()}/keepalived:{recipe_tag(KEEPALIVED_RECIPE, base, *args[0])}"
    return _build(client, LabImage("keepalived", ref, (), KEEPALIVED_RECIPE, build_args=args))


def support_image(client: docker.DockerClient) -> str:
    base = DockerProvider().base_image
    ref = f"{image_namespace()}/vrrp-pair-support:{recipe_tag(SUPPORT_RECIPE, base)}"
    return _build(client, LabImage("vrrp-pair-support", ref, (), SUPPORT_RECIPE))


def put_files(container, directory: str, files: dict[str, bytes], mode: int = 0o644) -> None:
    """Copy files into a (created or running) container, through the engine."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    container.put_archive(directory, buffer.getvalue())


def is_answer(outcome: str) -> bool:
    """A logged outcome that is an answer (the X-Instance that served it)."""
    return not outcome.startswith(("error ", "HTTP ", "retry"))


@dataclass
class ClientRun:
    """One request loop's log over an event: [(monotonic time, outcome), ...]."""

    kind: str
    log: list[tuple[float, str]]
    retried: int

    @property
    def answered(self) -> int:
        return sum(1 for _, outcome in self.log if is_answer(outcome))

    @property
    def failures(self) -> list[tuple[float, str]]:
        return [(t, outcome) for t, outcome in self.log if outcome.startswith(("error ", "HTTP "))]

    def first_answer_by(self, name: str, after: float) -> float | None:
        """When `name` first answered after monotonic time `after`."""
        return next((t for t, outcome in self.log if t > after and outcome == name), None)

    def longest_wait(self) -> float:
        """The longest this client went without an answer, its requests' own time
        included: from one answer to the next, or to the end of its log (a request
        that hung until its timeout and failed ends it)."""
        answers = [t for t, outcome in self.log if is_answer(outcome)]
        ends = answers + ([self.log[-1][0]] if self.log else [])
        return max((b - a for a, b in pairwise(ends)), default=0.0)

    def rate(self) -> float:
        """Answers per second over the run."""
        if len(self.log) < 2:
            return 0.0
        return self.answered / (self.log[-1][0] - self.log[0][0])


@dataclass
class Traffic:
    """The client loops of one `VrrpPair.traffic()` block; `runs` once it has ended."""

    runs: dict[str, ClientRun] = field(default_factory=dict)

    def __getitem__(self, kind: str) -> ClientRun:
        return self.runs[kind]


class VrrpPair:
    """`hosts` LB hosts (lb1 the preferred master) and a client on a bridge `subnet`
    of their own; a context manager. `unicast`: keepalived's unicast peers instead of
    multicast."""

    def __init__(
        self,
        prefix: str,
        subnet: str,
        hosts: int = 2,
        unicast: bool = False,
        advert_int: float = 0.2,
    ) -> None:
        self.prefix = prefix
        self.subnet = ipaddress.IPv4Network(subnet)
        self.names = [f"lb{n}" for n in range(1, hosts + 1)]
        self.unicast = unicast
        self.advert_int = advert_int
        self.address = str(self.subnet[VIRTUAL_OFFSET])
        self.engine = docker.from_env()
        self.labels = {LABEL: prefix}

    # -- naming --------------------------------------------------------------------
    def host_address(self, name: str) -> str:
        return str(self.subnet[HOST_OFFSET + self.names.index(name) + 1])

    def container(self, name: str, part: str = ""):
        suffix = f"-{part}" if part else ""
        return self.engine.containers.get(f"{self.prefix}-{name}{suffix}")

    @property
    def network_name(self) -> str:
        return f"{self.prefix}-net"

    def keepalived_conf(self, name: str) -> str:
        return render_keepalived_conf(
            vrrp_hosts=[{"name": n, "address": self.host_address(n)} for n in self.names],
            vrrp_host=name,
            vrrp_address=self.address,
            vrrp_prefixlen=self.subnet.prefixlen,
            vrrp_interface=INTERFACE,
            vrrp_advert_int=self.advert_int,
            vrrp_unicast=self.unicast,
        )

    # -- life cycle ----------------------------------------------------------------
    def __enter__(self) -> VrrpPair:
        self.remove()
        try:
            self._create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _create(self) -> None:
        self.keepalived_ref = keepalived_image(self.engine)
        self.support_ref = support_image(self.engine)
        self.engine.networks.create(
            self.network_name,
            driver="bridge",
            ipam=docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=str(self.subnet))]
            ),
            labels=self.labels,
        )
        for name in self.names:
            self.engine.volumes.create(f"{self.prefix}-{name}-state", labels=self.labels)
            self._run_host(name)
            self.start_lb(name, create=True)
            self.start_keepalived(name, create=True)
        self._run_client()
        # The first LB is master once its track script has seen nginx serve (rise 2).
        self.wait_holders([self.names[0]], seconds=20, what="the first LB holding the address")
        wait_for(lambda: self.answering() == self.names[0], 10, "the address answering")

    def _on_bridge(self, name: str, offset: int, **options):
        endpoint = self.engine.api.create_endpoint_config(ipv4_address=str(self.subnet[offset]))
        return self.engine.containers.run(
            self.support_ref,
            name=name,
            hostname=name,
            detach=True,
            labels=self.labels,
            network=self.network_name,
            networking_config={self.network_name: endpoint},
            **options,
        )

    def _run_host(self, name: str) -> None:
        # iptables and ip need NET_ADMIN (and iptables NET_RAW) in the namespace; ARP
        # as the lab sets it on an LB host of a pair (the address on loopback unannounced).
        self._on_bridge(
            f"{self.prefix}-{name}",
            HOST_OFFSET + self.names.index(name) + 1,
            cap_add=["NET_ADMIN", "NET_RAW"],
            sysctls={key: str(value) for key, value in ARP_OWN_INTERFACE_ONLY.items()},
            volumes={f"{self.prefix}-{name}-state": {"bind": "/var/lib/lb", "mode": "ro"}},
        )

    def _run_client(self) -> None:
        client = self._on_bridge(f"{self.prefix}-client", CLIENT_OFFSET)
        put_files(client, "/opt", {f"vrrp-pair/{p.name}": p.read_bytes() for p in CLIENT_FILES})
        # A second client for questions that change what a client knows (its ARP cache:
        # `ip neigh flush` needs NET_ADMIN, and arping's answers update it), so that the
        # request loops' client keeps what it learned from the LBs alone.
        self._on_bridge(f"{self.prefix}-observer", CLIENT_OFFSET + 1, cap_add=["NET_ADMIN"])

    def _in_host(self, name: str, part: str, image: str, **options):
        return self.engine.containers.create(
            image,
            name=f"{self.prefix}-{name}-{part}",
            labels=self.labels,
            network_mode=f"container:{self.prefix}-{name}",
            volumes={f"{self.prefix}-{name}-state": {"bind": "/var/lib/lb", "mode": "rw"}},
            **options,
        )

    def start_lb(self, name: str, create: bool = False) -> None:
        if create:
            self._in_host(
                name, "lb", self.support_ref, command=["lb-start", name, str(self.subnet)]
            ).start()
        else:
            self.container(name, "lb").start()

    def start_keepalived(self, name: str, create: bool = False) -> None:
        if not create:
            self.container(name, "keepalived").start()
            return
        keepalived = self._in_host(name, "keepalived", self.keepalived_ref, cap_add=VRRP_CAPS,
                                   environment={"LB_ADDRESS": self.address})  # fmt: skip
        conf = self.keepalived_conf(name).encode()
        put_files(keepalived, "/etc/keepalived", {"keepalived.conf": conf})
        keepalived.start()

    def remove(self) -> None:
        """Every container, volume and network of this prefix, running or not."""
        selector = {"label": f"{LABEL}={self.prefix}"}
        for container in self.engine.containers.list(all=True, filters=selector):
            container.remove(force=True, v=True)
        for volume in self.engine.volumes.list(filters=selector):
            volume.remove(force=True)
        for network in self.engine.networks.list(filters=selector):
            network.remove()

    # -- what is true now -------------------------------------------------------
    def _exec(self, container, *command: str) -> str:
        result = container.exec_run(list(command))
        if result.exit_code != 0:
            raise RuntimeError(
                f"{' '.join(command)} in {container.name} failed ({result.exit_code}): "
                f"{result.output.decode(errors='replace').strip()}"
            )
        return result.output.decode()

    def _running(self, name: str) -> bool:
        try:
            return self.container(name).status == "running"
        except NotFound:
            return False

    def holds(self, name: str) -> bool:
        """Whether the kernel of this LB host has the virtual address (False when the
        host is down)."""
        if not self._running(name):
            return False
        # On the bridge (scope global), not the copy on loopback (scope host).
        out = self._exec(self.container(name), "ip", "-o", "-4", "addr", "show", "scope",
                         "global", "to", f"{self.address}/32")  # fmt: skip
        return bool(out.strip())

    def holders(self) -> list[str]:
        return [name for name in self.names if self.holds(name)]

    def wait_holders(self, names: list[str], seconds: float, what: str) -> None:
        wait_for(lambda: self.holders() == names, seconds, what)

    def state(self, name: str) -> dict:
        """keepalived's state file, as the LB publishes it (/_lab/vrrp.json)."""
        return json.loads(self._exec(self.container(name), "cat", "/var/lib/lb/vrrp.json"))

    def states(self) -> dict[str, str]:
        """Each running LB host's keepalived state, as its state file says."""
        return {name: self.state(name)["state"] for name in self.names if self._running(name)}

    def answering(self) -> str | None:
        """Which LB answers a GET through the virtual address from the client, if any."""
        result = self.container("client").exec_run(
            ["curl", "-s", "-m", "1", "-o", "/dev/null", "-w", "%header{x-instance}",
             f"http://{self.address}/"]
        )  # fmt: skip
        answer = result.output.decode().strip()
        return answer if result.exit_code == 0 and answer else None

    def ask_anew(self, times: int) -> dict[str, int]:
        """GET through the address `times` from the observer, its ARP entry for the address
        flushed before each: a client that has to ask who holds it. {the LB that
        answered, or "failed": count}."""
        script = (
            f"for i in $(seq {times}); do ip neigh flush to {self.address}; "
            f"curl -s -m 1 -o /dev/null -w '%header{{x-instance}}\\n' http://{self.address}/ "
            "|| echo failed; done"
        )
        lines = self._exec(self.container("observer"), "sh", "-c", script).split()
        return {answer: lines.count(answer) for answer in sorted(set(lines))}

    def arp_answers(self, requests: int = 3) -> dict[str, int]:
        """Who answers ARP requests for the address (broadcast, from the observer):
        {LB host: replies}."""
        macs = {}
        for name in self.names:
            if self._running(name):
                networks = self.container(name).attrs["NetworkSettings"]["Networks"]
                macs[networks[self.network_name]["MacAddress"].lower()] = name
        # -b: every request broadcast (arping would go on by unicast to the first that
        # answered); -c alone: `requests` requests sent (with -w it would count replies).
        # Its exit status says whether any went unanswered; the replies are what counts.
        output = self.container("observer").exec_run(
            ["timeout", str(requests + 3), "arping", "-b", "-c", str(requests), "-I", INTERFACE,
             self.address]
        ).output.decode().lower()  # fmt: skip
        replies = re.findall(r"reply from [\d.]+ \[([0-9a-f:]+)\]", output)
        return {name: replies.count(mac) for mac, name in macs.items() if mac in replies}

    # -- events -------------------------------------------------------------------
    def kill_host(self, name: str) -> None:
        """Power off. The host's container first: the engine removes its interface at
        once, so the network hears nothing more from it (neither keepalived's goodbye nor
        a refusal from a dying nginx), as when a machine loses power; then the rest."""
        for part in ("", "keepalived", "lb"):
            self.container(name, part).kill()

    def kill_lb(self, name: str) -> None:
        self.container(name, "lb").kill()

    def stop_lb(self, name: str) -> None:
        self.container(name, "lb").stop(timeout=10)

    def kill_keepalived(self, name: str) -> None:
        self.container(name, "keepalived").kill()

    def hang_lb(self, name: str, hung: bool) -> None:
        """Freeze nginx (docker pause): the kernel still accepts connections, nobody
        answers them."""
        lb = self.container(name, "lb")
        lb.pause() if hung else lb.unpause()

    def restore_host(self, name: str) -> None:
        """Power a killed host on again: its namespace, then keepalived and the LB."""
        self.container(name).start()
        for part in ("lb", "keepalived"):
            self.container(name, part).start()

    def drain(self, name: str, on: bool) -> None:
        """The planned hand-over's lever: the drain file keepalived tracks (inotify)."""
        self._exec(
            self.container(name, "keepalived"), "sh", "-c",
            f"echo {int(on)} > /var/lib/keepalived/drain.tmp"
            " && mv /var/lib/keepalived/drain.tmp /var/lib/keepalived/drain",
        )  # fmt: skip

    def handover(self, name: str, *arguments: str) -> str:
        """The lab's own planned hand-over script in this LB's keepalived container
        (templates/keepalived/vrrp-handover): `drain` (towards every other LB), `ready`,
        `outranked` (towards the LBs ahead of this one), `undrain`."""
        others = [self.host_address(n) for n in self.names if n != name]
        higher = [self.host_address(n) for n in self.names[: self.names.index(name)]]
        command, *rest = arguments
        if command == "drain":
            rest = [name, self.address, "10", *others]
        elif command == "outranked":
            rest = [self.address, *higher]
        return self._exec(self.container(name, "keepalived"), "vrrp-handover", command, *rest)

    def partition(self, name: str, cut: bool) -> None:
        """Drop VRRP (IP protocol 112) to and from this LB host, and nothing else: the
        two keepalived stop hearing each other while clients still reach both."""
        action = "-I" if cut else "-D"
        host = self.container(name)
        for chain in ("INPUT", "OUTPUT"):
            self._exec(host, "iptables", action, chain, "-p", "112", "-j", "DROP")

    # -- traffic ------------------------------------------------------------------
    @contextmanager
    def traffic(self) -> Iterator[Traffic]:
        """The client's three loops (vrrp_driver.py) for the duration of the block."""
        client = self.container("client")
        run = uuid.uuid4().hex[:8]
        out, stop = f"/tmp/run-{run}.json", f"/tmp/stop-{run}"
        client.exec_run(
            ["python3", "/opt/vrrp-pair/vrrp_driver.py", f"http://{self.address}/", out, stop],
            detach=True,
        )
        ready = lambda: client.exec_run(["test", "-e", f"{out}.ready"]).exit_code == 0  # noqa: E731
        wait_for(ready, 20, "every request loop answering")
        traffic = Traffic()
        try:
            yield traffic
        finally:
            self._exec(client, "touch", stop)
            done = lambda: client.exec_run(["test", "-e", out]).exit_code == 0  # noqa: E731
            wait_for(done, 20, "the request loops' logs")
            result = json.loads(self._exec(client, "cat", out))
            traffic.runs = {
                loop["kind"]: ClientRun(loop["kind"], [tuple(e) for e in loop["log"]],
                                        loop["retried"])
                for loop in result["loops"]
            }  # fmt: skip
