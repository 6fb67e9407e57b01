"""Role `demo_service`: the instances of the lab's services (the seed's live-stream API
and any other service of the spec), each registered with its own host's Consul agent
with an HTTP health check: by this role (`registration: lab`), or by registrator from
the labels the instance carries (`registration: registrator`, roles/registrator.py).

The seed's PHP script registers all three instances on the client agent. Here
each instance is registered with the agent on its own host: an agent owns the
services registered with it, so when a host (or its agent) dies, exactly that
host's instances go critical and leave the pool, and no other agent keeps
advertising instances it cannot check from where they run.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Hostname

from roles.consul import token_header
from roles.contract import (
    DEMO_SERVICE_ROLE,
    LAB_CONTAINER_ARGS,
    LAB_LABEL,
    LOCAL_CONSUL,
    MANAGED_BY_META,
    REGISTRATOR_REGISTRATION,
    ROLE_LABEL,
    LabHost,
    Registration,
    ServiceInstance,
    registrator_service_id,
)
from roles.host_images import image_ref
from roles.operations import (
    consul_services_absent,
    containers_pruned,
    registrator_instance,
    registrator_instances_drained,
    rolling,
    service_instance,
)

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


def registrator_labels(service: Registration, instance: ServiceInstance) -> dict[str, str]:
    """The metadata registrator registers an instance from (docs/registrator.md): the
    service's name, tags and HTTP check, as labels."""
    check = service.check
    return {
        "SERVICE_NAME": instance.service,
        # Registrator registers the tags in reverse order: given reversed, they arrive
        # in the spec's.
        "SERVICE_TAGS": ",".join(reversed(service.tags)),
        "SERVICE_CHECK_HTTP": check.path,
        "SERVICE_CHECK_INTERVAL": check.interval,
        "SERVICE_CHECK_TIMEOUT": check.timeout,
        "SERVICE_CHECK_DEREGISTER_AFTER": check.deregister_critical_after,
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
    # Registrator's: in maintenance and out of the LBs; their removal deregisters them.
    registrator_instances_drained(
        name="Drain removed instances registrator registered",
        http_addr=LOCAL_CONSUL,
        hostname=host.get_fact(Hostname),
        label=f"{ROLE_LABEL}={DEMO_SERVICE_ROLE}",
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
    labels = {LAB_LABEL: lab.lab_name, ROLE_LABEL: DEMO_SERVICE_ROLE}
    for instance in lab.instances:
        if lab.services[instance.service].mode == REGISTRATOR_REGISTRATION:
            _instance_for_registrator(lab, instance, image, image_id, labels)
            continue
        rolling(
            service_instance,
            instance.id,
            name=f"Run and register {instance.id} on :{instance.port}",
            image=image,
            image_id=image_id,
            args=instance_args(instance, data.demo_environment),
            labels=labels,
            http_addr=LOCAL_CONSUL,
            definition=registration(lab, instance),
            lb_addresses=list(lab.lb_addresses),
            consul_header=token_header(lab),
        )


def _instance_for_registrator(
    lab: LabHost, instance: ServiceInstance, image: str, image_id: str, labels: dict[str, str]
) -> None:
    """A registrator-mode instance: a plain container with registrator's labels and its
    one port exposed (registrator sees a host-network container's port only so)."""
    args = [*instance_args(instance, host.data.demo_environment), f"--expose={instance.port}"]
    rolling(
        registrator_instance,
        instance.id,
        name=f"Run {instance.id} on :{instance.port} for registrator",
        image=image,
        image_id=image_id,
        args=args,
        labels=labels | registrator_labels(lab.services[instance.service], instance),
        http_addr=LOCAL_CONSUL,
        service_id=registrator_service_id(host.get_fact(Hostname), instance.id, instance.port),
        where=f"{instance.address}:{instance.port}",
        lb_addresses=list(lab.lb_addresses),
        consul_header=token_header(lab),
    )
