"""Role `demo_service`: the instances of the lab's services (the seed's live-stream API
and any other service of the spec), each registered with its own host's Consul agent
with an HTTP health check.

The seed's PHP script registers all three instances on the client agent. Here
each instance is registered with the agent on its own host: an agent owns the
services registered with it, so when a host (or its agent) dies, exactly that
host's instances go critical and leave the pool, and no other agent keeps
advertising instances it cannot check from where they run.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from roles.consul import DEFAULTS as CONSUL_DEFAULTS
from roles.consul import token_header
from roles.images import image_ref
from roles.operations import (
    LAB_LABEL,
    ROLE_LABEL,
    consul_services_absent,
    containers_pruned,
    service_instance,
)

DEFAULTS = {
    # The instances (`demo_instances`) and each service's tags and check settings
    # (`demo_services`) come from the spec's `services` (labctl/inventory.py).

    # Extra environment of every instance (e.g. {"TZ": "Asia/Shanghai"}); a change
    # replaces the instances one at a time, with no failed request.
    "demo_environment": {},
    # The local agent the instances register with, and the file holding the host's
    # registration token (both the consul role's).
    "consul_http_addr": CONSUL_DEFAULTS["consul_http_addr"],
    "consul_token_header": CONSUL_DEFAULTS["consul_token_header"],
}

ROLE = "demo_service"


def registration(data, instance: dict) -> dict:
    """The agent/service/register body for one instance (the seed's, plus Meta)."""
    service = data.demo_services[instance["service"]]
    check = service["check"]
    url = f"http://{instance['address']}:{instance['port']}{check['path']}"
    return {
        "ID": instance["id"],
        "Name": instance["service"],
        "Tags": list(service["tags"]),
        "Address": instance["address"],
        "Port": instance["port"],
        "EnableTagOverride": False,
        "Meta": {"lab_managed": ROLE, "title": instance["title"]},
        "Check": {
            "Name": f"HTTP {url}",
            "HTTP": url,
            "Interval": check["interval"],
            "Timeout": check["timeout"],
            "DeregisterCriticalServiceAfter": check["deregister_critical_after"],
        },
    }


@deploy("Deploy demo service", data_defaults=DEFAULTS)
def demo_service() -> None:
    data = host.data
    instances = data.demo_instances
    wanted = [i["id"] for i in instances]

    # Instances the spec no longer has: out of Consul and out of the LB, then stopped.
    consul_services_absent(
        name="Deregister removed instances",
        http_addr=data.consul_http_addr,
        managed_by=ROLE,
        keep=wanted,
        lb_address=data.lab_lb_address,
        consul_header=token_header(data),
    )
    containers_pruned(
        name="Remove containers of removed instances",
        label=f"{ROLE_LABEL}={ROLE}",
        keep=wanted,
    )
    if not instances:
        return

    image, image_id = image_ref(ROLE)
    for instance in instances:
        service_instance(
            name=f"Run and register {instance['id']} on :{instance['port']}",
            container_name=instance["id"],
            image=image,
            image_id=image_id,
            args=[
                "--net=host",
                "--restart=unless-stopped",
                f"-e=DEMO_ID={instance['id']}",
                f"-e=DEMO_TITLE={instance['title']}",
                f"-e=DEMO_ADDRESS={instance['address']}",
                f"-e=DEMO_PORT={instance['port']}",
                *(f"-e={k}={v}" for k, v in sorted(data.demo_environment.items())),
            ],
            labels={LAB_LABEL: data.lab_name, ROLE_LABEL: ROLE},
            http_addr=data.consul_http_addr,
            definition=registration(data, instance),
            lb_address=data.lab_lb_address,
            consul_header=token_header(data),
            # A changed instance is replaced one at a time across the lab.
            _serial=True,
        )
