"""Role `lb`: nginx + consul-template on the LB host, `--net=host` as in the seed.

consul-template watches the local Consul agent and renders templates/lb/service.ctmpl;
its command (lb-reload) installs the result only if `nginx -t` accepts it, then
reloads nginx, and always exits 0 so consul-template keeps running. The last good
configuration lives on a volume, so nginx serves it from its first second after a
restart (templates/lb/start.sh); every apply checks that the LB really serves its
latest render and repairs it when not.

With more than one LB host (network.lb_address), keepalived runs beside the LB on each,
in a container of its own (docs/lb-pair.md): VRRP gives the shared address to the LB
whose nginx serves and whose priority is highest (the spec's order). Before this role
stops or replaces a running LB (or keepalived), that LB hands the address over
(templates/keepalived/vrrp-handover) and stays drained; the LB hosts are changed one
at a time. At the end of the run the address is handed, the same planned way, to the
first LB that serves, and the drains are lifted in priority order, which moves nothing.
A lab with one LB runs no keepalived at all.
"""

from __future__ import annotations

import json
from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.facts.server import Mounts, Sysctl
from pyinfra.operations import files, server

from roles.contract import (
    ARP_OWN_INTERFACE_ONLY,
    CONSUL_TEMPLATE_TOKEN,
    KEEPALIVED_CONFIG_DIR,
    KEEPALIVED_CONTAINER,
    KEEPALIVED_DRAIN_FILE,
    KEEPALIVED_ROLE,
    KEEPALIVED_STATE_DIR,
    LAB_CONTAINER_ARGS,
    LAB_LABEL,
    LB_CONTAINER,
    LB_REGISTRATION_FILE,
    LB_ROLE,
    LB_SPEC_DIR,
    LB_SYSCTL_FILE,
    LOCAL_CONSUL,
    ROLE_LABEL,
    TEMPLATES,
    VRRP_HANDOVER_SECONDS,
    VRRP_READY_COMMAND,
    VRRP_UNDRAIN_COMMAND,
    LabHost,
    vrrp_drain_command,
)
from roles.facts import InterfaceWithAddress
from roles.host_images import image_ref
from roles.operations import (
    address_yielded,
    container,
    drain_lifted,
    load_balancer_healthy,
    root_only_file,
    spec_hash,
)

DEFAULTS = {
    # consul-template's quiescence (min:max): changes arriving within `min` of each
    # other make one render, at most `max` after the first: no reload storm from a
    # flapping check.
    "lb_wait": "2s:10s",
    # consul-template's -log-level; not debug or trace with ACLs on: 0.19 prints its
    # Consul token at those levels.
    "lb_log_level": "info",
    # Volume for the last good configuration and the reload counters.
    "lb_state_volume": "lb-state",
    # With several LBs: seconds between VRRP adverts (VRRPv3 takes fractions). A master
    # that stops advertising is replaced after 3 of them and a skew (~0.65 s at 0.2).
    "lb_vrrp_advert_int": 0.2,
    # With several LBs: seconds a planned hand-over waits for another LB to hold the
    # address and serve before it gives up (and stops nothing).
    "lb_handover_timeout": VRRP_HANDOVER_SECONDS,
    # With several LBs: seconds a replaced LB has, once the address is with another, to
    # finish the requests it is serving (nginx's graceful quit) before it is killed.
    "lb_stop_timeout": 10,
}

# consul-template 0.19 prints its whole configuration, token included, at these levels.
LOG_LEVELS_SHOWING_THE_TOKEN = ("debug", "trace")
# Where start.sh reads consul-template's token (mounted read-only from the host).
TOKEN_IN_CONTAINER = "/run/secrets/consul-template.token"


def _token_mount(data, lab: LabHost) -> list[str]:
    """With ACLs: consul-template's token in a root-only file, mounted read-only into the
    container, where start.sh hands it over in CONSUL_HTTP_TOKEN (never an argument)."""
    if not lab.consul.acl:
        return []
    if data.lb_log_level.lower() in LOG_LEVELS_SHOWING_THE_TOKEN:
        raise DeployError(
            f"{host.name}: lb_log_level {data.lb_log_level} makes consul-template 0.19 "
            "print its Consul token in its log; use info (or warn) with ACLs on."
        )
    root_only_file("Write consul-template's Consul token", lab.lb.consul_token or "",
                   CONSUL_TEMPLATE_TOKEN)  # fmt: skip
    return [f"-v={CONSUL_TEMPLATE_TOKEN}:{TOKEN_IN_CONTAINER}:ro"]


def _publish_registration(lab: LabHost) -> list[str]:
    """Who registers each service, for the LB's page (Consul does not say): a file in a
    directory mounted read-only where nginx serves /_lab/spec/. A change needs no restart."""
    modes = {name: registration.mode for name, registration in lab.services.items()}
    files.directory(name="Make the LB's spec directory", path=LB_SPEC_DIR, mode="755")
    files.put(
        name="Write who registers each service, for the LB's page",
        src=StringIO(json.dumps(modes, sort_keys=True) + "\n"),
        dest=f"{LB_SPEC_DIR}/{LB_REGISTRATION_FILE}",
        mode="644",
    )
    return [f"-v={LB_SPEC_DIR}:/var/lib/lb/spec:ro"]
KEEPALIVED_TEMPLATE = TEMPLATES / "keepalived" / "keepalived.conf.j2"
# What keepalived needs of the kernel: add and remove the address (NET_ADMIN), send and
# receive VRRP and gratuitous ARP (NET_RAW, NET_BROADCAST). Only its container has them.
VRRP_CAPABILITIES = ("NET_ADMIN", "NET_RAW", "NET_BROADCAST")


def _state_volume(data, lab: LabHost) -> str:
    """The LB's state volume (its last good configuration, counters, and keepalived's
    vrrp.json), mounted at /var/lib/lb by the LB and keepalived alike."""
    return (
        f"--mount=type=volume,src={data.lb_state_volume},dst=/var/lib/lb,"
        f"volume-label={LAB_LABEL}={lab.lab_name}"
    )


def _handover(data, lab: LabHost) -> tuple[str, str]:
    """The commands that hand the shared address over before this host's LB stops, and
    wait until it serves again (still drained: `_address_to_the_first_lb` ends the
    hand-over); none with a single LB."""
    vrrp = lab.lb.vrrp
    if vrrp is None:
        return "", ""
    peers = [peer.address for peer in vrrp.lbs if peer.name != lab.name]
    drain = vrrp_drain_command(lab.name, vrrp.address, peers, int(data.lb_handover_timeout))
    return drain, VRRP_READY_COMMAND


def _address_to_the_first_lb(data, lab: LabHost) -> None:
    """The end of every run on an LB pair: whichever LB holds the address hands it on
    (a planned move) while an LB ahead of it serves, then every drain is lifted, the
    first LB's first. Lifting a drain while another LB held the address would move it
    by preemption, with no hold on the old holder (docs/lb-pair.md)."""
    vrrp = lab.lb.vrrp
    drain, _ = _handover(data, lab)
    position = [peer.name for peer in vrrp.lbs].index(lab.name)
    address_yielded(
        name="Hand the shared address to the first LB that serves",
        address=vrrp.address,
        higher=[peer.address for peer in vrrp.lbs[:position]],
        drain=drain,
        _serial=True,
    )
    # pyinfra runs a serial operation host by host in the inventory's order, which is
    # the spec's: the LBs' priority order.
    drain_lifted(
        name="Lift the drains, in priority order",
        path=KEEPALIVED_DRAIN_FILE,
        undrain=VRRP_UNDRAIN_COMMAND,
        _serial=True,
    )


def _arp_for_own_interface_only() -> None:
    """The kernel settings that keep the shared address on this LB host's loopback
    unannounced (roles/contract.py), made to last: in place before keepalived starts, as
    its start.sh wants them. The docker road's hosts are made with them (their /proc/sys
    is read-only inside)."""
    current = host.get_fact(Sysctl, keys=list(ARP_OWN_INTERFACE_ONLY))
    differ = [f"{key}={current.get(key)}" for key, value in ARP_OWN_INTERFACE_ONLY.items()
              if current.get(key) != value]  # fmt: skip
    proc_sys = host.get_fact(Mounts).get("/proc/sys", {})
    if differ and "ro" in proc_sys.get("options", []):
        raise DeployError(
            f"{host.name}: this LB host answers ARP for addresses of any interface "
            f"({', '.join(differ)}) and its /proc/sys is read-only, so the lab cannot keep the "
            "shared address on its loopback unannounced; a docker-road host made before LB "
            "hosts got these settings has to be made again (`labctl down`, then `labctl up`)."
        )
    for key, value in ARP_OWN_INTERFACE_ONLY.items():
        server.sysctl(
            name=f"Set {key} = {value} (the shared address on loopback stays unannounced)",
            key=key,
            value=value,
            persist=True,
            persist_file=LB_SYSCTL_FILE,
        )


def _keepalived(data, lab: LabHost) -> None:
    """keepalived beside the LB: its configuration from the Jinja2 template, its drain
    directory, its container; a changed configuration is reloaded (SIGHUP), a replaced
    container hands the address over first."""
    vrrp = lab.lb.vrrp
    _arp_for_own_interface_only()
    interface = host.get_fact(InterfaceWithAddress, address=lab.address)
    if interface is None:
        raise DeployError(
            f"{host.name}: no interface holds its address {lab.address}, so keepalived cannot "
            "tell where to add the LBs' shared address; give the host that address (or fix "
            "hosts[].address in the spec)."
        )
    for directory, mode in ((KEEPALIVED_CONFIG_DIR, "755"), (KEEPALIVED_STATE_DIR, "755")):
        files.directory(name=f"Directory {directory}", path=directory, mode=mode)
    config = files.template(
        name="Configure keepalived (VRRP for the shared LB address)",
        src=str(KEEPALIVED_TEMPLATE),
        dest=f"{KEEPALIVED_CONFIG_DIR}/keepalived.conf",
        mode="644",
        vrrp_hosts=[{"name": peer.name, "address": peer.address} for peer in vrrp.lbs],
        vrrp_host=lab.name,
        vrrp_address=vrrp.address,
        vrrp_prefixlen=vrrp.prefixlen,
        vrrp_interface=interface,
        vrrp_advert_int=data.lb_vrrp_advert_int,
        vrrp_unicast=vrrp.unicast,
    )
    drain, ready = _handover(data, lab)
    image, image_id = image_ref(KEEPALIVED_ROLE)
    keepalived = container(
        name="Run keepalived",
        container_name=KEEPALIVED_CONTAINER,
        image=image,
        image_id=image_id,
        args=[
            *LAB_CONTAINER_ARGS,
            *(f"--cap-add={cap}" for cap in VRRP_CAPABILITIES),
            f"-v={KEEPALIVED_CONFIG_DIR}:/etc/keepalived:ro",
            f"-v={KEEPALIVED_STATE_DIR}:/var/lib/keepalived",
            _state_volume(data, lab),
            # Also on loopback, unannounced (start.sh): answers owed after a move still leave.
            f"-e=LB_ADDRESS={vrrp.address}",
        ],
        labels={LAB_LABEL: lab.lab_name, ROLE_LABEL: KEEPALIVED_ROLE},
        before_replace=drain,
        replaced_ready=ready,
        _serial=True,
    )
    server.shell(
        name="Reload keepalived's new configuration",
        commands=[f"docker kill --signal=HUP {KEEPALIVED_CONTAINER}"],
        _if=lambda: config.did_change() and not keepalived.did_change(),
    )


@deploy("Deploy load balancer", data_defaults=DEFAULTS)
def load_balancer() -> None:
    data = host.data
    lab: LabHost = data.lab_host
    if lab.lb.vrrp is not None:
        _keepalived(data, lab)
    drain, ready = _handover(data, lab)
    # A replaced LB of a pair, the address gone to another, finishes what it serves
    # (its answers leave from the address on loopback) before `docker rm -f`.
    graceful = f"{drain} && docker stop --time {int(data.lb_stop_timeout)} {LB_CONTAINER}"
    image, image_id = image_ref(LB_ROLE)
    secret_args = _token_mount(data, lab)
    spec_args = _publish_registration(lab)
    lb = container(
        name="Run nginx + consul-template",
        container_name=LB_CONTAINER,
        image=image,
        image_id=image_id,
        args=[
            *LAB_CONTAINER_ARGS,
            _state_volume(data, lab),
            # The local agent consul-template reads (host:port, its -consul-addr).
            f"-e=CONSUL_URL={LOCAL_CONSUL.removeprefix('http://')}",
            f"-e=LB_WAIT={data.lb_wait}",
            f"-e=LB_LOG_LEVEL={data.lb_log_level}",
            # /_lab/ (reload counters, the configuration nginx runs) answers the lab only.
            f"-e=LB_ALLOW_CIDRS={' '.join(lab.lb.allow_cidrs)}",
            *secret_args,
            *spec_args,
        ],
        labels={LAB_LABEL: lab.lab_name, ROLE_LABEL: LB_ROLE},
        # A new token restarts consul-template with it (start.sh reads it at start).
        depends_on=spec_hash(lab.lb.consul_token or ""),
        before_replace=graceful if drain else "",
        replaced_ready=ready,
        # Several LBs are replaced one at a time: another holds the address meanwhile.
        _serial=lab.lb.vrrp is not None,
    )
    load_balancer_healthy(
        name="Check that the LB serves its latest render",
        container_name=LB_CONTAINER,
        before_restart=drain,
        after_restart=ready,
        # A container just (re)started renders afresh by itself.
        _if=lambda: not lb.did_change(),
        _serial=lab.lb.vrrp is not None,
    )
    if lab.lb.vrrp is not None:
        _address_to_the_first_lb(data, lab)
