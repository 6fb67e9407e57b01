"""The contract between labctl and the roles: every fact both sides use, and the typed
data labctl hands each host's roles.

The roles (pyinfra deploys) import nothing from labctl, and labctl imports nothing
from the roles but this module, which imports nothing of the project. What one side
puts on a host and the other finds there (labels, paths, container names, ports, the
LB's published record) is named here once.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Literal

# --- Labels on what the lab makes ------------------------------------------------------

# Every container, volume and network the lab creates carries LAB_LABEL=<lab name>, so
# `down` finds them even after a failed or partial `up`.
LAB_LABEL = "io.labctl.lab"
# Which role made a container (ROLES below).
ROLE_LABEL = "io.labctl.role"
# A hash of everything a container was created from: pyinfra's docker.container does
# not notice changed arguments; this label does.
SPEC_LABEL = "io.labctl.spec"

# The roles whose containers carry ROLE_LABEL.
CONSUL_ROLE = "consul"
DEMO_SERVICE_ROLE = "demo_service"
LB_ROLE = "lb"
REGISTRATOR_ROLE = "registrator"
# keepalived beside the LB, on each LB host of a lab with more than one (role lb).
KEEPALIVED_ROLE = "keepalived"

# --- Containers ----------------------------------------------------------------------

CONSUL_CONTAINER = "consul"
LB_CONTAINER = "lb"
# Beside the agent on every agent host, once any service is registrator's.
REGISTRATOR_CONTAINER = "registrator"
KEEPALIVED_CONTAINER = "keepalived"
# What every lab container runs with: the host's network, as in the seed (Consul, the
# instances and the LB listen on the host's address), and a restart after any exit or
# reboot, unless someone stopped it on purpose.
LAB_CONTAINER_ARGS = ("--net=host", "--restart=unless-stopped")

# --- Consul --------------------------------------------------------------------------

# Every agent's HTTP API (the seed's -client=0.0.0.0): the roles reach their own host's
# agent on loopback, labctl reaches any agent on its host's address.
CONSUL_HTTP_PORT = 8500
LOCAL_CONSUL = f"http://127.0.0.1:{CONSUL_HTTP_PORT}"
# The Meta key of every registration the lab makes, valued with the role that made it
# (DEMO_SERVICE_ROLE): what the lab may deregister, and `labctl verify` looks for.
MANAGED_BY_META = "lab_managed"

# --- On-host paths -------------------------------------------------------------------

# Configuration: every role's directory sits under this one (teardown removes it whole).
LAB_CONFIG_ROOT = "/etc/lab"
CONSUL_CONFIG_DIR = f"{LAB_CONFIG_ROOT}/consul"
# Root-only: the host's Consul secrets. TOKEN_HEADER holds the host's registration token
# as an HTTP header (for curl -H @file), CONSUL_TEMPLATE_TOKEN consul-template's token.
SECRETS_DIR = f"{LAB_CONFIG_ROOT}/secrets"
TOKEN_HEADER = f"{SECRETS_DIR}/consul.header"
CONSUL_TEMPLATE_TOKEN = f"{SECRETS_DIR}/consul-template.token"
# Registrator's token, mounted read-only into its container (CONSUL_HTTP_TOKEN_FILE).
REGISTRATOR_TOKEN = f"{SECRETS_DIR}/registrator.token"
# What the lab keeps on a host besides containers, volumes and configuration.
HOST_STATE_DIR = "/var/lib/lab"
# One line: the name of the lab this machine holds (roles/machine.py writes it first;
# `labctl up` and `down` of another lab refuse the machine).
LAB_MARK = f"{HOST_STATE_DIR}/lab"
# The images the lab loaded, pulled or built here, one reference a line: teardown
# removes those and no others.
IMAGE_RECORD = f"{HOST_STATE_DIR}/images"
# The host-side image resolver (templates/images/lab-image), and its uploads.
LAB_IMAGE_TOOL = f"{HOST_STATE_DIR}/bin/lab-image"
UPLOADS_DIR = f"{HOST_STATE_DIR}/uploads"
# Image archives from the control machine wait here, until loaded.
ARCHIVE_PREFIX = "/tmp/lab-images-"
# The waits of rolling changes (templates/lab-wait), installed by role consul.
LAB_WAIT = "/usr/local/bin/lab-wait"

# --- The LB --------------------------------------------------------------------------

# The server an upstream with no healthy instance gets (templates/lb/service.ctmpl), so
# nginx, which refuses an empty upstream, answers 502 for it. No member of the upstream:
# lb-publish leaves it out of lb.json. The two templates spell it too
# (tests/unit/test_lb_state.py holds them to this).
LB_FALLBACK_SERVER = "127.0.0.1:65535"
# What the LB publishes under /_lab/ for the lab's network (templates/lb/lb-publish):
# {"upstreams": {service: ["address:port", ...]}, "reloads", "rejected", ...}, from the
# configuration nginx runs. labctl, lab-wait and the LB's page all read it.
LB_RECORD_PATH = "/_lab/lb.json"
# What the spec says of its services that Consul does not (who registers each one:
# {service: "lab" | "registrator"}), for the LB's page: written by role lb on the host,
# mounted read-only under the LB's /_lab/.
LB_SPEC_DIR = f"{LAB_CONFIG_ROOT}/lb"
LB_REGISTRATION_FILE = "registration.json"
LB_REGISTRATION_PATH = f"/_lab/spec/{LB_REGISTRATION_FILE}"

# What each LB's keepalived publishes beside it (templates/keepalived/vrrp-notify):
# {"host", "address", "state": MASTER|BACKUP|FAULT|STOP, "priority", "since", "updated"}.
VRRP_RECORD_PATH = "/_lab/vrrp.json"
# keepalived's configuration (rendered from templates/keepalived/keepalived.conf.j2),
# mounted as a directory: files.template replaces the file, a file mount would keep
# the old one.
KEEPALIVED_CONFIG_DIR = f"{LAB_CONFIG_ROOT}/keepalived"
# The planned hand-over's lever: `drain` in this directory holds 1 (this LB gives the
# address away) or 0; mounted into the keepalived container at /var/lib/keepalived.
KEEPALIVED_STATE_DIR = f"{HOST_STATE_DIR}/keepalived"
KEEPALIVED_DRAIN_FILE = f"{KEEPALIVED_STATE_DIR}/drain"
# In the keepalived container: drain this LB and wait until another holds the address
# and serves, or give it back (templates/keepalived/vrrp-handover).
VRRP_HANDOVER = "vrrp-handover"
# Every LB host of a pair keeps the shared address on its loopback too (keepalived's
# start.sh, given it in LB_ADDRESS), so that an LB that has just lost the address can
# still send the answers it owes from it; these settings keep that copy unannounced:
# the host answers ARP only for addresses on the interface asked (arp_ignore 1) and
# names only that interface's addresses in its own ARP requests (arp_announce 2). The
# kernel uses the higher of `all` and the interface's value for both.
ARP_OWN_INTERFACE_ONLY = {"net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2}
# Where they are kept for the next boot (existing machines, VirtualBox's VMs).
LB_SYSCTL_FILE = "/etc/sysctl.d/60-lab-lb-pair.conf"


# How long a planned hand-over waits for another LB to take the address (role lb's
# lb_handover_timeout by default; `labctl fail` on existing machines).
VRRP_HANDOVER_SECONDS = 10


def vrrp_drain_command(host: str, address: str, peers: Iterable[str], seconds: int) -> str:
    """The planned hand-over's first half, run on the LB host `host` before its LB stops:
    the address to another LB (`peers`: the other LBs' own addresses) within `seconds`,
    or nothing changed and a non-zero exit."""
    return shlex.join(["docker", "exec", KEEPALIVED_CONTAINER, VRRP_HANDOVER, "drain", host,
                       address, str(seconds), *peers])  # fmt: skip


def lb_serves_again_command(container: str = LB_CONTAINER) -> str:
    """After the LB container `container` started again: wait (a minute at most) until it
    serves its latest render (templates/lb/lb-health)."""
    name = shlex.quote(container)
    return f"timeout 60 sh -c 'until docker exec {name} lb-health >/dev/null; do sleep 1; done'"


# After a replaced or restarted LB of a pair: wait until it serves (it stays drained).
VRRP_READY_COMMAND = f"docker exec {KEEPALIVED_CONTAINER} {VRRP_HANDOVER} ready"
# The last step, on every LB host in priority order once the first LB that serves holds
# the address: the drain lifted (nothing when there is none), moving nothing.
VRRP_UNDRAIN_COMMAND = f"docker exec {KEEPALIVED_CONTAINER} {VRRP_HANDOVER} undrain"


def vrrp_outranked_command(address: str, higher: Iterable[str]) -> str:
    """Prints, when this LB host holds `address` and an LB ahead of it in priority order
    (`higher`: their own addresses) serves, that LB's address: the holder is then drained
    (a planned move) so that the address ends with the first LB that serves."""
    return shlex.join(["docker", "exec", KEEPALIVED_CONTAINER, VRRP_HANDOVER, "outranked",
                       address, *higher])  # fmt: skip

# --- Files on the control machine ----------------------------------------------------

# The image recipes, the LB's templates and the programs the roles install.
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


# --- Run flags: what labctl passes with pyinfra's --data for one run (deploy.py) -----

# AGENTS_ONLY: the roles up to Consul only (an `up` with ACLs, before labctl can make
# the tokens the other roles need: they need a leader).
STAGE = "lab_stage"
AGENTS_ONLY = "agents"
# HOST_ONLY: the machine's mark, its engine and its images only (the first `up` of a lab
# that keeps a host box: labctl/box.py boxes the host at that point, before anything of
# the lab's Consul, with its secrets, is on it).
HOST_ONLY = "host"
# True: remove the lab from the hosts instead (`labctl down` on existing machines).
TEARDOWN = "lab_teardown"
# With TEARDOWN: also purge the Docker engine (`labctl down --purge-engine`).
PURGE_ENGINE = "lab_purge_engine"


# --- The host data labctl hands the roles --------------------------------------------

# The key of a host's LabHost in pyinfra's host data: `host.data.lab_host`.
LAB_HOST = "lab_host"


@dataclass(frozen=True)
class ServiceInstance:
    """One instance of one of the spec's services: the seed's 直播服务API{n} on the spec's
    n-th host, or another service's, listening on `address`:`port`."""

    service: str
    host: str
    address: str
    id: str
    title: str
    port: int


@dataclass(frozen=True)
class HealthCheck:
    """The HTTP check an instance is registered with (the spec's services[].check)."""

    path: str
    interval: str
    timeout: str
    deregister_critical_after: str


# Who registers a service's instances (the spec's services[].registration): the lab's
# role demo_service, or registrator from the labels the instances carry.
LAB_REGISTRATION = "lab"
REGISTRATOR_REGISTRATION = "registrator"
RegistrationMode = Literal["lab", "registrator"]


@dataclass(frozen=True)
class Registration:
    """How every instance of one service is registered with its host's agent."""

    tags: tuple[str, ...]
    check: HealthCheck
    mode: RegistrationMode = LAB_REGISTRATION


def registrator_service_id(hostname: str, container: str, port: int) -> str:
    """The ID registrator gives a container's service: its own hostname (the host's,
    under --net=host), the container's name and the exposed port."""
    return f"{hostname}:{container}:{port}"


@dataclass(frozen=True)
class Registrator:
    """The host runs registrator (some service of the spec is registrator's)."""

    # Its token: service write on the registrator-mode services only (None: no ACLs,
    # or not made yet).
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ConsulAgent:
    """The host's Consul agent, as the spec and labctl's secrets make it."""

    server: bool
    # The number of servers: every server's bootstrap_expect (Consul's advice).
    servers: int
    # The servers' addresses, the bootstrap server first (the seed's -join).
    join: tuple[str, ...]
    # ACLs that deny by default (the spec's security.acl).
    acl: bool
    # None where the spec turns it off, or labctl has not made it yet (the first stage
    # of an `up` with ACLs).
    gossip_key: str | None = field(default=None, repr=False)
    registration_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class VrrpPeer:
    """One of the LB hosts sharing the address."""

    name: str
    address: str


@dataclass(frozen=True)
class Vrrp:
    """The address the lab's LBs share (network.lb_address), and who shares it."""

    address: str
    # The lab subnet's prefix length: the address is added to the interface with it.
    prefixlen: int
    # Every LB host, in the spec's order: its priority order.
    lbs: tuple[VrrpPeer, ...]
    # Adverts to the other LBs' addresses instead of multicast (network.lb_unicast).
    unicast: bool = False


@dataclass(frozen=True)
class LoadBalancer:
    """The host is one of the lab's LBs."""

    # Who may read the LB's /_lab/ besides loopback: the lab's network and every host.
    allow_cidrs: tuple[str, ...]
    # consul-template's token on this LB (None: no ACLs, or not made yet).
    consul_token: str | None = field(default=None, repr=False)
    # With more than one LB: the address they share (None: this is the lab's only LB).
    vrrp: Vrrp | None = None


@dataclass(frozen=True)
class Image:
    """One of the lab's images as labctl resolved it: its reference, and its ID where
    labctl knows it (None where the hosts obtain it: the reference names it then)."""

    ref: str
    id: str | None


@dataclass(frozen=True)
class ObtainedImage:
    """How a host obtains one image itself (images.delivery `hosts`)."""

    # In the bundle the host is given (else pulled, else built from `recipe`).
    bundled: bool
    # The recipe's archive on the control machine (None: pulled only).
    recipe: str | None
    build_args: dict[str, str]


@dataclass(frozen=True)
class ImagePlan:
    """What a host obtains itself, by reference, and from where (images.delivery `hosts`)."""

    images: dict[str, ObtainedImage]
    # The image the recipes build FROM.
    base_image: str
    # A `labctl bundle save` file on the control machine (None: no bundle).
    bundle: str | None


@dataclass(frozen=True)
class HostImages:
    """The images a host runs, and how it gets them."""

    # Every image of the lab, by key (consul, demo_service, lb, keepalived); {} until labctl has
    # resolved them (roles that run one refuse to go on without it).
    images: dict[str, Image]
    # The keys of those this host runs.
    needed: tuple[str, ...]
    delivery: Literal["control", "hosts"] = "control"
    # control: this host's archive on the control machine, and the OpenSSH command that
    # streams it into the host's `docker load` (None: no OpenSSH here; pyinfra uploads it).
    archive: str | None = None
    archive_load_command: tuple[str, ...] | None = None
    # hosts: what this host obtains.
    plan: ImagePlan | None = None


@dataclass(frozen=True)
class LabHost:
    """What labctl computes for one host, for its roles (`host.data.lab_host`). The roles'
    tunables are data keys of their own, with each role's DEFAULTS."""

    lab_name: str
    name: str
    address: str
    # None: no Consul agent on this host (the spec's consul: none).
    consul: ConsulAgent | None
    # None: the host is no LB.
    lb: LoadBalancer | None
    # Every LB host's address: a rolling change waits until each LB's upstreams follow.
    lb_addresses: tuple[str, ...]
    # The instances of the spec's services this host runs.
    instances: tuple[ServiceInstance, ...]
    # Every service's registration, by name.
    services: dict[str, Registration]
    images: HostImages
    # None: registrator does not run here.
    registrator: Registrator | None = None

    def to_json(self) -> dict:
        """Itself as JSON, for `pyinfra inventory.py debug-inventory --json`: every
        secret (a field not in its repr) that is set shows as SECRET_SHOWN."""
        return _public(self)


SECRET_SHOWN = "(secret)"


def _public(value: object) -> object:
    if is_dataclass(value):
        return {
            f.name: SECRET_SHOWN
            if not f.repr and getattr(value, f.name) is not None
            else _public(getattr(value, f.name))
            for f in fields(value)
        }
    if isinstance(value, dict):
        return {key: _public(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_public(item) for item in value]
    return value
