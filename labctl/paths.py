"""Where a lab keeps its local state, and how it names what it creates."""

from __future__ import annotations

import json
import os
from pathlib import Path

from labctl.spec import PROJECT_ROOT, LabSpec

# What labctl keeps between labs on this machine: downloads, image archives, apt's cache.
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labctl"

# Label on every container and volume the lab creates, so `down` can find them
# even after a failed or partial `up`.
LAB_LABEL = "io.labctl.lab"


def lab_dir(spec: LabSpec) -> Path:
    """Local state of one lab: Vagrant's machine records and keys, the chosen provider."""
    return PROJECT_ROOT / ".lab" / spec.name


def vagrant_dotfile_path(spec: LabSpec) -> Path:
    return lab_dir(spec) / "vagrant"


def docker_network_name(spec: LabSpec) -> str:
    """The network Vagrant's docker provider creates for the spec's private network."""
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
    return lab_dir(spec) / "state.json"


def read_state(spec: LabSpec) -> dict:
    try:
        return json.loads(_state_file(spec).read_text())
    except (OSError, ValueError):
        return {}


def write_state(spec: LabSpec, **values: object) -> None:
    state = read_state(spec) | values
    _state_file(spec).parent.mkdir(parents=True, exist_ok=True)
    _state_file(spec).write_text(json.dumps(state, indent=2) + "\n")


def with_demo_counts(spec: LabSpec, counts: dict[str, int]) -> LabSpec:
    """The spec with these per-host demo counts (hosts not named keep theirs)."""
    hosts = [h.model_copy(update={"demo": counts.get(h.name, h.demo)}) for h in spec.hosts]
    scaled = spec.model_copy(update={"hosts": hosts})
    scaled._source = spec.source
    return scaled


def with_images(spec: LabSpec, images: dict[str, str]) -> LabSpec:
    """The spec with these `images` settings (the offline road's stand-ins)."""
    update = {k: Path(v) if k == "consul_template_binary" else v for k, v in images.items()}
    changed = spec.model_copy(update={"images": spec.images.model_copy(update=update)})
    changed._source = spec.source
    return changed


def with_state(spec: LabSpec) -> LabSpec:
    """The spec with what the lab's state records over it: the demo counts `scale`
    recorded, and the stand-ins `up --offline` chose."""
    state = read_state(spec)
    if state.get("demo_counts"):
        spec = with_demo_counts(spec, state["demo_counts"])
    if state.get("offline"):
        spec = with_images(spec, state["offline"])
    return spec
