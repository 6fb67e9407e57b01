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

from roles.consul import token_header
from roles.contract import (
    DEMO_SERVICE_ROLE,
    LAB_CONTAINER_ARGS,
    LAB_LABEL,
    LOCAL_CONSUL,
    MANAGED_BY_META,
    ROLE_LABEL,
    LabHost,
    Registration,
    ServiceInstance,
)
from roles.host_images import image_ref
from roles.operations import consul_services_absent, containers_pruned, service_instance

DEFAULTS = {
    # The instances and each service's tags and check settings come from the spec's
    # `services` (the host's LabHost, labctl/host_data.py).

    # Extra environment of every instance (e.g. {"TZ": "Asia/Shanghai"}); a change
    # replaces the instances one at a time, with no failed request.
    "demo_environment": {},
}


def registration(lab: LabHost, instance: ServiceInstance) -> dict:
    """The agent/service/register body for one instance (the seed's, plus Meta)."""
    service: Registration = lab.services[instance.service]
    check = service.check
    url = f"http://{instance.address}:{instance.port}{check.path}"
    return {
        "ID": instance.id,
        "Name": instance.service,
        "Tags": list(service.tags),
        "Address": instance.address,
        "Port": instance.port,
        "EnableTagOverride": False,
        "Meta": {MANAGED_BY_META: DEMO_SERVICE_ROLE, "title": instance.title},
        "Check": {
            "Name": f"HTTP {url}",
            "HTTP": url,
            "Interval": check.interval,
            "Timeout": check.timeout,
            "DeregisterCriticalServiceAfter": check.deregister_critical_after,
        },
    }


def instance_args(instance: ServiceInstance, environment: dict[str, str]) -> list[str]:
    """The instance container's arguments: who it is, where it listens, and the extra
    environment of every instance."""
    return [
        *LAB_CONTAINER_ARGS,
        f"-e=DEMO_ID={instance.id}",
        f"-e=DEMO_TITLE={instance.title}",
        f"-e=DEMO_ADDRESS={instance.address}",
        f"-e=DEMO_PORT={instance.port}",
        *(f"-e={k}={v}" for k, v in sorted(environment.items())),
    ]


@deploy("Deploy demo service", data_defaults=DEFAULTS)
def demo_service() -> None:
    data = host.data
    lab: LabHost = data.lab_host
    wanted = [i.id for i in lab.instances]

    # Instances the spec no longer has: out of Consul and out of the LBs, then stopped.
    consul_services_absent(
        name="Deregister removed instances",
        http_addr=LOCAL_CONSUL,
        managed_by=DEMO_SERVICE_ROLE,
        keep=wanted,
        lb_addresses=list(lab.lb_addresses),
        consul_header=token_header(lab),
    )
    containers_pruned(
        name="Remove containers of removed instances",
        label=f"{ROLE_LABEL}={DEMO_SERVICE_ROLE}",
        keep=wanted,
    )
    if not lab.instances:
        return

    image, image_id = image_ref(DEMO_SERVICE_ROLE)
    for instance in lab.instances:
        service_instance(
            name=f"Run and register {instance.id} on :{instance.port}",
            container_name=instance.id,
            image=image,
            image_id=image_id,
            args=instance_args(instance, data.demo_environment),
            labels={LAB_LABEL: lab.lab_name, ROLE_LABEL: DEMO_SERVICE_ROLE},
            http_addr=LOCAL_CONSUL,
            definition=registration(lab, instance),
            lb_addresses=list(lab.lb_addresses),
            consul_header=token_header(lab),
            # A changed instance is replaced one at a time across the lab.
            _serial=True,
        )
