"""Role `teardown`: remove from a host everything the other roles put there.

What `labctl down` runs on existing machines (the ssh road), where destroying the
machine is not ours to do; Ansible roles' `state: absent` is the model. Each step
reads facts and removes only what is there, so it is safe after a failed `up` and
when run twice:

- the lab's containers, volumes and networks (all carry the lab's label), and the
  containers registrator registered for a `registration: registrator` service of the spec
  (they carry its SERVICE_NAME label: someone started them there for the lab);
- the address the LBs share, should a killed keepalived have left it on an interface;
- the images the lab loaded, pulled or built (its record on the host), no others;
- the daemon.json keys the docker role owns (the engine reloads what it can);
- /etc/lab (configuration), the lab's state directory, the programs the roles install
  (lab-wait) and image archives in /tmp.

The Docker engine stays installed unless `lab_purge_engine` is set (`labctl down
--purge-engine`): then its packages are purged with what they pulled in, and with
them every image and container left on the engine.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FindFiles
from pyinfra.facts.server import Which
from pyinfra.operations import apt, files, systemd

from roles.contract import (
    ARCHIVE_PREFIX,
    HOST_STATE_DIR,
    LAB_CONFIG_ROOT,
    LAB_LABEL,
    LAB_WAIT,
    LB_SYSCTL_FILE,
    PURGE_ENGINE,
    REGISTRATOR_REGISTRATION,
)
from roles.docker import DAEMON_JSON, owned_daemon_keys
from roles.docker import DEFAULTS as DOCKER_DEFAULTS
from roles.operations import address_absent, json_keys, labelled_absent, recorded_images_absent

# Programs the roles install outside LAB_CONFIG_ROOT: role consul's lab-wait.
LAB_PROGRAMS = (LAB_WAIT,)

DEFAULTS = {
    # Also remove the Docker engine (its packages and data): `labctl down --purge-engine`.
    PURGE_ENGINE: False,
    # The docker role's, read back: the packages a purge removes, the daemon.json keys
    # that role owns.
    "docker_packages": DOCKER_DEFAULTS["docker_packages"],
    "docker_daemon_options": DOCKER_DEFAULTS["docker_daemon_options"],
}


@deploy("Remove the lab", data_defaults=DEFAULTS)
def remove_lab() -> None:
    data = host.data
    label = f"{LAB_LABEL}={data.lab_host.lab_name}"
    engine = host.get_fact(Which, command="docker")
    if engine:
        for kind in ("container", "volume", "network"):
            labelled_absent(name=f"Remove the lab's {kind}s", kind=kind, label=label)
        for service, registration in sorted(data.lab_host.services.items()):
            if registration.mode == REGISTRATOR_REGISTRATION:
                labelled_absent(
                    name=f"Remove the containers started for {service}",
                    kind="container",
                    label=f"SERVICE_NAME={service}",
                )
        recorded_images_absent(name="Remove the images the lab put here")
    vrrp = data.lab_host.lb.vrrp if data.lab_host.lb else None
    if vrrp is not None:
        address_absent(
            name=f"Remove the LBs' shared address {vrrp.address}",
            address=vrrp.address,
        )
        files.file(name=f"Remove {LB_SYSCTL_FILE}", path=LB_SYSCTL_FILE, present=False)
    daemon = json_keys(
        name=f"Remove the lab's keys from {DAEMON_JSON}",
        path=DAEMON_JSON,
        unset_keys=owned_daemon_keys(data),
    )
    for path in (LAB_CONFIG_ROOT, HOST_STATE_DIR):
        files.directory(name=f"Remove {path}", path=path, present=False)
    for path in LAB_PROGRAMS:
        files.file(name=f"Remove {path}", path=path, present=False)
    directory, prefix = ARCHIVE_PREFIX.rsplit("/", 1)
    for archive in host.get_fact(FindFiles, path=directory, maxdepth=1, fname=f"{prefix}*"):
        files.file(name=f"Remove {archive}", path=archive, present=False)

    if data.get(PURGE_ENGINE):
        apt.packages(
            name="Purge the Docker engine",
            packages=data.docker_packages,
            present=False,
            extra_uninstall_args="--purge --autoremove",
        )
        # The package's purge empties /var/lib/docker itself (Debian's postrm).
        for path in ("/etc/docker", "/var/lib/containerd"):
            files.directory(name=f"Remove {path}", path=path, present=False)
    elif engine:
        systemd.service(
            name="Reload the Docker engine without the lab's keys",
            service="docker",
            reloaded=True,
            _if=daemon.did_change,
        )
