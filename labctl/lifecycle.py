"""The lab's lifecycle: bring hosts up, converge them, report on them, remove them."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from docker.errors import DockerException, NotFound
from docker.types import IPAMConfig, IPAMPool

from labctl import (
    aptcache,
    box,
    connections,
    down_on_machines,
    hostnet,
    machines,
    security,
    system,
    vagrant,
    virtualbox_box,
)
from labctl.connections import connection_data
from labctl.converge import ConnectFailure, ConvergeError, ConvergeResult, converge
from labctl.images import delivery, standins
from labctl.images.debian_base import ensure_base_image
from labctl.images.engine import engine_arch
from labctl.paths import (
    docker_network_name,
    lab_dir,
    log_summary,
    not_up_problem,
    read_state,
    with_images,
    write_state,
)
from labctl.platforms import control_arch
from labctl.remote import RemoteError, SshData, run
from labctl.spec import LabSpec, SpecError
from roles.contract import AGENTS_ONLY, HOST_ONLY, LAB_LABEL, STAGE

Report = Callable[[str], None]


class LifecycleError(Exception):
    """A lifecycle step failed; the message says what and how to recover."""


def log_file(spec: LabSpec, step: str) -> Path:
    return lab_dir(spec) / "logs" / f"{step}.log"


def resolve_provider(spec: LabSpec, override: str | None = None) -> str:
    """The provider of an existing lab, else the override, else the spec's (auto resolved)."""
    recorded = read_state(spec).get("provider")
    wanted = override or spec.provider
    if recorded and override and override != recorded:
        raise LifecycleError(
            f"lab {spec.name} already exists on provider {recorded}; run `labctl down` "
            f"before switching it to {override}."
        )
    return recorded or system.choose_provider(wanted)


def hosts_arch(spec: LabSpec, provider: str, report: Report) -> dict[str, str]:
    """Each host's architecture, known before anything changes on any host: read over
    SSH on existing machines (which also checks that each one can be used), the
    engine's for the docker provider's containers, this machine's for VirtualBox VMs."""
    if provider == "ssh":
        report(f"reaching {len(spec.hosts)} machines over SSH")
        return machines.reachable_arches(connection_data(spec, "ssh"), spec.name)
    docker_road = provider == "docker"
    arch = engine_arch(system.ensure_engine()) if docker_road else control_arch()
    return dict.fromkeys((h.name for h in spec.hosts), arch)


def preflight(
    spec: LabSpec, provider: str, report: Report, bundle: Path | None, offline: bool
) -> tuple[LabSpec, dict]:
    """Everything that can fail before a host is touched; returns the spec to converge
    and the state to record (the resolved images)."""
    if provider in vagrant.VAGRANT_PROVIDERS and (clash := hostnet.route_clash(spec, provider)):
        raise SpecError([clash])
    system.ensure_provider(provider)
    if provider == "docker" and (
        clash := hostnet.docker_network_clash(system.ensure_engine(), spec)
    ):
        raise SpecError([clash])
    arches = hosts_arch(spec, provider, report)
    state: dict = {"provider": provider}
    if offline:
        lb_arch = next((arches[h.name] for h in spec.lb_hosts), control_arch())
        state["offline"] = standins.offline_images(spec, lb_arch)
        report(standins.NOTE)
        spec = with_images(spec, state["offline"])
    if provider == "docker":
        how = ensure_base_image(system.ensure_engine(), spec.docker.base_image)
        report(f"base image {spec.docker.base_image}: {how}")
    return spec, state | delivery.prepare(spec, arches, bundle, report)


def _vagrant_up(spec: LabSpec, provider: str, report: Report) -> str | None:
    """One `vagrant up`; None on success, else what Vagrant said on stderr."""
    log = log_file(spec, "vagrant-up")
    errors = log.with_suffix(".err")
    log.parent.mkdir(parents=True, exist_ok=True)
    v = vagrant.client(spec, provider)
    try:
        # Line-buffered: the log shows Vagrant's progress as it happens (bench/phases.py).
        with log.open("a", buffering=1) as out, errors.open("w") as err:
            v.err_cm = lambda: contextlib.nullcontext(err)
            for line in v.up(provider=provider, stream_output=True):
                out.write(line)
                report(line.strip())
        return None
    except subprocess.CalledProcessError:
        # Vagrant explains itself on stderr, in a paragraph.
        return " ".join(errors.read_text().split())[:400] or log_summary(log)


def create_hosts(spec: LabSpec, provider: str, report: Report) -> None:
    """`vagrant up`, tried twice: it is idempotent (running hosts are left alone), and
    a parallel up of several containers now and then fails one step on a busy machine."""
    if provider == "ssh":
        return
    connections.forget(spec)
    vagrant.forget_recorded_ssh_settings(spec)
    if provider == "docker":
        _lab_network(spec)
    failure = _vagrant_up(spec, provider, report)
    if failure is not None:
        report(f"vagrant up failed ({failure}); trying once more")
        with log_file(spec, "vagrant-up").open("a") as log:
            log.write(f"\n[labctl] first vagrant up failed: {failure}\n[labctl] retrying\n")
        failure = _vagrant_up(spec, provider, report)
    if failure is not None:
        log = log_file(spec, "vagrant-up")
        raise LifecycleError(
            f"vagrant up failed ({failure}); read {log}, then run `labctl up` again "
            "or `labctl down` to remove what was created."
        )
    # Every machine runs now: Vagrant's SSH data (as this `vagrant up` recorded it, else
    # its ssh-config), for every verb to come.
    running = dict.fromkeys((h.name for h in spec.hosts), "running")
    connections.refresh(spec, provider, running, vagrant.recorded_ssh_settings(spec))


def _lab_network(spec: LabSpec) -> None:
    """The lab's Docker network, made here, labelled with the lab, unless it exists: the
    Vagrantfile names it, so Vagrant's docker provider only checks it, host after host
    under one lock (3 Docker commands per host fewer than when it looks the subnet up)."""
    client = system.ensure_engine()
    name = docker_network_name(spec)
    try:
        client.networks.get(name)
    except NotFound:
        pool = IPAMPool(subnet=str(spec.network.subnet))
        try:
            client.networks.create(name, driver="bridge", ipam=IPAMConfig(pool_configs=[pool]),
                                   labels={LAB_LABEL: spec.name})  # fmt: skip
        except DockerException as exc:
            raise LifecycleError(
                f"could not create the lab's Docker network {name} ({exc}); see "
                "`docker network ls`, or choose another network.subnet in the spec."
            ) from None


def up(
    spec: LabSpec,
    provider: str,
    report: Report,
    bundle: Path | None = None,
    offline: bool = False,
    use_box: bool = True,
) -> ConvergeResult:
    """Create and converge the lab; `offline`: on the stand-ins (no registry at all);
    `use_box`: make the hosts from the lab's box, or keep one after this converge."""
    fresh = not read_state(spec).get("provider")  # no host made yet: a box may make them
    spec, state = preflight(spec, provider, report, bundle, offline)
    security.gossip_key(spec, create=True)
    if fresh:
        plan = virtualbox_box.plan if provider == "virtualbox" else box.plan
        boxing = plan(spec, provider, state, use_box)
        if boxing.from_box and provider == "docker":
            boxing = _hosts_data_from(spec, boxing)
        report(f"box: {boxing.note}")
        login_key = boxing.box.login_key if boxing.from_box and provider == "docker" else None
        state |= {"box": boxing.from_box, "box_note": boxing.note}
        state |= {"box_login_key": str(login_key) if login_key else None}
    else:  # hosts made before stay as they were made
        boxing = box.BoxPlan(None, read_state(spec).get("box_note", ""))
    write_state(spec, **({"offline": None} | state))
    create_hosts(spec, provider, report)
    write_state(spec, apt_proxy=aptcache.ensure(spec, provider, report))
    boxed = keep_box(spec, provider, boxing.box, report) if boxing.to_make else ConvergeResult()
    if not spec.security.acl:
        return boxed + converge_lab(spec, report)
    # The roles after Consul need tokens, and tokens need a leader: the agents first.
    agents = converge_lab(spec, report, ("--data", f"{STAGE}={AGENTS_ONLY}"))
    leaving = security.leaving_services(spec)
    security.ensure_acls(spec, report, check_servers=True, leaving=leaving)
    hand_out_agent_tokens(spec, report)
    result = boxed + agents + converge_lab(spec, report)
    narrow_tokens(spec, report, leaving)
    return result


def _hosts_data_from(spec: LabSpec, found: box.BoxPlan) -> box.BoxPlan:
    """The plan to make the hosts from `found`, their engine data made from its; when
    that fails, the plan to make them from the template (the note says why)."""
    try:
        seconds = box.fill_volumes(spec, found.box)
    except box.BoxError as exc:
        return box.BoxPlan(None, f"warning: {exc}; the hosts are made from the template")
    return replace(found, note=f"{found.note} (hosts' engine data made in {seconds:.1f} s)")


def keep_box(spec: LabSpec, provider: str, new: box.KeyedBox, report: Report) -> ConvergeResult:
    """Converge the hosts up to their engine and images, then box the first one (each
    road's keep()). A box that cannot be made is said (`up` prints the note) and the
    `up` goes on: the lab itself does not need it."""
    result = converge_lab(spec, report, ("--data", f"{STAGE}={HOST_ONLY}"))
    try:
        road = virtualbox_box if provider == "virtualbox" else box
        note = road.keep(spec, new, report)
    except box.BoxError as exc:
        note = f"warning: {exc}; the next `up` installs everything again"
    finally:
        if provider == "virtualbox":  # `vagrant package` halted the first VM
            create_hosts(spec, provider, report)
    write_state(spec, box_note=note)
    return result


def apply(spec: LabSpec, report: Report) -> ConvergeResult:
    """Converge again. Images are resolved again first: a changed recipe is rebuilt."""
    if problem := not_up_problem(spec):
        raise LifecycleError(problem)
    state = read_state(spec)
    arches = hosts_arch(spec, state["provider"], report)
    write_state(spec, **delivery.prepare(spec, arches, report=report))
    write_state(spec, apt_proxy=aptcache.ensure(spec, state["provider"], report))
    # Tokens for hosts and services the spec gained (none otherwise: the servers are not
    # asked, so an apply works while the cluster has no leader). Services the spec lost
    # stay in the tokens until the converge is done.
    leaving = security.leaving_services(spec)
    security.ensure_acls(spec, report, check_servers=False, leaving=leaving)
    result = converge_lab(spec, report)
    narrow_tokens(spec, report, leaving)
    # Every agent its token, every time: one that missed it (not answering during `up`)
    # or lost it (its data volume gone) cannot be told from the outside, and handing it
    # out again changes nothing where it is (consul-k8s's server-acl-init does the same).
    hand_out_agent_tokens(spec, report)
    return result


def narrow_tokens(spec: LabSpec, report: Report, leaving: list[str]) -> None:
    """Take the services the spec lost out of the registration tokens, now that the
    converge has deregistered their instances (see security.leaving_services)."""
    if leaving:
        security.ensure_acls(spec, report, check_servers=False)


def hand_out_agent_tokens(spec: LabSpec, report: Report) -> None:
    """Each agent its own token; an agent that did not take it stops the run, named with
    its cause, so that `apply` is run again (and hands it out again)."""
    missed = security.set_agent_tokens(spec, report)
    if missed:
        causes = "; ".join(f"{name}: {cause}" for name, cause in missed.items())
        raise LifecycleError(
            f"the Consul agent token did not reach {' and '.join(missed)} ({causes}); "
            "without it an agent cannot keep its node's entry in Consul up to date: run "
            "`labctl apply` once the agent answers, it hands the token out again."
        )


def converge_lab(spec: LabSpec, report: Report, extra_args: tuple[str, ...] = ()) -> ConvergeResult:
    """Converge every host. A host that failed because it stopped answering (lost in
    the middle, e.g. powered off) is named with the way out, not as a failed operation."""
    try:
        return _converge(spec, report, extra_args)
    except ConnectFailure:
        raise  # a host pyinfra could not reach at the start: already named, with its cause
    except ConvergeError as exc:
        # pyinfra names the hosts that failed, except when a connection lost in the
        # middle of a fact crashes it (EOFError): then any host may be the lost one.
        lost = unreachable(spec, exc.failed_hosts or [h.name for h in spec.hosts])
        if not lost:
            raise
        if len(lost) == 1:
            ((name, cause),) = lost.items()
            who, causes, it = f"host {name}", cause, "it"
        else:
            who = "hosts " + " and ".join(lost)
            causes, it = "; ".join(f"{n}: {c}" for n, c in lost.items()), "them"
        raise LifecycleError(
            f"{who} stopped answering during the converge ({causes}); bring {it} back with "
            f"`labctl recover {' '.join(lost)}`, then run `labctl apply`: it picks up where "
            "this run stopped."
        ) from None


def _converge(spec: LabSpec, report: Report, extra_args: tuple[str, ...]) -> ConvergeResult:
    """pyinfra's converge; once more when Vagrant, asked again after pyinfra could not
    reach a host, gives another way to reach it (its cached address was stale)."""
    log = log_file(spec, "converge")
    try:
        return converge(spec, log, on_line=report, extra_args=extra_args)
    except ConnectFailure:
        if not _reached_another_way(spec):
            raise
        report("a host's cached address was stale; converging again with Vagrant's")
        return converge(spec, log, on_line=report, extra_args=extra_args)


def _reached_another_way(spec: LabSpec) -> bool:
    """Whether Vagrant, asked again, reaches the hosts otherwise than the cache did (the
    cache is checked against the provider, but a machine may change in between)."""
    provider = read_state(spec).get("provider")
    if provider not in vagrant.VAGRANT_PROVIDERS:
        return False
    cached = read_state(spec).get("machines") or {}
    fresh = connections.refresh(spec, provider)
    return any(fresh[name]["ssh"] != cached.get(name, {}).get("ssh") for name in fresh)


def unreachable(spec: LabSpec, hosts: list[str]) -> dict[str, str]:
    """Which of `hosts` do not answer over SSH now, and why."""
    if not hosts:
        return {}
    provider = read_state(spec).get("provider") or spec.provider
    answers = connections.run_on_hosts(spec, provider, hosts, lambda ssh: run(ssh, "true", 10))
    return {
        name: "its machine is not running" if answer is None else str(answer)
        for name, answer in answers.items()
        if answer is None or isinstance(answer, RemoteError)
    }


@dataclass
class HostStatus:
    name: str
    provider: str
    state: str
    address: str
    docker: str
    problem: str = ""  # why an existing machine does not answer


def status(spec: LabSpec) -> list[HostStatus]:
    provider = read_state(spec).get("provider")
    if provider is None:
        return [HostStatus(h.name, "-", "not created", str(h.address), "-") for h in spec.hosts]
    if provider == "ssh":
        states = {h.name: "existing" for h in spec.hosts}
        connected = connection_data(spec, provider)
    else:
        known = connections.machines(spec, provider)
        states = {name: machine["state"] for name, machine in known.items()}
        connected = {name: m["ssh"] for name, m in known.items() if m["ssh"]}
    engines = connections.run_on_hosts(
        spec, provider, [h.name for h in spec.hosts], _engine_state, connected
    )
    rows = []
    for host in spec.hosts:
        engine, problem = engines[host.name] or "-", ""
        if isinstance(engine, RemoteError):
            engine, problem = "unreachable", f"{host.name} ({engine.where}): {engine.cause}."
        state = states.get(host.name, "?")
        rows.append(HostStatus(host.name, provider, state, str(host.address), engine, problem))
    return rows


def _engine_state(ssh: SshData) -> str:
    code, output = run(ssh, "systemctl is-active docker", 10)
    return output.strip() or ("active" if code == 0 else "inactive")


def down(
    spec: LabSpec, report: Report, purge_engine: bool = False, purge: bool = False
) -> list[str]:
    """Remove every trace of the lab; safe after a failed `up` and when run twice.

    Vagrant's machines are destroyed; existing machines (ssh) keep only what the lab
    did not put there (the Docker engine too, unless `purge_engine`). The lab's boxes
    stay, as a cache (the newest box.CACHE_BOUND), unless `purge`."""
    removed: list[str] = []
    state = read_state(spec)
    # An ssh spec is cleaned even without local state: the machines may still hold the lab.
    provider = state.get("provider") or ("ssh" if spec.provider == "ssh" else None)
    if provider == "ssh":
        try:
            removed += down_on_machines.remove_from_machines(
                spec, log_file(spec, "down"), report, purge_engine
            )
        except down_on_machines.PartialTeardown as exc:
            # The local state stays, for the next `down`.
            raise LifecycleError(str(exc)) from None
    own_home = provider == "docker" and vagrant.own_vagrant_home(spec, provider)
    if provider == "docker":
        # Every host at once (Vagrant's destroy stops and removes them one after the
        # other); Vagrant then finds them gone and forgets them.
        removed += _sweep_docker(spec, report, containers_only=True)
    if own_home and vagrant.vagrant_dotfile_path(spec).exists():
        # Nothing left for Vagrant to do: its machines are gone, and its records of them
        # (the dotfile path and the lab's own machine index) go with the lab's directory.
        removed.append(f"vagrant machines ({provider})")
    elif provider in vagrant.VAGRANT_PROVIDERS and vagrant.vagrant_dotfile_path(spec).exists():
        report("vagrant destroy")
        try:
            vagrant.client(spec, provider).destroy()
            removed.append(f"vagrant machines ({provider})")
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            report(f"vagrant destroy failed ({exc}); removing leftovers directly")
    if provider != "ssh":
        removed += _sweep_docker(spec, report, boxes_kept=0 if purge else box.CACHE_BOUND)
    if provider == "virtualbox" or (provider is None and purge and _may_have_vagrant_boxes(spec)):
        made = vagrant.vagrant_dotfile_path(spec).exists()
        gone = "vagrant machines (virtualbox)" in removed or not made
        removed += _prune_vagrant_boxes(spec, 0 if purge else box.CACHE_BOUND, gone)
    if lab_dir(spec).exists():
        shutil.rmtree(lab_dir(spec))
        if state:  # not only the log of this very `down`
            removed.append(f"local state {lab_dir(spec)}")
    if stopped := aptcache.stop_after_the_last_lab():
        removed.append(stopped)
    return removed


def _may_have_vagrant_boxes(spec: LabSpec) -> bool:
    """Whether a lab that is down may have left Vagrant boxes (for `down --purge`)."""
    return spec.provider in ("virtualbox", "auto") and system.have(system.VAGRANT)


def _prune_vagrant_boxes(spec: LabSpec, keep: int, vms_gone: bool) -> list[str]:
    """The lab's Vagrant boxes but the newest `keep`; while its VMs are there (their
    destroy failed), never the one they were made from."""
    try:
        return virtualbox_box.prune(spec, keep, vms_gone)
    except box.BoxError as exc:
        raise LifecycleError(
            f"could not remove the lab's old Vagrant boxes ({exc}); run `labctl down` again "
            "or remove them with `vagrant box remove`."
        ) from None


def _sweep_docker(
    spec: LabSpec, report: Report, containers_only: bool = False, boxes_kept: int = 0
) -> list[str]:
    """Containers and volumes labelled with the lab, all at once, and its unused
    Vagrant network; its host boxes but the newest `boxes_kept`, and in those the
    engine data of the hosts made from them."""
    client = system.engine()
    if client is None:
        return []
    label = f"{LAB_LABEL}={spec.name}"

    def remove_all(kind: str, things: list, **options: bool) -> list[str]:
        def remove(thing) -> str:
            thing.remove(force=True, **options)
            return f"{kind} {thing.name}"

        with ThreadPoolExecutor(max_workers=min(16, len(things) or 1)) as pool:
            return list(pool.map(remove, things))

    try:
        containers = client.containers.list(all=True, filters={"label": label})
        if containers:
            report(f"removing {', '.join(c.name for c in containers)}")
        # A host's nested engine and containers go with it (no shutdown to wait for).
        removed = remove_all("container", containers, v=True)
        if containers_only:
            return removed
        removed += remove_all("volume", client.volumes.list(filters={"label": label}))
        try:
            network = client.networks.get(docker_network_name(spec))
            network.reload()
            if not network.attrs.get("Containers"):
                network.remove()
                removed.append(f"network {network.name}")
        except NotFound:
            pass
        removed += box.prune(spec.name, keep=boxes_kept)
    except DockerException as exc:
        raise LifecycleError(
            f"could not remove the lab's Docker leftovers ({exc}); remove containers and "
            f"volumes labelled {label} by hand."
        ) from exc
    try:
        box.clear_hosts(client, spec.name)
    except box.BoxError as exc:
        raise LifecycleError(
            f"{exc}; run `labctl down` again, or remove the lab's boxes with "
            "`labctl box remove --all`."
        ) from None
    return removed
