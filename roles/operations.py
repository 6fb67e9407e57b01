"""Facts and operations the roles share, where pyinfra has no built-in that fits.

Each operation reads a fact, yields only the commands needed, and records a
no-op otherwise, so a re-apply of an unchanged lab reports zero changes.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, OperationError, operation
from pyinfra.facts.docker import DockerVolume
from pyinfra.facts.files import FileContents, Sha1File
from pyinfra.operations import files

from labctl.paths import LAB_LABEL

__all__ = ["LAB_LABEL", "ROLE_LABEL", "SPEC_LABEL"]

# Label holding a hash of everything a container was created from. pyinfra's
# docker.container does not notice changed arguments; this label does.
SPEC_LABEL = "io.labctl.spec"
ROLE_LABEL = "io.labctl.role"

# What the lab keeps on a host besides containers, volumes and /etc/lab: the images it
# loaded (one reference a line, so teardown removes those and no others), uploads.
HOST_STATE_DIR = "/var/lib/lab"
IMAGE_RECORD = f"{HOST_STATE_DIR}/images"
# Image archives from the control machine wait here, until loaded.
ARCHIVE_PREFIX = "/tmp/lab-images-"
# The host-side image resolver (templates/images/lab-image), and its uploads.
LAB_IMAGE_TOOL = f"{HOST_STATE_DIR}/bin/lab-image"
UPLOADS_DIR = f"{HOST_STATE_DIR}/uploads"

# How to list, and remove, Docker objects by label.
_LIST = {
    "container": ("ps -a", "{{.Names}}", "docker rm -f -v"),
    "volume": ("volume ls", "{{.Name}}", "docker volume rm -f"),
    "network": ("network ls", "{{.Name}}", "docker network rm"),
}


class DockerImageIds(FactBase):
    """Image ID by reference (repository:tag) of every tagged image on the host."""

    requires_command = "docker"

    def command(self) -> str:
        return "docker image ls --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}'"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return dict(line.split() for line in output if len(line.split()) == 2)


class DockerContainerState(FactBase):
    """{"spec": <spec label>, "running": bool} of a container, or None when absent."""

    requires_command = "docker"

    def command(self, container: str) -> str:
        template = f'{{{{index .Config.Labels "{SPEC_LABEL}"}}}} {{{{.State.Running}}}}'
        name = shlex.quote(container)
        return f"docker inspect --format {shlex.quote(template)} {name} 2>/dev/null || true"

    def process(self, output: list[str]) -> dict | None:
        # A container made without the label (e.g. by hand, as in the seed) prints
        # " true": present, with an empty spec, so it is recreated, not run twice.
        words = " ".join(output).rsplit(None, 1)
        if not words or words[-1] not in ("true", "false"):
            return None
        return {"spec": words[0].strip() if len(words) == 2 else "", "running": words[-1] == "true"}


class DockerLabelled(FactBase):
    """Names of the containers, volumes or networks (`kind`) carrying a label (key=value)."""

    requires_command = "docker"

    def command(self, kind: str, label: str) -> str:
        listing, name_format, _ = _LIST[kind]
        return f"docker {listing} --filter label={shlex.quote(label)} --format '{name_format}'"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


class ConsulAgentServices(FactBase):
    """The local Consul agent's services (GET /v1/agent/services), by ID."""

    requires_command = "curl"

    def command(self, http_addr: str) -> str:
        return f"curl -fsS --max-time 10 {shlex.quote(http_addr)}/v1/agent/services"

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict:
        return json.loads("\n".join(output) or "{}")


def spec_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def recorded(refs: list[str]) -> str:
    """A command adding `refs` to the record of images the lab put on this host."""
    quoted = " ".join(shlex.quote(r) for r in sorted(refs))
    return f"mkdir -p {HOST_STATE_DIR} && printf '%s\\n' {quoted} >> {IMAGE_RECORD}"


@operation()
def images_present(images: dict[str, str], archive: str):
    """Load `archive` (a `docker save` of `images`: ref -> ID) unless the host has them all."""
    current = host.get_fact(DockerImageIds)
    missing = [ref for ref, image_id in images.items() if current.get(ref) != image_id]
    if not missing:
        host.noop(f"images present: {', '.join(sorted(images))}")
        return
    remote = f"{ARCHIVE_PREFIX}{spec_hash(images)}.tar"
    yield from files.put._inner(src=archive, dest=remote)
    # Recorded first: a load that fails half-way still leaves a record for teardown.
    yield f"{recorded(missing)} && docker load -i {remote} && rm -f {remote}"


@operation()
def images_obtained(images: dict[str, dict], base_image: str, bundle: str | None = None):
    """Every image in `images` present on the host, obtained there by LAB_IMAGE_TOOL: loaded
    from `bundle` (a `labctl bundle save` file on the control machine) when it is
    `bundled`, else pulled, else built from its recipe archive on the control machine.

    `images`: ref -> {"bundled": bool, "recipe": archive or None, "build_args": {k: v}}.
    """
    current = host.get_fact(DockerImageIds)
    missing = sorted(ref for ref in images if ref not in current)
    if not missing:
        host.noop(f"images present: {', '.join(sorted(images))}")
        return
    bundled = [ref for ref in missing if images[ref]["bundled"]]
    if bundled:
        remote = f"{UPLOADS_DIR}/{bundle.rsplit('/', 1)[-1]}"
        yield from files.put._inner(src=bundle, dest=remote)
        yield shlex.join([LAB_IMAGE_TOOL, "load", remote, *bundled])
    for ref in (r for r in missing if r not in bundled):
        recipe = images[ref]["recipe"]
        command = [LAB_IMAGE_TOOL, "get", ref]
        if recipe is not None:
            remote = f"{UPLOADS_DIR}/{recipe.rsplit('/', 1)[-1]}"
            yield from files.put._inner(src=recipe, dest=remote)
            build_args = sorted(images[ref]["build_args"].items())
            command += ["--recipe", remote, "--base", base_image]
            command += [f"--build-arg={name}={value}" for name, value in build_args]
        yield shlex.join(command)


@operation()
def volume(volume_name: str, labels: dict[str, str]):
    """A named volume, created with `labels` (the lab's label lets teardown find it).

    A volume that exists is left as it is: Docker cannot relabel one, and it holds data."""
    if host.get_fact(DockerVolume, object_id=volume_name):
        host.noop(f"volume {volume_name} exists")
        return
    label_args = [f"--label={k}={v}" for k, v in sorted(labels.items())]
    yield shlex.join(["docker", "volume", "create", *label_args, volume_name])


@operation()
def labelled_absent(kind: str, label: str):
    """No container, volume or network (`kind`) carrying `label` (key=value) is left."""
    names = host.get_fact(DockerLabelled, kind=kind, label=label)
    if not names:
        host.noop(f"no {kind} labelled {label}")
        return
    yield f"{_LIST[kind][2]} " + " ".join(shlex.quote(n) for n in names)


@operation()
def recorded_images_absent(record: str = IMAGE_RECORD):
    """Remove the images the lab recorded putting on this host (and no others)."""
    refs = sorted(set(host.get_fact(FileContents, path=record) or []) - {""})
    present = host.get_fact(DockerImageIds)
    gone = [ref for ref in refs if ref in present]
    if not gone:
        host.noop("no image of the lab is left")
        return
    yield "docker image rm " + " ".join(shlex.quote(ref) for ref in gone)


@operation()
def json_keys(path: str, set_keys: dict | None = None, unset_keys: list[str] = ()):
    """Own some keys of the JSON object in `path`: `set_keys` merged into what is there,
    `unset_keys` taken out of it, every other key left alone. An emptied file is removed."""
    lines = host.get_fact(FileContents, path=path)
    try:
        current = json.loads("\n".join(lines)) if lines else {}
    except ValueError:
        current = None
    if not isinstance(current, dict):
        raise OperationError(f"{path} holds no JSON object; fix or remove it, then retry.")
    wanted = {k: v for k, v in current.items() if k not in unset_keys} | (set_keys or {})
    if wanted == current and (lines is not None or not wanted):
        host.noop(f"{path} is up to date")
        return
    if not wanted:
        yield f"rm -f {shlex.quote(path)}"
        return
    content = json.dumps(wanted, indent=2, sort_keys=True) + "\n"
    yield from files.put._inner(src=StringIO(content), dest=path, mode="644")


@operation()
def container(
    container_name: str,
    image: str,
    image_id: str,
    args: list[str],
    command: list[str] = (),
    labels: dict[str, str] | None = None,
    depends_on: str = "",
):
    """A running container created from exactly this spec; recreated when the spec changes.

    `depends_on` is any extra content (e.g. a config file's hash) whose change must
    recreate the container too.
    """
    labels = dict(labels or {})
    digest = spec_hash(image_id, args, list(command), labels, depends_on)
    name = container_name
    state = host.get_fact(DockerContainerState, container=name)
    if state is not None and state["spec"] == digest:
        if state["running"]:
            host.noop(f"container {name} is up to date")
        else:
            yield f"docker start {shlex.quote(name)}"
        return
    if state is not None:
        yield f"docker rm -f {shlex.quote(name)}"
    label_args = [f"--label={k}={v}" for k, v in sorted((labels | {SPEC_LABEL: digest}).items())]
    yield shlex.join(["docker", "run", "-d", f"--name={name}", *label_args, *args, image, *command])


@operation()
def containers_pruned(label: str, keep: list[str]):
    """Remove the containers carrying `label` (key=value) whose names are not in `keep`."""
    names = host.get_fact(DockerLabelled, kind="container", label=label)
    stale = [n for n in names if n not in keep]
    if not stale:
        host.noop(f"no stale containers labelled {label}")
        return
    yield "docker rm -f " + " ".join(shlex.quote(n) for n in stale)


@operation()
def validated_file(content: str, dest: str, validate: str):
    """Install `content` at `dest` only if `validate` (run with {} as the staged file's
    directory) accepts it; a rejected file never replaces the one in use."""
    digest = hashlib.sha1(content.encode()).hexdigest()
    if host.get_fact(Sha1File, path=dest) == digest:
        host.noop(f"{dest} is up to date")
        return
    staging_dir = f"{dest}.staged.d"
    staged = f"{staging_dir}/{dest.rsplit('/', 1)[-1]}"
    q_dir, q_staged, q_dest = (shlex.quote(p) for p in (staging_dir, staged, dest))
    yield f"rm -rf {q_dir} && mkdir -p {q_dir}"
    yield from files.put._inner(src=StringIO(content), dest=staged)
    yield validate.format(q_dir)
    yield f"mv {q_staged} {q_dest} && rm -rf {q_dir}"


@operation()
def consul_service(http_addr: str, definition: dict):
    """Register a service with the local agent unless it is registered from this definition."""
    digest = spec_hash(definition)
    registered = host.get_fact(ConsulAgentServices, http_addr=http_addr).get(definition["ID"])
    if registered and registered.get("Meta", {}).get("lab_spec") == digest:
        host.noop(f"service {definition['ID']} is registered")
        return
    body = definition | {"Meta": {**definition.get("Meta", {}), "lab_spec": digest}}
    yield (
        f"printf %s {shlex.quote(json.dumps(body, ensure_ascii=False))} | curl -fsS -X PUT "
        f"--data-binary @- {http_addr}/v1/agent/service/register?replace-existing-checks=true"
    )


@operation()
def consul_services_absent(http_addr: str, managed_by: str, keep: list[str]):
    """Deregister the services this lab registered (Meta.lab_managed) that are not in `keep`."""
    services = host.get_fact(ConsulAgentServices, http_addr=http_addr)
    stale = sorted(
        sid
        for sid, service in services.items()
        if service.get("Meta", {}).get("lab_managed") == managed_by and sid not in keep
    )
    if not stale:
        host.noop("no stale services")
        return
    for sid in stale:
        yield f"curl -fsS -X PUT {http_addr}/v1/agent/service/deregister/{shlex.quote(sid)}"
