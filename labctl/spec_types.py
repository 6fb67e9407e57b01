"""What the sections of the lab spec share: strict mappings, the value types of their
fields (addresses, subnets, ports, local paths), and a host, which both the spec
(labctl/spec.py) and its services (labctl/services.py) read.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

HIGHEST_PORT = 65535


class StrictModel(BaseModel):
    """A mapping of the spec: unknown keys refused, and no coercion of YAML's types (no
    `true` read as 1, no "2" read as 2: a value of the wrong type is named instead)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _written_as_text(value: object) -> object:
    """Addresses are written as text: YAML reads 3232249858 as a number, which
    ipaddress would silently take for 192.168.56.2."""
    if isinstance(value, str | ipaddress.IPv4Address | ipaddress.IPv4Network):
        return value
    raise ValueError("is not an address; write it as text, e.g. 192.168.56.2")


def _network(value: object) -> object:
    """A subnet, written as its network address: one with host bits set names which
    network was meant."""
    value = _written_as_text(value)
    if not isinstance(value, str):
        return value
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("is not an IPv4 network; write it as ADDRESS/PREFIX, e.g. "
                         "192.168.56.0/24") from None  # fmt: skip
    if network.version != 4:
        raise ValueError("is an IPv6 network; the lab runs on IPv4: write e.g. 192.168.56.0/24")
    if ipaddress.ip_interface(value).ip != network.network_address:
        raise ValueError(f"has host bits set; did you mean {network}?")
    return network


Address = Annotated[ipaddress.IPv4Address, Strict(False), BeforeValidator(_written_as_text)]
Subnet = Annotated[ipaddress.IPv4Network, Strict(False), BeforeValidator(_network)]
LocalPath = Annotated[Path, Strict(False)]
# A port, as TCP has them.
Port = Annotated[int, Field(ge=1, le=HIGHEST_PORT)]


class Host(StrictModel):
    name: str
    address: Address
    consul: Literal["server", "client", "none"] = "client"
    bootstrap: bool = False
    lb: bool = False
    # Instances of the first service (services[0]) on this host: the spec's key `demo`,
    # the seed's live-stream API's count.
    first_service_count: int = Field(0, alias="demo")
    # Per-host overrides for the ssh provider; default to the address and the
    # spec-wide ssh settings.
    ssh_host: str | None = None
    ssh_user: str | None = None
    ssh_port: Port | None = None
    ssh_key: str | None = None
