"""Role `lb`: nginx + consul-template on the LB host, `--net=host` as in the seed.

consul-template watches the local Consul agent and renders templates/lb/service.ctmpl;
its command (lb-reload) installs the result only if `nginx -t` accepts it, then
reloads nginx, and always exits 0 so consul-template keeps running. The last good
configuration lives on a volume, so nginx serves it from its first second after a
restart (templates/lb/start.sh); every apply checks that the LB really serves its
latest render and repairs it when not.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files

from roles.contract import (
    CONSUL_TEMPLATE_TOKEN,
    LAB_CONTAINER_ARGS,
    LAB_LABEL,
    LB_CONTAINER,
    LB_ROLE,
    LOCAL_CONSUL,
    ROLE_LABEL,
    LabHost,
)
from roles.host_images import image_ref
from roles.operations import container, load_balancer_healthy, spec_hash

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
    files.put(
        name="Write consul-template's Consul token",
        src=StringIO(lab.lb.consul_token or ""),
        dest=CONSUL_TEMPLATE_TOKEN,
        user="root",
        group="root",
        mode="600",
    )
    return [f"-v={CONSUL_TEMPLATE_TOKEN}:{TOKEN_IN_CONTAINER}:ro"]


@deploy("Deploy load balancer", data_defaults=DEFAULTS)
def load_balancer() -> None:
    data = host.data
    lab: LabHost = data.lab_host
    image, image_id = image_ref(LB_ROLE)
    secret_args = _token_mount(data, lab)
    state_volume = f"src={data.lb_state_volume},dst=/var/lib/lb"
    lb = container(
        name="Run nginx + consul-template",
        container_name=LB_CONTAINER,
        image=image,
        image_id=image_id,
        args=[
            *LAB_CONTAINER_ARGS,
            f"--mount=type=volume,{state_volume},volume-label={LAB_LABEL}={lab.lab_name}",
            # The local agent consul-template reads (host:port, its -consul-addr).
            f"-e=CONSUL_URL={LOCAL_CONSUL.removeprefix('http://')}",
            f"-e=LB_WAIT={data.lb_wait}",
            f"-e=LB_LOG_LEVEL={data.lb_log_level}",
            # /_lab/ (reload counters, the configuration nginx runs) answers the lab only.
            f"-e=LB_ALLOW_CIDRS={' '.join(lab.lb.allow_cidrs)}",
            *secret_args,
        ],
        labels={LAB_LABEL: lab.lab_name, ROLE_LABEL: LB_ROLE},
        # A new token restarts consul-template with it (start.sh reads it at start).
        depends_on=spec_hash(lab.lb.consul_token or ""),
    )
    load_balancer_healthy(
        name="Check that the LB serves its latest render",
        container_name=LB_CONTAINER,
        # A container just (re)started renders afresh by itself.
        _if=lambda: not lb.did_change(),
    )
