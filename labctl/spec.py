"""The lab spec: the one human-edited file that describes a lab.

Everything else (the Vagrantfile, ``inventory.py``, the CLI) derives from the
parsed spec, so a mistake is caught here, before any host is touched.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from labctl import services as lab_services
from labctl.services import SEED_SERVICE, DemoInstance, Service

__all__ = ["DemoInstance", "Service"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = PROJECT_ROOT / "lab.yaml"
SPEC_ENV = "LAB_SPEC"

# VirtualBox 6.1.28+ only lets host-only networks use 192.168.56.0/21 unless the
# user widens the range in /etc/vbox/networks.conf.
VIRTUALBOX_HOSTONLY_RANGE = ipaddress.ip_network("192.168.56.0/21")

VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
# [registry[:port]/]repository:tag, any tag but `latest`.
IMAGE_REF_RE = re.compile(r"^[a-z0-9]+([._:/-][a-z0-9]+)*:(?!latest$)[\w][\w.-]{0,127}$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")

Provider = Literal["auto", "virtualbox", "docker", "ssh"]

# Every agent's HTTP API (the seed's -client=0.0.0.0), which labctl reads and writes.
CONSUL_HTTP_PORT = 8500


class SpecError(Exception):
    """The spec is unusable. ``problems`` holds one sentence per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Network(_Strict):
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.56.0/24")
    # Set when /etc/vbox/networks.conf allows more than VirtualBox's default range.
    allow_any_subnet: bool = False


# consul-template releases whose retry backoff overflows (hashicorp/consul-template#1028,
# fixed in 0.19.4 by #1031): retrying forever, as the LB does, they spin once Consul has
# been away for about six minutes.
CONSUL_TEMPLATE_BACKOFF_FIXED = (0, 19, 4)


class Versions(_Strict):
    consul: str = "1.11.3"
    # The seed's 0.19 line, at the release that fixed the backoff overflow; the seed's
    # own 0.19.0 stays selectable (with a warning).
    consul_template: str = "0.19.5"
    # Debian bookworm's nginx: the seed's nginx:1.21.6 image needs Docker Hub,
    # Debian's archive is reachable wherever apt is.
    nginx: str = "1.22.1"


class Images(_Strict):
    # Consul image; default hashicorp/consul:<versions.consul>. Point it at a
    # private registry (or, in tests, at the stand-in) here.
    consul: str | None = None
    # A consul-template binary, .zip or .tgz on the control machine; default: the
    # official release archive for versions.consul_template, SHA-256 checked.
    consul_template_binary: Path | None = None
    # Registries tried, in order, before an image's own registry (by the control
    # machine, and by the hosts' engines as daemon.json registry-mirrors).
    registry_mirrors: list[str] = []
    # Where images are resolved: `control` (this machine's engine, one archive per
    # host), `hosts` (each host pulls, builds or loads a bundle), or `auto`.
    delivery: Literal["auto", "control", "hosts"] = "auto"


class Box(_Strict):
    box: str
    version: str


class VirtualBoxBoxes(_Strict):
    """A pinned box per architecture; labctl picks the control machine's, because
    VirtualBox runs guests of its host's architecture only."""

    # debian/bookworm64 is built for amd64 only.
    amd64: Box = Box(box="debian/bookworm64", version="12.20240905.1")
    # bento/debian-12 has VirtualBox arm64 builds from 202508.03.0 on (the build tables
    # in chef/bento's CHANGELOG.md); 202510.26.0 is the newest table listing them.
    arm64: Box = Box(box="bento/debian-12", version="202510.26.0")


class VirtualBox(_Strict):
    boxes: VirtualBoxBoxes = VirtualBoxBoxes()
    cpus: Annotated[int, Field(ge=1)] = 1
    memory: Annotated[int, Field(ge=256)] = 1024


class DockerProvider(_Strict):
    # Image the host containers are built FROM; built with debootstrap when no
    # registry can serve it.
    base_image: str = "debian:bookworm"


class Ssh(_Strict):
    user: str = "root"
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    key: str | None = None
    # Where host keys are recorded (first contact) and checked (every contact).
    known_hosts: str = "~/.ssh/known_hosts"


class Security(_Strict):
    # Gossip between the agents encrypted and authenticated with one key per lab.
    gossip_encryption: bool = True
    # ACLs that deny by default, with a least-privilege token for each part of the lab.
    acl: bool = True

    @property
    def open(self) -> bool:
        """The seed's lab: neither (anyone who reaches :8500 may change the catalog)."""
        return not (self.gossip_encryption or self.acl)


class Apt(_Strict):
    # Where the hosts' apt fetches the lab's packages (the Docker engine): `auto`, an
    # apt-cacher-ng labctl runs here for Vagrant's hosts, so each package is downloaded
    # once for every host (none on the ssh road, whose machines may not reach this
    # one); `none`; or the URL of an apt proxy the hosts reach (any road).
    cache: str = "auto"

    @field_validator("cache")
    @classmethod
    def _cache(cls, value: str) -> str:
        if value not in ("auto", "none") and not re.match(r"^http://[^/\s]+/?$", value):
            raise ValueError("write auto, none, or an apt proxy such as http://10.0.0.1:3142")
        return value


class Host(_Strict):
    name: str
    address: ipaddress.IPv4Address
    consul: Literal["server", "client", "none"] = "client"
    bootstrap: bool = False
    lb: bool = False
    # Instances of the first service (services[0]) on this host.
    demo: int = 0
    # Per-host overrides for the ssh provider; default to the address and the
    # spec-wide ssh settings.
    ssh_host: str | None = None
    ssh_user: str | None = None
    ssh_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    ssh_key: str | None = None


class LabSpec(_Strict):
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
            raise ValueError("write `security: seed` for the seed's open lab, or a mapping")
        return value

    @property
    def consul_servers(self) -> list[Host]:
        return [h for h in self.hosts if h.consul == "server"]

    @property
    def consul_image(self) -> str:
        return self.images.consul or f"hashicorp/consul:{self.versions.consul}"

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return next(self.network.subnet.hosts())

    def demo_instances(self) -> list[DemoInstance]:
        """Every instance the spec declares, of every service (labctl/services.py)."""
        return lab_services.instances(self.services, self.hosts)

    def service_counts(self, name: str) -> dict[str, int]:
        """Host name -> instances of the service `name` (0 where it has none)."""
        index = [s.name for s in self.services].index(name)
        counts = lab_services.counts(self.services, self.hosts, index)
        return {h.name: counts.get(h.name, 0) for h in self.hosts}

    def instance_hosts(self) -> list[str]:
        """The hosts that run any instance."""
        running = {i.host for i in self.demo_instances()}
        return [h.name for h in self.hosts if h.name in running]

    def with_counts(self, name: str, counts: dict[str, int]) -> LabSpec:
        """The spec with these per-host counts for the service `name` (hosts not named
        keep theirs). The first service's counts stay where the spec keeps them: in the
        hosts' `demo`, unless it has `instances`."""
        index = [s.name for s in self.services].index(name)
        service = self.services[index]
        if index == 0 and service.instances is None:
            hosts = [h.model_copy(update={"demo": counts.get(h.name, h.demo)}) for h in self.hosts]
            changed = self.model_copy(update={"hosts": hosts})
        else:
            merged = {**(service.instances or {}), **counts}
            services = list(self.services)
            services[index] = service.model_copy(update={"instances": merged})
            changed = self.model_copy(update={"services": services})
        changed._source = self.source
        return changed

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
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
    return list(model.model_fields)


def _pydantic_problem(error: dict, source: str) -> str:
    where = _location(error["loc"])
    if error["type"] == "extra_forbidden":
        key = str(error["loc"][-1])
        known = _known_keys(error["loc"])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(known)
        return f"{source}: {where} is not a known key; remove it or fix its spelling ({hint})."
    if error["type"] == "missing":
        return f"{source}: {where} is required; add it."
    value = error.get("input")
    return f"{source}: {where} = {value!r} is invalid ({error['msg'].lower()}); correct it."


def _semantic_problems(spec: LabSpec, source: str) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    subnet = spec.network.subnet

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

    if spec.images.consul is not None and not IMAGE_REF_RE.match(spec.images.consul):
        errors.append(
            f"{source}: images.consul = {spec.images.consul!r} needs a pinned tag; "
            "write it as [registry/]repository:tag with a tag other than latest."
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
            if host.address not in subnet:
                errors.append(
                    f"{where}.address {address} is outside the lab subnet {subnet}; "
                    "use an address inside it or change network.subnet."
                )
            elif host.address in (subnet.network_address, subnet.broadcast_address):
                errors.append(
                    f"{where}.address {address} is the subnet's network or broadcast address; "
                    "use a host address."
                )
            elif host.address == spec.gateway:
                errors.append(
                    f"{where}.address {address} is the subnet's first address, which the "
                    "VirtualBox host adapter or the Docker network gateway takes; start at "
                    f"{spec.gateway + 1}."
                )
        if host.demo < 0:
            errors.append(
                f"{where}.demo = {host.demo} is below zero; "
                "use 0 for no demo instance on this host."
            )
        if host.bootstrap and host.consul != "server":
            errors.append(
                f"{where}.bootstrap is true but consul is {host.consul!r}; only a server can "
                "bootstrap the cluster: set consul: server or drop bootstrap."
            )
        if host.demo > 0 and host.consul == "none":
            errors.append(
                f"{where}.demo is {host.demo} but consul is 'none'; instances register with "
                "their own host's Consul agent, so set consul: client or demo: 0."
            )
        if host.lb and host.consul == "none":
            errors.append(
                f"{where}.lb is true but consul is 'none'; consul-template reads the local "
                "Consul agent, so the LB host needs consul: client or server."
            )

    errors += lab_services.problems(spec.services, spec.hosts, source)

    ct_version = spec.versions.consul_template
    if VERSION_RE.match(ct_version) and (
        tuple(int(p) for p in ct_version.split(".")) < CONSUL_TEMPLATE_BACKOFF_FIXED
    ):
        warnings.append(
            f"{source}: versions.consul_template {ct_version} overflows its retry backoff "
            "(hashicorp/consul-template#1028): once Consul has been away for about six minutes "
            "the LB's consul-template spins one core and floods its log; use 0.19.4 or later "
            "(the default is 0.19.5)."
        )

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


def load_spec(path: str | os.PathLike | None = None) -> tuple[LabSpec, list[str]]:
    """Read and validate a spec file."""
    file = spec_path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise SpecError(
            [f"{file}: cannot read the lab spec ({exc.strerror}); pass --spec FILE."]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise SpecError([f"{file}: not valid YAML{line}; fix the syntax there."]) from None
    spec, warnings = parse_spec(data, source=file.name)
    spec._source = file.resolve()
    return spec, warnings
