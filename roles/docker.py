"""Role `docker`: install, configure and start the Docker engine on a lab host.

Every host gets the distribution's engine package (Debian and Ubuntu ship it as
`docker.io`), the lab's keys in daemon.json (merged into a file the machine may
already have: the role owns only its keys, so teardown removes exactly those), and a
running, enabled service. Re-applying changes nothing; changing a daemon option
restarts the engine once.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, systemd

from roles.operations import json_keys

SUPPORTED_DISTRIBUTIONS = ("Debian", "Ubuntu")
DAEMON_JSON = "/etc/docker/daemon.json"

DEFAULTS = {
    # Distribution packages that provide the engine and its CLI, without what they
    # merely recommend (git, needrestart, criu and perl: two thirds of the install).
    "docker_packages": ["docker.io"],
    # What the engine's recommendations hold that the lab needs: AppArmor's parser
    # (an engine on a kernel with AppArmor loads its profile with it), CA certificates
    # (pulls over HTTPS), xz (compressed image archives), cgroupfs-mount. Those a host
    # lacks are installed marked automatic, as the engine's own recommendations are.
    "docker_recommended_packages": ["apparmor", "ca-certificates", "cgroupfs-mount", "xz-utils"],
    # An apt proxy for the install (labctl.aptcache), given as http_proxy to these apt
    # runs only: nothing is written on the host.
    "docker_apt_proxy": None,
    # Seconds an `apt-get update` stays fresh; re-applies inside it skip the update.
    "docker_apt_cache_time": 86400,
    # Registry mirrors for hosts that pull images themselves (daemon.json `registry-mirrors`).
    "docker_registry_mirrors": [],
    # Container log rotation, so a long-running lab cannot fill the disk.
    "docker_log_max_size": "10m",
    "docker_log_max_file": 3,
    # Extra daemon.json keys, merged last (e.g. {"bip": "10.99.0.1/24"}).
    "docker_daemon_options": {},
}


def daemon_config(data) -> dict:
    """daemon.json as a dict, from the host's data."""
    config: dict = {
        "log-driver": "json-file",
        "log-opts": {
            "max-size": data.docker_log_max_size,
            "max-file": str(data.docker_log_max_file),
        },
    }
    if data.docker_registry_mirrors:
        config["registry-mirrors"] = list(data.docker_registry_mirrors)
    return config | dict(data.docker_daemon_options)


def owned_daemon_keys(data) -> list[str]:
    """Every daemon.json key this role may write for the host's data, set or not now."""
    return sorted({"log-driver", "log-opts", "registry-mirrors", *data.docker_daemon_options})


def apt_env(data) -> dict[str, str]:
    """The environment of the lab's apt runs: the apt proxy, when there is one."""
    proxy = data.get("docker_apt_proxy")
    return {"http_proxy": proxy} if proxy else {}


@deploy("Deploy Docker", data_defaults=DEFAULTS)
def install_docker() -> None:
    distribution = host.get_fact(LinuxDistribution)
    if distribution["name"] not in SUPPORTED_DISTRIBUTIONS:
        raise DeployError(
            f"{host.name} runs {distribution['name'] or 'an unknown OS'}; the docker role "
            f"supports {' and '.join(SUPPORTED_DISTRIBUTIONS)} only: use a Debian or Ubuntu box."
        )

    # Written before the package so a first install starts with the right options.
    config = daemon_config(host.data)
    daemon = json_keys(
        name=f"Write the lab's keys in {DAEMON_JSON}",
        path=DAEMON_JSON,
        set_keys=config,
        # A key the role owns but the data no longer sets (a dropped mirror) goes.
        unset_keys=[k for k in owned_daemon_keys(host.data) if k not in config],
    )
    apt.packages(
        name="Install what the engine needs of its recommendations",
        packages=host.data.docker_recommended_packages,
        update=True,
        cache_time=host.data.docker_apt_cache_time,
        no_recommends=True,
        # As the engine's dependencies: a purge of the engine (--autoremove) takes them.
        extra_install_args="--mark-auto",
        _env=apt_env(host.data),
    )
    packages = apt.packages(
        name="Install the Docker engine",
        packages=host.data.docker_packages,
        no_recommends=True,
        _env=apt_env(host.data),
    )
    systemd.service(
        name="Start and enable the Docker engine",
        service="docker",
        running=True,
        enabled=True,
    )
    systemd.service(
        name="Restart the Docker engine for the new daemon.json",
        service="docker",
        restarted=True,
        # A fresh install already started with the new file.
        _if=lambda: daemon.did_change() and not packages.did_change(),
    )
