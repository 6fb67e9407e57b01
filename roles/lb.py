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

from roles.consul import DEFAULTS as CONSUL_DEFAULTS
from roles.images import image_ref
from roles.operations import LAB_LABEL, ROLE_LABEL, container, load_balancer_healthy, spec_hash

DEFAULTS = {
    # The container running nginx and consul-template on the LB host.
    "lb_container_name": "lb",
    # consul-template's quiescence (min:max): changes arriving within `min` of each
    # other make one render, at most `max` after the first: no reload storm from a
    # flapping check.
    "lb_wait": "2s:10s",
    # consul-template's -log-level; not debug or trace with ACLs on: 0.19 prints its
    # Consul token at those levels.
    "lb_log_level": "info",
    # The local agent consul-template reads (host:port, as its -consul-addr).
    "lb_consul_addr": CONSUL_DEFAULTS["consul_http_addr"].removeprefix("http://"),
    # Volume for the last good configuration and the reload counters.
    "lb_state_volume": "lb-state",
    # With ACLs: the root-only file holding consul-template's token, mounted read-only
    # into the container, where start.sh hands it over in CONSUL_HTTP_TOKEN.
    "lb_token_file": f"{CONSUL_DEFAULTS['consul_secrets_dir']}/consul-template.token",
}

# consul-template 0.19 prints its whole configuration, token included, at these levels.
LOG_LEVELS_SHOWING_THE_TOKEN = ("debug", "trace")


@deploy("Deploy load balancer", data_defaults=DEFAULTS)
def load_balancer() -> None:
    data = host.data
    image, image_id = image_ref("lb")
    secret_args: list[str] = []
    if data.consul_acl:
        if data.lb_log_level.lower() in LOG_LEVELS_SHOWING_THE_TOKEN:
            raise DeployError(
                f"{host.name}: lb_log_level {data.lb_log_level} makes consul-template 0.19 "
                "print its Consul token in its log; use info (or warn) with ACLs on."
            )
        files.put(
            name="Write consul-template's Consul token",
            src=StringIO(data.lb_consul_token or ""),
            dest=data.lb_token_file,
            user="root",
            group="root",
            mode="600",
        )
        secret_args = [f"-v={data.lb_token_file}:/run/secrets/consul-template.token:ro"]
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
            *secret_args,
        ],
        labels={LAB_LABEL: data.lab_name, ROLE_LABEL: "lb"},
        # A new token restarts consul-template with it (start.sh reads it at start).
        depends_on=spec_hash(data.lb_consul_token or ""),
    )
    load_balancer_healthy(
        name="Check that the LB serves its latest render",
        container_name=data.lb_container_name,
        # A container just (re)started renders afresh by itself.
        _if=lambda: not lb.did_change(),
    )
