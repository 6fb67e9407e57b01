"""Role `registrator`: registrator beside the Consul agent, on every agent host once a
service of the spec says `registration: registrator` (docs/registrator.md).

Registrator watches the host's Docker engine and registers every container that carries
a SERVICE_NAME label with the host's agent (`-explicit`), as `<host>:<container>:<port>`
at the host's address; a container that dies is deregistered. It reads the engine's
socket, mounted read-only: that socket is root on the host all the same, so nothing
else runs in this container and it has no port. Its Consul token, with ACLs, may write
the registrator-mode services only; it comes from a root-only file mounted read-only
(CONSUL_HTTP_TOKEN_FILE), never from an argument or the container's environment.
Where no service is registrator's, `registrator_absent` removes a registrator left from
before, once the instances it registered are gone.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from roles.contract import (
    LAB_CONTAINER_ARGS,
    LAB_LABEL,
    LOCAL_CONSUL,
    REGISTRATOR_CONTAINER,
    REGISTRATOR_ROLE,
    REGISTRATOR_TOKEN,
    ROLE_LABEL,
    LabHost,
)
from roles.host_images import image_ref
from roles.operations import container, containers_pruned, root_only_file, spec_hash

DEFAULTS = {
    # Seconds between registrator's resyncs (-resync): the only repair of a Docker event
    # it lost, a registration Consul refused while away, and a fast restart; each costs a
    # container list and a re-registration per service, no change in Consul.
    "registrator_resync": 10,
}

# The host's engine socket, read-only where registrator looks for it (DOCKER_HOST's
# default, unix:///tmp/docker.sock).
DOCKER_SOCKET_MOUNT = "-v=/var/run/docker.sock:/tmp/docker.sock:ro"
# Where the token file is mounted in the container.
TOKEN_IN_CONTAINER = "/run/registrator/token"


def registrator_command(lab: LabHost, resync: int) -> list[str]:
    """registrator's arguments: only containers with SERVICE_NAME, at the host's address
    (not `-internal`: a host-network container has no address of its own), resynced,
    what went away while it was down cleaned up, and Consul waited for forever."""
    return [
        "-explicit",
        "-ip", lab.address,
        "-resync", str(resync),
        "-cleanup",
        "-retry-attempts", "-1",
        f"consul://{LOCAL_CONSUL.removeprefix('http://')}",
    ]  # fmt: skip


def _token_mount(lab: LabHost) -> list[str]:
    """With ACLs: registrator's token in a root-only file, mounted read-only; registrator
    (root in its container) reads it once at start."""
    if not lab.consul.acl:
        return []
    root_only_file("Write registrator's Consul token", lab.registrator.token or "",
                   REGISTRATOR_TOKEN)  # fmt: skip
    return [
        f"-v={REGISTRATOR_TOKEN}:{TOKEN_IN_CONTAINER}:ro",
        f"-e=CONSUL_HTTP_TOKEN_FILE={TOKEN_IN_CONTAINER}",
    ]


@deploy("Remove registrator")
def registrator_absent() -> None:
    """Where no service is registrator's (any more): registrator removed, after role
    demo_service removed the instances it had registered (their `die` deregisters them)."""
    containers_pruned(
        name="Remove registrator (no service is registrator's)",
        label=f"{ROLE_LABEL}={REGISTRATOR_ROLE}",
        keep=[],
    )


@deploy("Deploy registrator", data_defaults=DEFAULTS)
def registrator() -> None:
    data = host.data
    lab: LabHost = data.lab_host
    image, image_id = image_ref(REGISTRATOR_ROLE)
    container(
        name="Run registrator",
        container_name=REGISTRATOR_CONTAINER,
        image=image,
        image_id=image_id,
        args=[*LAB_CONTAINER_ARGS, DOCKER_SOCKET_MOUNT, *_token_mount(lab)],
        command=registrator_command(lab, int(data.registrator_resync)),
        labels={LAB_LABEL: lab.lab_name, ROLE_LABEL: REGISTRATOR_ROLE},
        # A new token restarts registrator with it (it reads the file once, at start).
        depends_on=spec_hash(lab.registrator.token or ""),
    )
