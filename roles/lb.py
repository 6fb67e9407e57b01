"""Role `lb`: nginx + consul-template on the LB host, `--net=host` as in the seed.

consul-template watches the local Consul agent and renders templates/lb/service.ctmpl;
its command (lb-reload) installs the result only if `nginx -t` accepts it, then
reloads nginx, and always exits 0 so consul-template keeps running. The last good
configuration lives on a volume, so nginx serves it from its first second after a
restart (templates/lb/start.sh); every apply checks that the LB really serves its
latest render and repairs it when not.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from roles.consul import DEFAULTS as CONSUL_DEFAULTS
from roles.images import image_ref
from roles.operations import LAB_LABEL, ROLE_LABEL, container, load_balancer_healthy

DEFAULTS = {
    "lb_container_name": "lb",
    # consul-template's quiescence (min:max): changes arriving within `min` of each
    # other make one render, at most `max` after the first; no reload storms.
    "lb_wait": "2s:10s",
    "lb_log_level": "info",
    # The local agent consul-template reads (host:port, as its -consul-addr).
    "lb_consul_addr": CONSUL_DEFAULTS["consul_http_addr"].removeprefix("http://"),
    # Volume for the last good configuration and the reload counters.
    "lb_state_volume": "lb-state",
}


@deploy("Deploy load balancer", data_defaults=DEFAULTS)
def load_balancer() -> None:
    data = host.data
    image, image_id = image_ref("lb")
    lb = container(
        name="Run nginx + consul-template",
        container_name=data.lb_container_name,
        image=image,
        image_id=image_id,
        args=[
            "--net=host",
            "--restart=unless-stopped",
            "--mount=type=volume,"
            f"src={data.lb_state_volume},dst=/var/lib/lb,volume-label={LAB_LABEL}={data.lab_name}",
            f"-e=CONSUL_URL={data.lb_consul_addr}",
            f"-e=LB_WAIT={data.lb_wait}",
            f"-e=LB_LOG_LEVEL={data.lb_log_level}",
            # /_lab/ (reload counters, the configuration nginx runs) answers the lab only.
            f"-e=LB_ALLOW_CIDRS={' '.join(data.lb_allow_cidrs)}",
        ],
        labels={LAB_LABEL: data.lab_name, ROLE_LABEL: "lb"},
    )
    load_balancer_healthy(
        name="Check that the LB serves its latest render",
        container_name=data.lb_container_name,
        # A container just (re)started renders afresh by itself.
        _if=lambda: not lb.did_change(),
    )
