"""The lab spec: the one human-edited file that describes a lab.

Everything else (the Vagrantfile, ``inventory.py``, the CLI) derives from the
parsed spec, so a mistake is caught here, before any host is touched.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from labctl import services as lab_services
from labctl.services import SEED_SERVICE, Service
from labctl.spec_types import Address, Host, LocalPath, Port, StrictModel, Subnet
from roles.contract import ServiceInstance

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = PROJECT_ROOT / "lab.yaml"
SPEC_ENV = "LAB_SPEC"

# VirtualBox 6.1.28+ only lets host-only networks use 192.168.56.0/21 unless the
# user widens the range in /etc/vbox/networks.conf.
VIRTUALBOX_HOSTONLY_RANGE = ipaddress.ip_network("192.168.56.0/21")
# Ranges no lab network may touch: the kernel gives them other meanings (RFC 6890).
RESERVED_SUBNETS = {
    "\"this network\"": ipaddress.ip_network("0.0.0.0/8"),
    "loopback": ipaddress.ip_network("127.0.0.0/8"),
    "link-local": ipaddress.ip_network("169.254.0.0/16"),
    "multicast": ipaddress.ip_network("224.0.0.0/4"),
    "reserved": ipaddress.ip_network("240.0.0.0/4"),
}

VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
# [registry[:port]/]repository:tag, any tag but `latest`.
IMAGE_REF_RE = re.compile(r"^[a-z0-9]+([._:/-][a-z0-9]+)*:(?!latest$)[\w][\w.-]{0,127}$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
# A Vagrant Cloud box (OWNER/NAME) and a version Vagrant can pin (numbers and dots).
BOX_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
BOX_VERSION_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)*$")
# A login name: anything but nothing, whitespace, control characters and `@` or `:`
# (which ssh and its URLs read as separators).
SSH_USER_RE = re.compile(r"^[^\s@:\x00-\x1f\x7f]+$")
# One label of a DNS name (RFC 1123).
DNS_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

Provider = Literal["auto", "virtualbox", "docker", "ssh"]


# The most LB hosts one address ranks: the drain takes 100 off a priority of 200 minus
# 10 per place (templates/keepalived/keepalived.conf.j2), which must stay below every LB
# that is not drained.
MAX_LB_HOSTS = 10


class SpecError(Exception):
    """The spec is unusable. ``problems`` holds one sentence per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# VirtualBox's limits for one VM (include/VBox/param.h: VMM_MAX_CPU_COUNT,
# MM_RAM_MAX_IN_MB on a 64-bit host).
VIRTUALBOX_MAX_CPUS = 64
VIRTUALBOX_MAX_MEMORY_MB = 2097152


class Network(StrictModel):
    subnet: Subnet = ipaddress.IPv4Network("192.168.56.0/24")
    # Set when /etc/vbox/networks.conf allows more than VirtualBox's default range.
    allow_any_subnet: bool = False
    # With two or more LB hosts: the one address clients use, held by one LB at a time
    # and handed over by VRRP (keepalived; docs/lb-pair.md). None with a single LB, whose
    # host's own address is the LB's.
    lb_address: Address | None = None
    # VRRP adverts to the other LBs' addresses instead of multicast (224.0.0.18), for
    # networks that drop multicast (many managed switches; the ssh road's machines).
    lb_unicast: bool = False


# consul-template releases whose retry backoff overflows (hashicorp/consul-template#1028,
# fixed in 0.19.4 by #1031): retrying forever, as the LB does, they spin once Consul has
# been away for about six minutes.
CONSUL_TEMPLATE_BACKOFF_FIXED = (0, 19, 4)


class Versions(StrictModel):
    consul: str = "1.11.3"
    # The seed's 0.19 line, at the release that fixed the backoff overflow; the seed's
    # own 0.19.0 stays selectable (with a warning).
    consul_template: str = "0.19.5"
    # Debian bookworm's nginx: the seed's nginx:1.21.6 image needs Docker Hub,
    # Debian's archive is reachable wherever apt is.
    nginx: str = "1.22.1"
    # fayrus/registrator, the maintained fork of gliderlabs/registrator (tagged v<this>;
    # why that one: docs/registrator.md). Runs only where a service says
    # `registration: registrator`.
    registrator: str = "9.2.0"
    # Debian bookworm's keepalived (VRRP), run beside the LB when there are several.
    keepalived: str = "2.2.7"


class Images(StrictModel):
    # Consul image; default hashicorp/consul:<versions.consul>. Point it at a
    # private registry (or, in tests, at the stand-in) here.
    consul: str | None = None
    # A consul-template binary, .zip or .tgz on the control machine; default: the
    # official release archive for versions.consul_template, SHA-256 checked.
    consul_template_binary: LocalPath | None = None
    # Registrator image; default fayrus/registrator:v<versions.registrator>.
    registrator: str | None = None
    # Registries tried, in order, before an image's own registry (by the control
    # machine, and by the hosts' engines as daemon.json registry-mirrors).
    registry_mirrors: list[str] = Field(default_factory=list)
    # Where images are resolved: `control` (this machine's engine, one archive per
    # host), `hosts` (each host pulls, builds or loads a bundle), or `auto`.
    delivery: Literal["auto", "control", "hosts"] = "auto"


class Box(StrictModel):
    box: str
    version: str


class VirtualBoxBoxes(StrictModel):
    """A pinned box per architecture; labctl picks the control machine's, because
    VirtualBox runs guests of its host's architecture only."""

    # debian/bookworm64 is built for amd64 only.
    amd64: Box = Box(box="debian/bookworm64", version="12.20240905.1")
    # bento/debian-12 has VirtualBox arm64 builds from 202508.03.0 on (the build tables
    # in chef/bento's CHANGELOG.md); 202510.26.0 is the newest table listing them.
    arm64: Box = Box(box="bento/debian-12", version="202510.26.0")


class VirtualBox(StrictModel):
    boxes: VirtualBoxBoxes = VirtualBoxBoxes()
    cpus: Annotated[int, Field(ge=1, le=VIRTUALBOX_MAX_CPUS)] = 1
    memory: Annotated[int, Field(ge=256, le=VIRTUALBOX_MAX_MEMORY_MB)] = 1024


class DockerProvider(StrictModel):
    # Image the host containers are built FROM; built with debootstrap when no
    # registry can serve it.
    base_image: str = "debian:bookworm"


class Ssh(StrictModel):
    user: str = "root"
    port: Port = 22
    key: str | None = None
    # Where host keys are recorded (first contact) and checked (every contact).
    known_hosts: str = "~/.ssh/known_hosts"


class Security(StrictModel):
    # Gossip between the agents encrypted and authenticated with one key per lab.
    gossip_encryption: bool = True
    # ACLs that deny by default, with a least-privilege token for each part of the lab.
    acl: bool = True

    @property
    def open(self) -> bool:
        """The seed's lab: neither (anyone who reaches an agent's API may change the catalog)."""
        return not (self.gossip_encryption or self.acl)


class Apt(StrictModel):
    # Where the hosts' apt fetches the lab's packages (the Docker engine): `auto`, an
    # apt-cacher-ng labctl runs here for Vagrant's hosts, so each package is downloaded
    # once for every host (none on the ssh road, whose machines may not reach this
    # one); `none`; or the URL of an apt proxy the hosts reach (any road).
    cache: str = "auto"

    @field_validator("cache")
    @classmethod
    def _cache(cls, value: str) -> str:
        if value not in ("auto", "none") and not re.match(r"^http://[^/\s]+/?$", value):
            raise ValueError(
                "is not auto, none or an apt proxy's URL; write e.g. http://10.0.0.1:3142"
            )
        return value


class LabSpec(StrictModel):
    name: str = "dynlb"
    provider: Provider = "auto"
    network: Network = Network()
    versions: Versions = Versions()
    images: Images = Images()
    virtualbox: VirtualBox = VirtualBox()
    docker: DockerProvider = DockerProvider()
    ssh: Ssh = Ssh()
    apt: Apt = Apt()
    # Secure by default; `security: seed` is the seed's open Consul (both off).
    security: Security = Security()
    hosts: list[Host]
    # Every service gets its own upstream and location on the LB (labctl/services.py).
    services: list[Service] = Field(default_factory=lambda: [Service(name=SEED_SERVICE)])
    # The file this spec was read from; children (Vagrant, pyinfra) read it again.
    _source: Path = PrivateAttr(default=DEFAULT_SPEC)

    @property
    def source(self) -> Path:
        return self._source

    @field_validator("security", mode="before")
    @classmethod
    def _seed_security(cls, value: object) -> object:
        if value == "seed":
            return {"gossip_encryption": False, "acl": False}
        if isinstance(value, str):
            raise ValueError(
                "is not a mapping; write `security: seed` for the seed's open lab, or a "
                "mapping of gossip_encryption and acl"
            )
        return value

    @property
    def consul_servers(self) -> list[Host]:
        return [h for h in self.hosts if h.consul == "server"]

    @property
    def lb_hosts(self) -> list[Host]:
        """The hosts that run the LB (`lb: true`)."""
        return [h for h in self.hosts if h.lb]

    @property
    def lb_address(self) -> str | None:
        """Where clients reach the LB: the address the LBs share when there are several,
        else the one LB host's own (None: no LB)."""
        if self.network.lb_address is not None:
            return str(self.network.lb_address)
        return next((str(h.address) for h in self.lb_hosts), None)

    @property
    def lb_pair(self) -> bool:
        """More than one LB host, sharing network.lb_address by VRRP."""
        return len(self.lb_hosts) > 1

    @property
    def consul_image(self) -> str:
        return self.images.consul or f"hashicorp/consul:{self.versions.consul}"

    @property
    def registrator_image(self) -> str:
        return self.images.registrator or f"fayrus/registrator:v{self.versions.registrator}"

    def registrator_services(self) -> list[str]:
        """The services registrator registers (`registration: registrator`)."""
        return [s.name for s in self.services if s.registration == "registrator"]

    @property
    def registrator_hosts(self) -> list[Host]:
        """Where registrator runs: beside every Consul agent, once any service is
        registrator's (a container with its labels may be started on any of them)."""
        if not self.registrator_services():
            return []
        return [h for h in self.hosts if h.consul != "none"]

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return next(self.network.subnet.hosts())

    def instances(self) -> list[ServiceInstance]:
        """Every instance the spec declares, of every service (labctl/services.py)."""
        return lab_services.instances(self.services, self.hosts)

    def service_counts(self, name: str) -> dict[str, int]:
        """Host name -> instances of the service `name` (0 where it has none)."""
        index = [s.name for s in self.services].index(name)
        counts = lab_services.counts(self.services, self.hosts, index)
        return {h.name: counts.get(h.name, 0) for h in self.hosts}

    def instance_hosts(self) -> list[str]:
        """The hosts that run any instance."""
        running = {i.host for i in self.instances()}
        return [h.name for h in self.hosts if h.name in running]

    def with_counts(self, name: str, counts: dict[str, int]) -> LabSpec:
        """The spec with these per-host counts for the service `name` (hosts not named
        keep theirs). The first service's counts stay where the spec keeps them: in the
        hosts' `demo`, unless it has `instances`."""
        index = [s.name for s in self.services].index(name)
        service = self.services[index]
        if index == 0 and service.instances is None:
            hosts = [
                host.model_copy(update={"first_service_count": counts[host.name]})
                if host.name in counts
                else host
                for host in self.hosts
            ]
            changed = self.model_copy(update={"hosts": hosts})
        else:
            merged = {**(service.instances or {}), **counts}
            services = list(self.services)
            services[index] = service.model_copy(update={"instances": merged})
            changed = self.model_copy(update={"services": services})
        changed._source = self.source
        return changed

    def spec_relative(self, path: str) -> Path:
        """A path written in the spec: `~` expanded, relative ones from the spec's folder."""
        return self.source.parent / Path(path).expanduser()

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


def _reachable_host(host: str | None) -> bool:
    """A DNS name or an IP address."""
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return all(DNS_LABEL_RE.match(label) for label in host.removesuffix(".").split("."))


def registry_mirror_problem(mirror: str) -> str | None:
    """What dockerd would refuse in a registry mirror, which goes into every host's
    daemon.json (a host name alone means https://). dockerd 20.10 refuses to start on
    a mirror that is not an http(s) URL, has a path, query or fragment, or carries a user
    or password (moby registry/config.go, ValidateMirror); a mirror with no host, or a port
    that is not one, is refused here too: no pull could reach it."""
    url = mirror if "://" in mirror else f"https://{mirror}"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL; write it as https://HOST[:PORT], e.g. https://mirror.example:5000"
    if parts.scheme not in ("http", "https"):
        return f"has scheme {parts.scheme}; dockerd takes http:// or https:// mirrors only"
    if parts.username is not None or parts.password is not None:
        return "carries a user or password, which dockerd refuses; log in with docker login"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "has a path, query or fragment, which dockerd refuses; keep scheme, host and port"
    if not _reachable_host(parts.hostname) or port == 0:
        return "names no host that can be reached; write it as https://HOST[:PORT]"
    return None


# A key shown as it is in a location (`hosts[0].demo`); any other, quoted (repr), so that
# a key with a newline or a space in it stays one visible word of the sentence.
PLAIN_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        key = str(part) if PLAIN_KEY_RE.match(str(part)) else repr(part)
        out += f".{key}" if out else key
    return out or "(top level)"


def _known_keys(loc: tuple) -> list[str]:
    """The keys allowed at the mapping that holds ``loc``'s last element."""
    model: type[BaseModel] = LabSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            inner = annotation
        model = inner
    return [field.alias or name for name, field in model.model_fields.items()]


# How to write a value of the type a key wants, for a value of another type (YAML reads
# `true`, `2` and `"2"` as three types; the spec takes each only where it is meant).
TYPE_HINTS = {
    "int_type": "write a whole number without quotes, e.g. 2",
    "bool_type": "write true or false, without quotes",
    "string_type": "write it as text (in quotes if YAML reads it as something else)",
    "list_type": "write a list, e.g. [a, b]",
    "dict_type": "write a mapping of keys and values",
    "model_type": "write a mapping of keys and values",
}


def _pydantic_problem(error: dict, source: str) -> str:
    where = _location(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        known = _known_keys(error["loc"])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(known)
        return f"{source}: {where} is not a known key; remove it or fix its spelling ({hint})."
    if kind == "missing":
        return f"{source}: {where} is required; add it."
    value = error.get("input")
    if kind == "value_error":  # the spec's own validators: the problem and the fix
        sentence = str(error["ctx"]["error"])
        return f"{source}: {where} = {value!r} {sentence}{'' if sentence[-1] in '.?' else '.'}"
    if kind in TYPE_HINTS:
        wanted = error["msg"].lower().removeprefix("input should be ")
        return f"{source}: {where} = {value!r} is not {wanted}; {TYPE_HINTS[kind]}."
    return f"{source}: {where} = {value!r} is invalid ({error['msg'].lower()}); correct it."


def _image_problems(spec: LabSpec, source: str) -> list[str]:
    """Boxes, images and mirrors that Vagrant or Docker would refuse, or not pin."""
    errors = []
    for arch, box in spec.virtualbox.boxes.model_dump().items():
        if not BOX_RE.match(box["box"]) or not BOX_VERSION_RE.match(box["version"]):
            errors.append(
                f"{source}: virtualbox.boxes.{arch} = {box['box']!r} version "
                f"{box['version']!r} is not a pinned Vagrant box; write the box as OWNER/NAME "
                "and its version as numbers and dots, e.g. debian/bookworm64 12.20240905.1."
            )
    for field, ref in (("images.consul", spec.images.consul),
                       ("images.registrator", spec.images.registrator),
                       ("docker.base_image", spec.docker.base_image)):  # fmt: skip
        if ref is not None and not IMAGE_REF_RE.match(ref):
            errors.append(
                f"{source}: {field} = {ref!r} needs a pinned tag in Docker's lowercase form; "
                "write it as [registry/]repository:tag with a tag other than latest."
            )
    for i, mirror in enumerate(spec.images.registry_mirrors):
        if problem := registry_mirror_problem(mirror):
            errors.append(f"{source}: images.registry_mirrors[{i}] = {mirror!r} {problem}.")
    return errors


def _login_problems(spec: LabSpec, source: str) -> list[str]:
    """SSH users and hosts (provider ssh) that SSH could not use."""
    errors = []
    users = {"ssh.user": spec.ssh.user} | {
        f"hosts[{i}].ssh_user": h.ssh_user for i, h in enumerate(spec.hosts) if h.ssh_user
    }
    for where, user in users.items():
        if not SSH_USER_RE.match(user):
            errors.append(
                f"{source}: {where} = {user!r} is not a user name SSH can log in as; write it "
                "without spaces or control characters, e.g. admin."
            )
    for i, host in enumerate(spec.hosts):
        if host.ssh_host and not _reachable_host(host.ssh_host):
            errors.append(
                f"{source}: hosts[{i}].ssh_host = {host.ssh_host!r} is neither a DNS name nor "
                "an IP address; write e.g. web1.example.com or 203.0.113.7."
            )
    return errors


def _semantic_problems(spec: LabSpec, source: str) -> tuple[list[str], list[str]]:
    """What is wrong with a spec that parsed (errors), and what is risky (warnings)."""
    consul_errors, consul_warnings = _consul_problems(spec, source)
    errors = [
        *_name_and_version_problems(spec, source),
        *_image_problems(spec, source),
        *_login_problems(spec, source),
        *_subnet_problems(spec, source),
        *_host_problems(spec, source),
        *_lb_address_problems(spec, source),
        *lab_services.problems(spec.services, spec.hosts, source),
        *consul_errors,
    ]
    return errors, [*_consul_template_warnings(spec, source), *consul_warnings]


def _name_and_version_problems(spec: LabSpec, source: str) -> list[str]:
    """The lab's name, that it has hosts, and versions pinned to a release."""
    errors: list[str] = []
    if not NAME_RE.match(spec.name):
        errors.append(
            f"{source}: name = {spec.name!r} must be 2-32 lowercase letters, digits or '-', "
            "starting with a letter; it prefixes every machine, network and volume of the lab."
        )
    if not spec.hosts:
        errors.append(f"{source}: hosts is empty; list at least one host.")

    for field, version in spec.versions.model_dump().items():
        if not VERSION_RE.match(version):
            errors.append(
                f"{source}: versions.{field} = {version!r} is not a pinned release; "
                "write it as MAJOR.MINOR.PATCH, e.g. 1.11.3."
            )
    return errors


def _subnet_problems(spec: LabSpec, source: str) -> list[str]:
    """The lab's subnet: a private range, and one VirtualBox allows where it makes it."""
    errors: list[str] = []
    subnet = spec.network.subnet
    for kind, reserved in RESERVED_SUBNETS.items():
        if subnet.overlaps(reserved):
            errors.append(
                f"{source}: network.subnet {subnet} overlaps {reserved}, the {kind} range, "
                "which the kernel does not route as a private network; use a private range, "
                "e.g. 192.168.56.0/24."
            )

    if (
        spec.provider in ("auto", "virtualbox")
        and not spec.network.allow_any_subnet
        and not subnet.subnet_of(VIRTUALBOX_HOSTONLY_RANGE)
    ):
        errors.append(
            f"{source}: network.subnet {subnet} is outside {VIRTUALBOX_HOSTONLY_RANGE}, the only "
            "range VirtualBox allows for host-only networks; pick a subnet inside it, or set "
            "network.allow_any_subnet: true after allowing it in /etc/vbox/networks.conf."
        )
    return errors


def _host_problems(spec: LabSpec, source: str) -> list[str]:
    """Each host: its name and address its own, the address usable, its roles compatible."""
    errors: list[str] = []
    seen_names: dict[str, int] = {}
    seen_addresses: dict[str, int] = {}
    for i, host in enumerate(spec.hosts):
        where = f"{source}: hosts[{i}]"
        if not NAME_RE.match(host.name):
            errors.append(
                f"{where}.name = {host.name!r} must be 2-32 lowercase letters, digits or '-', "
                "starting with a letter (it becomes a hostname and a Consul node name)."
            )
        if host.name in seen_names:
            errors.append(
                f"{where}.name {host.name!r} is already used by hosts[{seen_names[host.name]}]; "
                "give every host its own name."
            )
        seen_names.setdefault(host.name, i)
        address = str(host.address)
        if address in seen_addresses:
            errors.append(
                f"{where}.address {address} is already used by hosts[{seen_addresses[address]}]; "
                "give every host its own address."
            )
        seen_addresses.setdefault(address, i)
        if spec.provider != "ssh":
            errors += _address_problems(spec, where, host)
        errors += _host_role_problems(where, host)
    return errors


def _address_problems(spec: LabSpec, where: str, host: Host) -> list[str]:
    """A host address the provider gives: inside the subnet, and neither its network,
    broadcast nor gateway address."""
    subnet = spec.network.subnet
    address = str(host.address)
    if host.address not in subnet:
        return [
            f"{where}.address {address} is outside the lab subnet {subnet}; "
            "use an address inside it or change network.subnet."
        ]
    if host.address in (subnet.network_address, subnet.broadcast_address):
        return [
            f"{where}.address {address} is the subnet's network or broadcast address; "
            "use a host address."
        ]
    if host.address == spec.gateway:
        return [
            f"{where}.address {address} is the subnet's first address, which the "
            "VirtualBox host adapter or the Docker network gateway takes; start at "
            f"{spec.gateway + 1}."
        ]
    return []


def _host_role_problems(where: str, host: Host) -> list[str]:
    """A host's roles that do not fit together (an LB or instances without an agent)."""
    errors: list[str] = []
    if host.first_service_count < 0:
        errors.append(
            f"{where}.demo = {host.first_service_count} is below zero; "
            "use 0 for no demo instance on this host."
        )
    if host.bootstrap and host.consul != "server":
        errors.append(
            f"{where}.bootstrap is true but consul is {host.consul!r}; only a server can "
            "bootstrap the cluster: set consul: server or drop bootstrap."
        )
    if host.first_service_count > 0 and host.consul == "none":
        errors.append(
            f"{where}.demo is {host.first_service_count} but consul is 'none'; instances "
            "register with their own host's Consul agent, so set consul: client or demo: 0."
        )
    if host.lb and host.consul == "none":
        errors.append(
            f"{where}.lb is true but consul is 'none'; consul-template reads the local "
            "Consul agent, so the LB host needs consul: client or server."
        )
    return errors


def _consul_template_warnings(spec: LabSpec, source: str) -> list[str]:
    """A consul-template release with the retry backoff overflow."""
    version = spec.versions.consul_template
    if not VERSION_RE.match(version):
        return []  # _name_and_version_problems names it
    if tuple(int(p) for p in version.split(".")) >= CONSUL_TEMPLATE_BACKOFF_FIXED:
        return []
    return [
        f"{source}: versions.consul_template {version} overflows its retry backoff "
        "(hashicorp/consul-template#1028): once Consul has been away for about six minutes "
        "the LB's consul-template spins one core and floods its log; use 0.19.4 or later "
        "(the default is 0.19.5)."
    ]


def _consul_problems(spec: LabSpec, source: str) -> tuple[list[str], list[str]]:
    """The Consul servers: at least one, at most one bootstrap server; an even count warned."""
    errors: list[str] = []
    warnings: list[str] = []
    servers = spec.consul_servers
    if spec.hosts and not servers:
        errors.append(
            f"{source}: no host has consul: server; make at least one host a Consul server "
            "(the seed uses two servers and one client)."
        )
    bootstrappers = [h.name for h in spec.hosts if h.bootstrap]
    if len(bootstrappers) > 1:
        errors.append(
            f"{source}: hosts {', '.join(bootstrappers)} all have bootstrap: true; "
            "mark exactly one server as the one the others join first."
        )
    if servers and len(servers) % 2 == 0:
        warnings.append(
            f"{source}: {len(servers)} Consul servers is an even number; it tolerates no more "
            f"failures than {len(servers) - 1} would (the seed's own layout has this trait)."
        )
    return errors, warnings


def _lb_address_problems(spec: LabSpec, source: str) -> list[str]:
    """network.lb_address: set exactly when there is more than one LB, and free inside the
    subnet (not its network, broadcast or gateway address, nor a host's)."""
    lbs = [h.name for h in spec.lb_hosts]
    address = spec.network.lb_address
    subnet = spec.network.subnet
    if address is None:
        if len(lbs) > 1:
            return [
                f"{source}: hosts {', '.join(lbs)} all have lb: true but network.lb_address is "
                f"not set; set it to a free address inside {subnet}, the one clients use and "
                "the LBs hand over between them."
            ]
        return []
    where = f"{source}: network.lb_address {address}"
    if len(lbs) < 2:
        have = f"only {lbs[0]} has" if lbs else "no host has"
        return [
            f"{where} is set but {have} lb: true; remove it (a single LB answers on its "
            "host's own address) or give a second host lb: true."
        ]
    if len(lbs) > MAX_LB_HOSTS:
        return [
            f"{source}: {len(lbs)} hosts have lb: true, more than the {MAX_LB_HOSTS} the "
            "address's hand-over ranks; keep at most that many LB hosts."
        ]
    if address not in subnet:
        return [f"{where} is outside the lab subnet {subnet}; use a free address inside it."]
    if address in (subnet.network_address, subnet.broadcast_address, spec.gateway):
        return [
            f"{where} is the subnet's network, broadcast or gateway address; use a free host "
            f"address inside {subnet}."
        ]
    taken = next((h.name for h in spec.hosts if h.address == address), None)
    if taken:
        return [f"{where} is host {taken}'s address; use one no host has."]
    return []


def file_problems(spec: LabSpec, provider: str | None = None) -> list[str]:
    """The files on this machine the spec names that are not there: checked by the verbs
    that read them, before they do anything (loading a spec needs none of them)."""
    problems = []
    binary = spec.images.consul_template_binary
    if binary is not None and not binary.is_file():
        problems.append(
            f"images.consul_template_binary {binary} is not a file here; point it at a "
            "consul-template binary, .zip or .tgz, or remove it to use the release archive."
        )
    if (provider or spec.provider) == "ssh":
        keys = {"ssh.key": spec.ssh.key} | {
            f"hosts[{i}].ssh_key": host.ssh_key for i, host in enumerate(spec.hosts)
        }
        for where, key in keys.items():
            if key is not None and not spec.spec_relative(key).is_file():
                problems.append(
                    f"{where} {spec.spec_relative(key)} is not a file here; point it at the "
                    "private key that logs into the machines (relative paths start at the "
                    "spec's folder)."
                )
    return problems


def validate(spec: LabSpec, source: str = "lab spec") -> list[str]:
    """The problems of an already parsed spec, e.g. one with the counts `scale` recorded."""
    return _semantic_problems(spec, source)[0]


def parse_spec(data: object, source: str = "lab spec") -> tuple[LabSpec, list[str]]:
    """Validate raw spec data; return the spec and its warnings or raise SpecError."""
    if not isinstance(data, dict):
        raise SpecError(
            [f"{source}: the file must be a mapping with at least 'hosts'; see lab.yaml."]
        )
    try:
        spec = LabSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_pydantic_problem(e, source) for e in exc.errors()]) from None
    errors, warnings = _semantic_problems(spec, source)
    if errors:
        raise SpecError(errors)
    return spec, warnings


def spec_path(path: str | os.PathLike | None = None) -> Path:
    """The spec file to use: an explicit path, $LAB_SPEC, or lab.yaml in the project."""
    return Path(path or os.environ.get(SPEC_ENV) or DEFAULT_SPEC)


class _DuplicateKey(yaml.MarkedYAMLError):
    """A key written twice in one mapping."""


class _Unreadable(yaml.MarkedYAMLError):
    """A plain value YAML reads as a type it then cannot make: `2024-13-01` (a date with
    no 13th month), a number of more than 4300 digits (Python's limit)."""


class _SpecLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (where PyYAML
    keeps the last one without a word, so the first would be silently ignored), and
    naming a value it cannot make where PyYAML raises a bare ValueError."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            value = str(node.value)
            shown = repr(value if len(value) <= 40 else f"{value[:40]}...")
            raise _Unreadable(
                problem=f"{shown} looks like a YAML {node.tag.rsplit(':', 1)[-1]} but cannot be "
                f"one ({str(exc).split(';')[0]}); quote it if it is text, or correct it",
                problem_mark=node.start_mark,
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: PyYAML's own error names it
                continue
            if first is not key_node:
                raise _DuplicateKey(
                    problem=f"the key {key!r} is written twice in one mapping (first at line "
                    f"{first.start_mark.line + 1}); keep one",
                    problem_mark=key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _text(file: Path, raw: bytes) -> str:
    """The spec's text; UTF-8 (YAML's own encoding), else one sentence naming where not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(
            [f"{file}: line {line} is not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file "
             "as UTF-8."]
        ) from None  # fmt: skip


def load_spec(path: str | os.PathLike | None = None) -> tuple[LabSpec, list[str]]:
    """Read and validate a spec file."""
    file = spec_path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise SpecError(
            [f"{file}: cannot read the lab spec ({exc.strerror}); pass --spec FILE."]
        ) from None
    try:
        data = yaml.load(_text(file, raw), Loader=_SpecLoader)
    except (_DuplicateKey, _Unreadable) as exc:
        raise SpecError(
            [f"{file}: line {exc.problem_mark.line + 1}: {exc.problem}."]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise SpecError([f"{file}: not valid YAML{line}; fix the syntax there."]) from None
    except RecursionError:
        raise SpecError([f"{file}: nested too deeply to read; write it flatter."]) from None
    spec, warnings = parse_spec(data, source=file.name)
    spec._source = file.resolve()
    return spec, warnings
