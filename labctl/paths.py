"""Where a lab keeps its local state, and how it names what it creates."""

from __future__ import annotations

import json
import os
from pathlib import Path

from labctl.spec import PROJECT_ROOT, LabSpec, SpecError

# What labctl keeps between labs on this machine: downloads, image archives, apt's cache.
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labctl"


# Each lab's recorded state (provider, images, machines, counts), in its lab_dir.
STATE_FILE = "state.json"


def labs_dir() -> Path:
    """Where this checkout keeps its labs' local state."""
    return PROJECT_ROOT / ".lab"


def lab_dir(spec: LabSpec) -> Path:
    """Local state of one lab: Vagrant's machine records and keys, the chosen provider."""
    return labs_dir() / spec.name


def labs_with_state() -> list[str]:
    """The labs of this checkout that are up, or were left half up or half down."""
    return sorted(state.parent.name for state in labs_dir().glob(f"*/{STATE_FILE}"))


def vagrant_dotfile_path(spec: LabSpec) -> Path:
    return lab_dir(spec) / "vagrant"


def vagrant_ssh_info_dir(spec: LabSpec) -> Path:
    """Where the Vagrantfile's trigger leaves each machine's SSH data after `vagrant up`
    (one JSON file per machine, keys as `vagrant ssh-config` prints them)."""
    return lab_dir(spec) / "vagrant-ssh"


def vagrant_home(spec: LabSpec) -> Path:
    """Vagrant's own data directory for the lab's docker-provider machines (VAGRANT_HOME:
    its machine index, locks, keys), so that the lab's entries go with the lab."""
    return lab_dir(spec) / "vagrant-home"


def docker_network_name(spec: LabSpec) -> str:
    """The lab's network on the docker road, labctl's since it makes it before `vagrant
    up` (the name Vagrant's docker provider gives the network it makes for a subnet, so a
    lab made before is found)."""
    return f"vagrant_network_{spec.network.subnet}"


def host_container_name(spec: LabSpec, host: str) -> str:
    return f"{spec.name}-{host}"


def host_volume_name(spec: LabSpec, host: str) -> str:
    return f"{spec.name}-{host}-var-lib-docker"


def log_summary(path: Path) -> str:
    """The line of a log most likely to name the cause: the last error, else the last line."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return "no output"
    errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    return (errors or lines or ["no output"])[-1][:300]


def _state_file(spec: LabSpec) -> Path:
    return lab_dir(spec) / STATE_FILE


class StateError(SpecError):
    """The lab's state file is there but cannot be read: never taken for "no state"."""


def read_state(spec: LabSpec) -> dict:
    """The lab's recorded state; {} when it has none (never created, or down)."""
    file = _state_file(spec)
    try:
        state = json.loads(file.read_text())
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateError([f"{file}: cannot read the lab's state ({exc.strerror}); run labctl "
                          "as the user who brought the lab up."]) from None  # fmt: skip
    except ValueError as exc:
        why = f"not JSON: {exc}"
    else:
        if isinstance(state, dict):
            return state
        why = f"a JSON {type(state).__name__}, not an object"
    raise StateError([
        f"{file} is not the state labctl wrote ({why}); restore it, or move it away and run "
        "`labctl down` to remove what the lab left by its spec."
    ])  # fmt: skip


def not_up_problem(spec: LabSpec) -> str | None:
    """Why the lab counts as not up, from its state alone (no host is asked): no state,
    or a state that records no provider, which only `up` writes, before it creates any
    host. None when `up` has created (or begun to create) its hosts."""
    file = _state_file(spec)
    if read_state(spec).get("provider"):
        return None
    why = f"{file} records no hosts" if file.exists() else f"there is no {file}"
    return f"lab {spec.name} is not up ({why}); run `labctl up` first."


def write_state(spec: LabSpec, **values: object) -> None:
    state = read_state(spec) | values
    _state_file(spec).parent.mkdir(parents=True, exist_ok=True)
    _state_file(spec).write_text(json.dumps(state, indent=2) + "\n")


def forget_state(spec: LabSpec, *keys: str) -> None:
    state = {k: v for k, v in read_state(spec).items() if k not in keys}
    _state_file(spec).parent.mkdir(parents=True, exist_ok=True)
    _state_file(spec).write_text(json.dumps(state, indent=2) + "\n")


def recorded_counts(spec: LabSpec) -> dict[str, dict[str, int]]:
    """Service name -> host -> count, as `scale` recorded them for the spec's services. An
    older state file's `demo_counts` (before services) are the first service's."""
    state = read_state(spec)
    recorded = dict(state.get("service_counts", {}))
    if state.get("demo_counts") and spec.services:
        recorded.setdefault(spec.services[0].name, state["demo_counts"])
    names = {s.name for s in spec.services}
    return {name: counts for name, counts in recorded.items() if name in names}


def record_counts(spec: LabSpec, service: str, counts: dict[str, int]) -> None:
    """Record `scale`'s counts for `service`, dropping those of services the spec no
    longer has (and the older `demo_counts`, now kept per service)."""
    write_state(spec, service_counts=recorded_counts(spec) | {service: counts})
    forget_state(spec, "demo_counts")


def forget_removed_services(spec: LabSpec) -> None:
    """Drop recorded counts of services the spec no longer has, so a service added again
    later starts from the spec's counts."""
    recorded = read_state(spec).get("service_counts", {})
    names = {s.name for s in spec.services}
    if recorded.keys() - names:
        write_state(spec, service_counts={k: v for k, v in recorded.items() if k in names})


def with_images(spec: LabSpec, images: dict[str, str]) -> LabSpec:
    """The spec with these `images` settings (the offline road's stand-ins)."""
    update = {k: Path(v) if k == "consul_template_binary" else v for k, v in images.items()}
    changed = spec.model_copy(update={"images": spec.images.model_copy(update=update)})
    changed._source = spec.source
    return changed


def with_state(spec: LabSpec) -> LabSpec:
    """The spec with what the lab's state records over it: the counts `scale` recorded,
    and the stand-ins `up --offline` chose."""
    for service, counts in recorded_counts(spec).items():
        spec = spec.with_counts(service, counts)
    offline = read_state(spec).get("offline")
    if offline:
        spec = with_images(spec, offline)
    return spec
