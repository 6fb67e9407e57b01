"""Operations the roles share, where pyinfra has no built-in that fits.

Each operation reads facts (roles/facts.py), yields only the commands needed, and
records a no-op otherwise, so a re-apply of an unchanged lab reports zero changes.

Changing a running lab must not cost a request. The operations that replace
what serves traffic (a service instance, a Consul agent) therefore drain and
wait inside one operation, and the roles call them through `rolling()`, so
pyinfra replaces one at a time across the hosts (`_serial=True`), while first
starts, which take nothing out of service, run on every host at once. The waits
are `lab-wait` (templates/lab-wait, installed by role consul).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable, Iterator, Sequence
from io import StringIO

from pyinfra import host
from pyinfra.api import FunctionCommand, OperationError, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import FileContents, Sha1File
from pyinfra.operations import files as files_op

from roles.contract import (
    ARCHIVE_PREFIX,
    HOST_STATE_DIR,
    IMAGE_RECORD,
    LAB_IMAGE_TOOL,
    MANAGED_BY_META,
    SPEC_LABEL,
    UPLOADS_DIR,
    lb_serves_again_command,
)
from roles.facts import (
    DOCKER_OBJECTS,
    AddressesOnInterfaces,
    ConsulAgentServices,
    DockerContainerState,
    DockerImageIds,
    DockerLabelled,
    ImageUserIds,
    LoadBalancerHealth,
    OutrankedHolder,
    curl_token_option,
)

# The Meta key holding a hash of a registration as the lab made it: a registration
# whose hash differs (or that has none) is made again.
REGISTRATION_DIGEST_META = "lab_spec"


def spec_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _run_command(
    name: str, image: str, args: list[str], command: list[str], labels: dict[str, str]
) -> str:
    label_args = [f"--label={k}={v}" for k, v in sorted(labels.items())]
    run = ["docker", "run", "-d", f"--name={name}", *label_args, *args, image, *command]
    return shlex.join(run)


def _register_command(http_addr: str, definition: dict, digest: str, header: str | None) -> str:
    body = definition | {"Meta": {**definition.get("Meta", {}), REGISTRATION_DIGEST_META: digest}}
    return (
        f"printf %s {shlex.quote(json.dumps(body, ensure_ascii=False))} | curl -fsS -X PUT"
        f"{curl_token_option(header)} --data-binary @- "
        f"{http_addr}/v1/agent/service/register?replace-existing-checks=true"
    )


def _deregister_command(http_addr: str, service_id: str, header: str | None) -> str:
    return (
        f"curl -fsS -X PUT{curl_token_option(header)} "
        f"{http_addr}/v1/agent/service/deregister/{shlex.quote(service_id)}"
    )


def lab_wait(*args: str, consul_header: str | None = None) -> str:
    """A `lab-wait` command (templates/lab-wait) reading Consul with the token in the
    file `consul_header`, if any."""
    env = f"LAB_CONSUL_HEADER={shlex.quote(consul_header)} " if consul_header else ""
    return env + shlex.join(["lab-wait", *args])


def agent_fact(fact: type, http_addr: str, header: str | None):
    """A fact about the local agent, read with the token in `header` when there is one.
    An agent that answers, but not with the fact (a str: a 403, a 500, no answer in time),
    stops the run here: taken for "no services", it would have the instances removed
    from the spec stopped without being deregistered first."""
    answer = host.get_fact(fact, http_addr=http_addr, **({"header": header} if header else {}))
    if isinstance(answer, str):
        raise OperationError(
            f"the Consul agent on {host.name} ({http_addr}) {answer}, so the lab cannot tell "
            f"which instances it holds there; see `docker logs consul` on {host.name}, then "
            "run `labctl apply` (after a 403, `labctl up`: it makes any token Consul lost "
            "again)."
        )
    return answer


def recorded(refs: list[str]) -> str:
    """A command adding `refs` to the record of images the lab put on this host."""
    quoted = " ".join(shlex.quote(r) for r in sorted(refs))
    return f"mkdir -p {HOST_STATE_DIR} && printf '%s\\n' {quoted} >> {IMAGE_RECORD}"


def _load_over_openssh(state, host, archive: str, command: list[str]) -> bool:
    """Stream `archive` into `docker load` on the host through OpenSSH (`command`), in a
    process of its own per host, beside the other hosts' (gevent's subprocess)."""
    from gevent import subprocess as gevent_subprocess

    with open(archive, "rb") as source:
        process = gevent_subprocess.Popen(
            command, stdin=source, stdout=gevent_subprocess.PIPE, stderr=gevent_subprocess.STDOUT
        )
        output, _ = process.communicate()
    if process.returncode == 0:
        return True
    lines = output.decode(errors="replace").strip().splitlines()
    host.log_styled(lines[-1] if lines else f"ssh exited with {process.returncode}", fg="red")
    return False


@operation()
def images_present(images: dict[str, str], archive: str, openssh_load: list[str] | None = None):
    """Load `archive` (a `docker save` of `images`: ref -> ID) unless the host has them all:
    streamed into `openssh_load` (an OpenSSH command running `docker load` on the host),
    else uploaded over pyinfra's connection, then loaded."""
    current = host.get_fact(DockerImageIds)
    missing = [ref for ref, image_id in images.items() if current.get(ref) != image_id]
    if not missing:
        host.noop(f"images present: {', '.join(sorted(images))}")
        return
    if openssh_load:
        # Recorded first: a load that fails half-way still leaves a record for teardown.
        yield recorded(missing)
        yield FunctionCommand(_load_over_openssh, (archive, openssh_load), {})
        return
    remote = f"{ARCHIVE_PREFIX}{spec_hash(images)}.tar"
    yield from files_op.put._inner(src=archive, dest=remote)
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
        yield from files_op.put._inner(src=bundle, dest=remote)
        yield shlex.join([LAB_IMAGE_TOOL, "load", remote, *bundled])
    for ref in (r for r in missing if r not in bundled):
        recipe = images[ref]["recipe"]
        command = [LAB_IMAGE_TOOL, "get", ref]
        if recipe is not None:
            remote = f"{UPLOADS_DIR}/{recipe.rsplit('/', 1)[-1]}"
            yield from files_op.put._inner(src=recipe, dest=remote)
            build_args = sorted(images[ref]["build_args"].items())
            command += ["--recipe", remote, "--base", base_image]
            command += [f"--build-arg={name}={value}" for name, value in build_args]
        yield shlex.join(command)


def container_digest(
    image_id: str, args: list[str], command=(), labels: dict | None = None, depends_on: str = ""
) -> str:
    """The spec label of a container made by `container` with these arguments."""
    return spec_hash(image_id, args, list(command), dict(labels or {}), depends_on)


def replaces_running(container_name: str, digest: str) -> bool:
    """Whether `container` will replace the running container `container_name` (its spec
    label differs from `digest`): the only case its `replaced_ready` runs."""
    state = host.get_fact(DockerContainerState, container=container_name)
    return state is not None and state["running"] and state["spec"] != digest


def rolling(op: Callable[..., OperationMeta], container_name: str, **kwargs) -> OperationMeta:
    """`op` (container, service_instance, registrator_instance) on the container
    `container_name`: one host at a time where the host has that container already, so a
    replacement never has two hosts out at once; on every host at once where it has none
    yet, since a first start takes nothing out of service (pyinfra orders the first
    starts before the replacements)."""
    if host.get_fact(DockerContainerState, container=container_name) is None:
        return op(container_name=container_name, **kwargs)
    return op(container_name=container_name, _serial=True, **kwargs)


@operation()
def container(
    container_name: str,
    image: str,
    image_id: str,
    args: list[str],
    command: list[str] = (),
    labels: dict[str, str] | None = None,
    depends_on: str = "",
    replaced_ready: str = "",
    before_replace: str = "",
):
    """A running container created from exactly this spec; recreated when the spec changes.

    `depends_on` is any extra content (e.g. a config file's hash) whose change must
    recreate the container too. `before_replace` runs first when a running container is
    about to be replaced (an LB hands the shared address over), `replaced_ready` after:
    it waits until the new container serves again, so a rolling change (`_serial=True`)
    moves on to the next host only then. Neither runs for a first start.
    """
    labels = dict(labels or {})
    digest = container_digest(image_id, args, command, labels, depends_on)
    state = host.get_fact(DockerContainerState, container=container_name)
    current = state is not None and state["spec"] == digest
    if current and state["running"]:
        host.noop(f"container {container_name} is up to date")
        return
    replacing = not current and state is not None and state["running"]
    if replacing and before_replace:
        yield before_replace
    yield from _recreated_or_started(
        container_name, state, current, image, args, list(command), labels | {SPEC_LABEL: digest}
    )
    if replacing and replaced_ready:
        yield replaced_ready


def _lb_waits(condition: str, lb_addresses: Sequence[str], where: str) -> list[str]:
    """lab-wait on every LB: until each one's upstreams lack (lb-drops) or have (lb-serves)
    the instance at `where` (address:port)."""
    return [lab_wait(condition, address, where) for address in lb_addresses]


def _recreated_or_started(
    name: str,
    state: dict | None,
    current: bool,
    image: str,
    args: list[str],
    command: list[str],
    labels: dict[str, str],
) -> list[str]:
    """The commands that leave the container `name` (in `state`, its spec `current` or
    not) running from its spec: none, a start, or a removal and a new one (`labels`
    holds its spec label)."""
    if current:
        return [] if state["running"] else [f"docker start {shlex.quote(name)}"]
    removal = [f"docker rm -f {shlex.quote(name)}"] if state is not None else []
    return [*removal, _run_command(name, image, args, command, labels)]


@operation()
def service_instance(
    container_name: str,
    image: str,
    image_id: str,
    args: list[str],
    labels: dict[str, str],
    http_addr: str,
    definition: dict,
    lb_addresses: Sequence[str] = (),
    consul_header: str | None = None,
):
    """One service instance: its container, and its registration (`definition`, an
    agent/service/register body) with the local agent, with the token in the file
    `consul_header` when the lab has ACLs.

    A new instance is started, then registered. A live instance whose container or
    registration changed is replaced without a failed request: deregistered, out of
    every LB's upstreams (`lb_addresses`), recreated, registered, passing, back in the
    upstreams. Call it through `rolling()` so only one instance is out at a time.
    """
    sid = definition["ID"]
    container_digest = spec_hash(image_id, args, [], labels)
    registration_digest = spec_hash(definition)
    state = host.get_fact(DockerContainerState, container=container_name)
    registered = agent_fact(ConsulAgentServices, http_addr, consul_header).get(sid)
    container_current = state is not None and state["spec"] == container_digest
    registration_current = (
        registered is not None
        and registered.get("Meta", {}).get(REGISTRATION_DIGEST_META) == registration_digest
    )
    if container_current and registration_current and state["running"]:
        host.noop(f"instance {sid} is up to date")
        return

    where = f"{definition['Address']}:{definition['Port']}"
    draining = registered is not None and state is not None and state["running"]
    if draining:
        yield _deregister_command(http_addr, sid, consul_header)
        yield from _lb_waits("lb-drops", lb_addresses, where)
    yield from _recreated_or_started(
        container_name, state, container_current, image, args, [],
        labels | {SPEC_LABEL: container_digest},
    )  # fmt: skip
    if draining or not registration_current:
        yield _register_command(http_addr, definition, registration_digest, consul_header)
    if draining:
        yield lab_wait("passing", http_addr, sid, consul_header=consul_header)
        yield from _lb_waits("lb-serves", lb_addresses, where)


def _maintenance_command(http_addr: str, service_id: str, header: str | None) -> str:
    """Put a service instance in maintenance: its check critical, so the LB drops it,
    whoever registered it (registrator's instances: the lab never deregisters them)."""
    url = f"{http_addr}/v1/agent/service/maintenance/{service_id}?enable=true"
    return f"curl -fsS -X PUT{curl_token_option(header)} {shlex.quote(url)}"


@operation()
def registrator_instance(
    container_name: str,
    image: str,
    image_id: str,
    args: list[str],
    labels: dict[str, str],
    http_addr: str,
    service_id: str,
    where: str,
    lb_addresses: Sequence[str] = (),
    consul_header: str | None = None,
):
    """One instance that registrator registers (as `service_id`, at `where`, address:port):
    its container only; the lab never calls the registration API for it.

    A live instance whose container changed is replaced without a failed request: put in
    maintenance, out of every LB's upstreams, removed, deregistered by registrator (its
    `die`, or its next resync's cleanup), started again, registered by registrator,
    passing, back in the upstreams. Call it through `rolling()`."""
    digest = spec_hash(image_id, args, [], labels)
    state = host.get_fact(DockerContainerState, container=container_name)
    current = state is not None and state["spec"] == digest
    if current and state["running"]:
        host.noop(f"instance {container_name} is up to date")
        return
    labels = labels | {SPEC_LABEL: digest}
    if not (state is not None and state["running"]):
        yield from _recreated_or_started(container_name, state, current, image, args, [], labels)
        return
    if service_id in agent_fact(ConsulAgentServices, http_addr, consul_header):
        yield _maintenance_command(http_addr, service_id, consul_header)
    yield from _lb_waits("lb-drops", lb_addresses, where)
    yield f"docker rm -f {shlex.quote(container_name)}"
    # Registrator's deregistration of the old container takes the maintenance mode with
    # it; the new container's registration, under the same ID, is registrator's own.
    yield lab_wait("deregistered", http_addr, service_id, consul_header=consul_header)
    yield _run_command(container_name, image, args, [], labels)
    yield lab_wait("passing", http_addr, service_id, consul_header=consul_header)
    yield from _lb_waits("lb-serves", lb_addresses, where)


@operation()
def registrator_instances_drained(
    http_addr: str,
    hostname: str,
    label: str,
    keep: list[str],
    lb_addresses: Sequence[str] = (),
    consul_header: str | None = None,
):
    """The containers carrying `label` that are not in `keep` and that registrator
    registered on this host (`<hostname>:<container>:<port>`) put in maintenance, then
    waited out of every LB's upstreams, so that removing them costs no request; the
    removal's `die` has registrator deregister them."""
    stale = set(host.get_fact(DockerLabelled, kind="container", label=label)) - set(keep)
    services = agent_fact(ConsulAgentServices, http_addr, consul_header) if stale else {}
    draining = sorted(
        sid for sid in services if sid.count(":") == 2 and sid.split(":")[0] == hostname
        and sid.split(":")[1] in stale
    )  # fmt: skip
    if not draining:
        host.noop("no stale instance of registrator's to drain")
        return
    for sid in draining:
        yield _maintenance_command(http_addr, sid, consul_header)
    yield from _out_of_the_lbs(services, draining, lb_addresses)


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
def validated_config(config_dir: str, files: dict[str, dict], validate: str):
    """Install the files of `config_dir` (name -> {"content", and for a secret "mode" and
    "owner_from": (image, user) whose ids own it}) only if `validate`, run with {} as a
    staged copy of the whole set, accepts them together: a rejected configuration never
    replaces the one in use. A first configuration (none of the files there) has none in
    use to keep, so it is not validated apart: the service's own start checks it, and its
    role says why the service stopped. Contents travel by pyinfra's upload, never a
    command line."""
    digests = {name: hashlib.sha1(f["content"].encode()).hexdigest() for name, f in files.items()}
    present = {name: host.get_fact(Sha1File, path=f"{config_dir}/{name}") for name in files}
    changed = [name for name in files if present[name] != digests[name]]
    if not changed:
        host.noop(f"{config_dir} is up to date")
        return
    staging_dir = f"{config_dir}.staged.d"
    q_dir = shlex.quote(staging_dir)
    # Only root may look inside while secrets sit there with the upload's first mode.
    yield f"rm -rf {q_dir} && mkdir -m 700 -p {q_dir}"
    for name, file in files.items():
        owner = {}
        if "owner_from" in file:
            image, user = file["owner_from"]
            owner = host.get_fact(ImageUserIds, image=image, user=user)
        yield from files_op.put._inner(
            src=StringIO(file["content"]),
            dest=f"{staging_dir}/{name}",
            mode=file.get("mode"),
            create_remote_dir=False,
            **owner,
        )
    if any(present.values()):
        yield validate.format(q_dir)
    moves = [
        f"mv {shlex.quote(f'{staging_dir}/{n}')} {shlex.quote(f'{config_dir}/{n}')}"
        for n in changed
    ]
    yield " && ".join([f"mkdir -p {shlex.quote(config_dir)}", *moves, f"rm -rf {q_dir}"])


@operation()
def consul_services_absent(
    http_addr: str,
    managed_by: str,
    keep: list[str],
    lb_addresses: Sequence[str] = (),
    consul_header: str | None = None,
):
    """Deregister the services this lab registered (Meta MANAGED_BY_META) that are not
    in `keep`, then wait until no LB (`lb_addresses`) routes to them."""
    services = agent_fact(ConsulAgentServices, http_addr, consul_header)
    stale = sorted(
        sid
        for sid, service in services.items()
        if service.get("Meta", {}).get(MANAGED_BY_META) == managed_by and sid not in keep
    )
    if not stale:
        host.noop("no stale services")
        return
    for sid in stale:
        yield _deregister_command(http_addr, sid, consul_header)
    yield from _out_of_the_lbs(services, stale, lb_addresses)


def _out_of_the_lbs(
    services: dict[str, dict], ids: list[str], lb_addresses: Sequence[str]
) -> Iterator[str]:
    """The waits until no LB routes to any of the agent's `services` named in `ids`."""
    for sid in ids if lb_addresses else ():
        where = f"{services[sid]['Address']}:{services[sid]['Port']}"
        yield from _lb_waits("lb-drops", lb_addresses, where)


@operation()
def load_balancer_healthy(container_name: str, before_restart: str = "", after_restart: str = ""):
    """Repair an LB that runs but does not do its job (see templates/lb/lb-health): nginx
    on a configuration other than consul-template's latest render is given that render
    again (lb-reload); a dead or deaf nginx or consul-template, or an nginx that did not
    take a reload (its signal went nowhere), gets a restart, which starts nginx on the
    last good configuration and renders afresh. `before_restart` and `after_restart` run
    around a restart (an LB hands the shared address over and takes it back)."""
    health = host.get_fact(LoadBalancerHealth, container=container_name)
    if health is None:
        host.noop(f"LB {container_name} is not running; the container operation starts it")
        return
    name = shlex.quote(container_name)
    alive = health["nginx"] and health["listening"] and health["consul_template"]
    if not alive or health.get("reload_failed"):
        yield from [c for c in (before_restart, f"docker restart {name}", after_restart) if c]
    elif health["config"] == "stale":
        yield f"docker exec {name} lb-reload"
    elif health["config"] == "waiting":
        host.noop(f"LB {container_name} serves its last good configuration until Consul answers")
        return
    else:
        host.noop(f"LB {container_name} serves consul-template's latest render")
        return
    yield lb_serves_again_command(container_name)


@operation()
def address_yielded(address: str, higher: list[str], drain: str):
    """The shared address not held here while an LB ahead of this one in priority order
    (`higher`: their own addresses) serves: `drain` hands it over, a planned move like
    the one before a replacement. After a rolling change the address is with whichever
    LB took it last; run on every LB host, one at a time, this brings it to the first LB
    that serves without the unplanned move that lifting a drain would make (preemption,
    with no hold on the old holder: docs/lb-pair.md)."""
    to = host.get_fact(OutrankedHolder, address=address, higher=higher)
    if to is None:
        host.noop(f"no LB ahead of this one serves while this one holds {address}")
        return
    yield drain


@operation()
def drain_lifted(path: str, undrain: str):
    """The drain file at `path` not left at 1: a planned hand-over leaves it at 1 until
    the end of the run (this operation, on every LB host in priority order, after
    `address_yielded`), and a run interrupted before then leaves it so for the next one.
    `undrain` lifts it once the LB serves."""
    contents = host.get_fact(FileContents, path=path)
    if not contents or contents[0].strip() != "1":
        host.noop("no drain left over")
        return
    yield undrain


@operation()
def address_absent(address: str):
    """`address` on no interface of the host: what a keepalived that was killed, not
    stopped, leaves on the lab interface (a stopped one removes it itself), and the
    copy keepalived's start.sh keeps on loopback."""
    held = host.get_fact(AddressesOnInterfaces, address=address)
    if not held:
        host.noop(f"no interface holds {address}")
        return
    for interface, cidr in held:
        yield f"ip addr del {shlex.quote(cidr)} dev {shlex.quote(interface)}"


@operation()
def labelled_absent(kind: str, label: str):
    """No container, volume or network (`kind`) carrying `label` (key=value) is left."""
    names = host.get_fact(DockerLabelled, kind=kind, label=label)
    if not names:
        host.noop(f"no {kind} labelled {label}")
        return
    yield f"{DOCKER_OBJECTS[kind][2]} " + " ".join(shlex.quote(n) for n in names)


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


def root_only_file(name: str, content: str, dest: str) -> None:
    """A secret on the host (a token): a file only root may read, uploaded by pyinfra,
    never on a command line."""
    files_op.put(
        name=name, src=StringIO(content), dest=dest, user="root", group="root", mode="600"
    )


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
    yield from files_op.put._inner(src=StringIO(content), dest=path, mode="644")
