"""labctl: the lab's lifecycle verbs.

labctl up / apply / down      create, converge again (no changes when none), remove
labctl verify / status        the lab against its spec; the hosts
labctl scale SERVICE=N        more or fewer instances of a service; the LB follows
labctl fail / recover TARGET  crash or restart an instance or a host (ssh: its
                              lab containers; a machine is never powered off)
labctl watch                  live view of the LB's upstreams and reloads
labctl bundle save FILE       every image the spec needs, for `up --bundle`
labctl token [NAME]           the lab's Consul tokens (`read` logs into the UI)
labctl doctor [--fix]         what this machine has; install what is missing
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer
from docker.errors import DockerException
from rich.table import Table
from rich.text import Text

from labctl import box, lifecycle, output, remote, security, system, virtualbox, virtualbox_box
from labctl import spec as spec_module
from labctl.connections import connection_data
from labctl.converge import ConvergeError, ConvergeResult
from labctl.images import standins
from labctl.images.bundles import read_bundle
from labctl.images.delivery import describe_delivery
from labctl.images.errors import ImageError
from labctl.images.on_control import save_bundle
from labctl.machines import UnreachableError
from labctl.paths import forget_removed_services, not_up_problem, read_state, with_state
from labctl.remote import RemoteError
from labctl.security import AclError
from labctl.spec import (
    SPEC_ENV,
    LabSpec,
    SpecError,
    file_problems,
    load_spec,
)
from roles.contract import CONSUL_HTTP_PORT

# Modules only some verbs need are imported by those verbs (labctl.operate, .verify,
# .watch, .lb_client and httpx under them): `status` starts without them.

# -h as well as --help, on every verb.
CONTEXT = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__,
                  context_settings=CONTEXT)  # fmt: skip
bundle_app = typer.Typer(
    help="Image bundles: every image a lab needs, for hosts without a registry.",
    context_settings=CONTEXT, no_args_is_help=True,
)  # fmt: skip
app.add_typer(bundle_app, name="bundle")
box_app = typer.Typer(
    help="Host boxes: a lab's hosts baked once, engine and images in (docs/boxes.md).",
    context_settings=CONTEXT, no_args_is_help=True,
)  # fmt: skip
app.add_typer(box_app, name="box")
console = output.err

# Exit statuses: 1 a step failed, 2 bad input (spec, provider, prerequisites, or a verb
# that needs the lab up on a lab that is not).
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

Provider = Annotated[
    spec_module.Provider | None,
    typer.Option(help="auto, virtualbox, docker or ssh; overrides the spec's provider."),
]
# The longest wait or refresh interval labctl takes: a day (time.sleep refuses what
# does not fit its clock, and no lab step needs longer).
MAX_SECONDS = 86400.0


def _seconds(lowest: float, lowest_allowed: bool):
    """A typer callback: a finite number of seconds from `lowest` up to a day."""

    def check(value: float) -> float:
        low = value >= lowest if lowest_allowed else value > lowest
        if not (math.isfinite(value) and low and value <= MAX_SECONDS):
            allowed = f"{lowest:g}" if lowest_allowed else f"more than {lowest:g}"
            raise typer.BadParameter(
                f"{value:g} s is not {allowed} to {MAX_SECONDS:g} s; give a number in that range."
            )
        return value

    return check


def _version(value: bool) -> None:
    if value:
        try:
            version = metadata.version("consul-lb-lab")
        except metadata.PackageNotFoundError:  # run from a checkout nothing installed
            version = "(not installed: ./lab installs it)"
        print(f"labctl {version}")
        raise typer.Exit()


@app.callback()
def main(
    spec: Annotated[
        Path | None,
        typer.Option("--spec", "-s", help="Lab spec file (default: $LAB_SPEC or lab.yaml)."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True,
                     help="Print labctl's version and exit."),
    ] = False,
) -> None:
    if spec is not None:
        # Children (pyinfra, Vagrant, the Vagrantfile) read the same variable.
        os.environ[SPEC_ENV] = str(spec.resolve())
    remote.keep_connections()  # one verb, one SSH connection per host


def _fail(message: str, code: int) -> typer.Exit:
    console.print(output.labelled("error:", "bold red", message))
    return typer.Exit(code)


def _refuse(problems: list[str]) -> typer.Exit:
    for problem in problems:
        console.print(output.labelled("error:", "bold red", problem))
    return typer.Exit(EXIT_BAD_INPUT)


def _spec(up: bool = False, files: bool = False) -> LabSpec:
    """The lab spec, its warnings printed. `up`: refuse (from the lab's local state, no
    host asked) a lab that is not up; `files`: refuse one whose files are not here."""
    try:
        spec, warnings = load_spec()
        for warning in warnings:
            console.print(output.labelled("warning:", "yellow", warning))
        state = read_state(spec)  # a state file that cannot be read is named here
        problems = file_problems(spec, state.get("provider")) if files else []
        if up and (problem := not_up_problem(spec)):
            problems.append(problem)
    except SpecError as exc:
        problems = exc.problems
    if problems:
        raise _refuse(problems)
    _as_root_for_the_engine(spec)
    return spec


def _as_root_for_the_engine(spec: LabSpec) -> None:
    """The docker provider needs the local engine, which by default serves root (and the
    docker group) only: a user who may sudo gets this very command again through sudo."""
    provider = read_state(spec).get("provider") or spec.provider
    if provider == "auto":
        provider = "virtualbox" if system.have(system.VIRTUALBOX) else "docker"
    if provider != "docker" or not system.engine_refuses_user():
        return
    if not system.can_sudo():
        raise _fail(
            f"the Docker engine at {system.DOCKER_SOCKET} serves root and the docker group "
            "only; run as root, or join the group (usermod -aG docker USER, then log in again).",
            EXIT_BAD_INPUT,
        )
    note = "the Docker engine here serves root only: running as root."
    console.print(output.labelled("note:", "yellow", note))
    system.rerun_as_root(sys.argv[1:])


def _http_errors() -> tuple[type[Exception], ...]:
    """httpx's errors, if a verb loaded httpx (one that did not cannot have raised them)."""
    httpx = sys.modules.get("httpx")
    return (httpx.HTTPError,) if httpx else ()


def _run(step: str, action):
    """Run a lifecycle step under a spinner showing its latest output line."""
    started = time.monotonic()
    try:
        with console.status(Text(f"{step}...")) as spinner:

            def report(line: str) -> None:
                if line:
                    spinner.update(Text.assemble(f"{step}: ", (line[:110], "dim")))

            result = action(report)
    except UnreachableError as exc:
        for problem in exc.problems:
            console.print(output.labelled("error:", "bold red", problem))
        raise typer.Exit(EXIT_FAILED) from None
    except SpecError as exc:
        raise _refuse(exc.problems) from None
    except (system.PrerequisiteError, ImageError) as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    except (lifecycle.LifecycleError, ConvergeError, AclError) as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    except (DockerException, RemoteError, *_http_errors()) as exc:
        raise _fail(
            f"{step} failed ({type(exc).__name__}: {exc}); check `labctl status` and retry.",
            EXIT_FAILED,
        ) from None
    except subprocess.CalledProcessError as exc:
        raise _fail(
            f"{step} failed: `{' '.join(map(str, exc.cmd))}` exited with {exc.returncode}; "
            "run it by hand to see why (another Vagrant command may hold the lab's lock).",
            EXIT_FAILED,
        ) from None
    console.print(output.labelled("✓", "green", f"{step} ({time.monotonic() - started:.1f} s)"))
    return result


def _print_changes(result: ConvergeResult, spec: LabSpec) -> None:
    console.print(f"  {describe_delivery(read_state(spec))}")
    if result.change_count:
        console.print(f"  {result.change_count} changed: {result.describe_changes()}")
    else:
        console.print(f"  no changes ({result.operations} operations checked)")


def _print_json(data: object) -> None:
    """A verb's result on stdout as JSON, for scripts (progress stays on stderr)."""
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _verify(spec: LabSpec, wait: float, as_json: bool = False) -> None:
    from labctl.verify import Check, verify_until

    spec = with_state(spec)
    checks: list[Check] = _run(
        "verify",
        lambda report: verify_until(
            spec,
            wait,
            lambda cs: report(f"{sum(c.ok for c in cs)}/{len(cs)} checks pass"),
            connection_data(spec) if read_state(spec) else None,
        ),
    )
    if as_json:
        registrations = {s.name: s.registration for s in spec.services}
        _print_json({"lab": spec.name, "ok": all(c.ok for c in checks),
                     "registration": registrations,
                     "checks": [asdict(c) for c in checks], **_standin_note(spec)})  # fmt: skip
    else:
        table = Table(title=f"lab {spec.name}: verify", caption=_standin_caption(spec))
        for column in ("service", "check", "target", "result", "detail"):
            table.add_column(column)
        for check in checks:
            result = output.styled("ok", "green") if check.ok else output.styled("FAIL", "bold red")
            table.add_row(check.service, check.what, check.target, result, check.detail)
        output.out.print(table)
    failed = [c for c in checks if not c.ok]
    if failed:
        raise _fail(
            f"{len(failed)} of {len(checks)} checks failed ({failed[0].what} {failed[0].target}: "
            f"{failed[0].detail}); see the table above, then `labctl apply` or `labctl status`.",
            EXIT_FAILED,
        )


def _standin_caption(spec: LabSpec) -> Text | None:
    return output.styled(standins.NOTE, "yellow") if standins.in_use(spec) else None


def _standin_note(spec: LabSpec) -> dict[str, str]:
    """For JSON output: {"standins": NOTE} when the lab runs on the stand-ins."""
    return {"standins": standins.NOTE} if standins.in_use(spec) else {}


Wait = Annotated[
    float,
    typer.Option(callback=_seconds(0, lowest_allowed=True),
                 help="Seconds to keep retrying until every check passes."),
]  # fmt: skip
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


@app.command()
def up(
    provider: Provider = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Image bundle from `labctl bundle save` (no registry).")
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            help="No registry at all: run the lab on its stand-ins for Consul and "
            "consul-template (tests/standins, not HashiCorp software)."
        ),
    ] = False,
    wait: Wait = 120.0,
    no_box: Annotated[
        bool,
        typer.Option("--no-box", help="Install the engine and images on every host from "
                     "scratch: make no host from the lab's box, and keep none."),
    ] = False,
) -> None:
    """Create the lab's hosts, converge them, then verify."""
    spec = _spec()
    try:
        chosen = lifecycle.resolve_provider(spec, provider)
        problems = file_problems(spec, chosen)
        if bundle is not None:
            read_bundle(bundle)  # a bundle that is none is named before any work
    except (system.PrerequisiteError, lifecycle.LifecycleError, ImageError) as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    if problems:
        raise _refuse(problems)
    console.print(Text.assemble("lab ", (spec.name, "bold"),
                                f": {len(spec.hosts)} hosts on provider {chosen}"))  # fmt: skip
    if offline:
        console.print(output.labelled("offline:", "yellow", f"{standins.NOTE}."))
    if spec.security.open:
        console.print(output.labelled(
            "security: seed", "yellow", "— the seed's open lab: no ACLs and no gossip key, so "
            f"anyone who reaches port {CONSUL_HTTP_PORT} of a host may register, change or remove "
            "services."
        ))  # fmt: skip
    result = _run(
        "up", lambda report: lifecycle.up(spec, chosen, report, bundle, offline, not no_box)
    )
    console.print(f"  box: {read_state(spec).get('box_note', '-')}", markup=False)
    _print_changes(result, spec)
    _verify(spec, wait)


@app.command()
def verify(wait: Wait = 0.0, as_json: AsJson = False) -> None:
    """Check the running lab against the spec; non-zero exit on any failure."""
    _verify(_spec(up=True), wait, as_json)


@app.command()
def scale(
    assignment: Annotated[str, typer.Argument(metavar="SERVICE=N", help="e.g. zhibo_service=5")],
) -> None:
    """Run N instances of a service of the spec, spread over the hosts it runs on; the LB
    follows.

    Removing instances is graceful: they leave Consul and the LB before they stop.
    """
    from labctl import operate

    spec = _spec(files=True)
    try:
        service, count = operate.scale_request(with_state(spec), assignment)
    except SpecError as exc:
        raise _refuse(exc.problems) from None
    if problem := not_up_problem(spec):
        raise _refuse([problem])
    result = _run(
        f"scale {service} to {count}",
        lambda report: operate.scale(spec, service, count, report),
    )
    _print_changes(result, spec)


Target = Annotated[str, typer.Argument(help="An instance (zhibo-2) or a host (server2).")]


@app.command()
def fail(target: Target) -> None:
    """Crash an instance (docker kill) or take a whole host away.

    A Vagrant host loses its power; an existing machine (provider ssh), which is not
    the lab's to power off, has every lab container on it killed instead.
    """
    from labctl import operate

    spec = _target_spec(target)
    console.print(_run(f"fail {target}", lambda r: operate.fail_or_recover(spec, target, True, r)))


@app.command()
def recover(target: Target) -> None:
    """Start a failed instance again, or bring a failed host back.

    A Vagrant host is powered on; on an existing machine (provider ssh) the lab's
    containers are started again.
    """
    from labctl import operate

    spec = _target_spec(target)
    console.print(
        _run(f"recover {target}", lambda r: operate.fail_or_recover(spec, target, False, r))
    )


@app.command("restart-lb")
def restart_lb(
    hosts: Annotated[
        list[str] | None,
        typer.Argument(help="LB hosts (default: every one), restarted one at a time."),
    ] = None,
) -> None:
    """Restart the LB (nginx + consul-template) on its hosts, one at a time.

    With two or more LBs sharing network.lb_address, each hands the address over before
    it stops and gets it back once it serves again: no request fails. With one LB it is
    `docker restart lb`: nothing answers for a moment.
    """
    from labctl import operate

    spec = _spec()
    try:
        targets = operate.lb_targets(spec, hosts or [])
    except SpecError as exc:
        raise _refuse(exc.problems) from None
    if problem := not_up_problem(spec):
        raise _refuse([problem])
    console.print(_run("restart-lb", lambda r: operate.restart_lbs(spec, targets, r)))


def _target_spec(target: str) -> LabSpec:
    """The spec, once `target` is known to be one of the lab's and the lab is up."""
    from labctl import operate

    spec = _spec()
    try:
        operate.check_target(spec, target)
    except SpecError as exc:
        raise _refuse(exc.problems) from None
    if problem := not_up_problem(spec):
        raise _refuse([problem])
    return spec


@app.command()
def watch(
    interval: Annotated[
        float,
        typer.Option(callback=_seconds(0, lowest_allowed=False), help="Seconds between refreshes."),
    ] = 1.0,
    count: Annotated[
        int, typer.Option(min=0, help="Stop after this many refreshes (0: never).")
    ] = 0,
) -> None:
    """Live view: each upstream's members as nginx runs them, their Consul health, reloads."""
    from labctl.watch import watch_lb

    watch_lb(with_state(_spec(up=True)), interval, count)


@bundle_app.command("save")
def bundle_save(file: Path) -> None:
    """Write every image the spec needs, with a manifest of references and IDs, to FILE."""
    if file.is_dir() or not file.parent.is_dir():
        where = "is a folder" if file.is_dir() else f"is in {file.parent}, which is no folder here"
        raise _fail(f"{file} {where}; name a file in a folder that exists.", EXIT_BAD_INPUT)
    spec = _spec(files=True)
    manifest = _run(f"bundle save {file}", lambda report: save_bundle(spec, file, report))
    for ref, image_id in manifest.items():
        console.print(f"  {ref}  {image_id[:19]}")


@app.command()
def apply() -> None:
    """Converge the hosts again; reports what changed (nothing, when nothing did)."""
    spec = _spec(up=True, files=True)
    forget_removed_services(spec)  # a service gone from the spec takes its scale with it
    spec = with_state(spec)
    _print_changes(_run("apply", lambda report: lifecycle.apply(spec, report)), spec)


def _registrator_instances(spec: LabSpec) -> tuple[list[dict], str]:
    """The instances registrator registered that the spec does not declare, and why
    Consul could not say ("" when it did, or when no service is registrator's)."""
    if not spec.registrator_services():
        return [], ""
    import httpx

    from labctl.verify import registrator_instances

    try:
        return registrator_instances(spec), ""
    except (httpx.HTTPError, RuntimeError, ValueError) as exc:
        return [], f"Consul did not say which instances registrator registered ({exc})"


@app.command()
def status(as_json: AsJson = False) -> None:
    """A table of the lab's hosts, with the instances of each service they run."""
    spec = with_state(_spec())
    if problem := not_up_problem(spec):  # the answer, from the local state alone
        if as_json:
            _print_json({"lab": spec.name, "up": False, "hosts": []})
        console.print(problem)
        return
    rows = _run("status", lambda report: lifecycle.status(spec))
    views = _lb_pair_views(spec)
    if views:
        from labctl import lb_client
    per_host = {
        h.name: {s.name: spec.service_counts(s.name)[h.name] for s in spec.services}
        for h in spec.hosts
    }
    hand_started, unasked = _registrator_instances(spec)
    if as_json:
        hosts = [asdict(row) | {"instances": per_host[row.name]} for row in rows]
        extra = {"by_registrator": hand_started} if spec.registrator_services() else {}
        pair = {"lb_address": {"address": spec.lb_address, "holders": lb_client.holders(views),
                               "lbs": [asdict(v) for v in views]}} if views else {}  # fmt: skip
        _print_json({"lab": spec.name, "up": True, "hosts": hosts, **extra, **pair,
                     **_standin_note(spec)})  # fmt: skip
        if unasked:
            console.print(output.labelled("unreachable:", "yellow", unasked))
        return
    table = Table(title=f"lab {spec.name}", caption=_standin_caption(spec))
    for column in ("host", "provider", "state", "address", "docker", "instances"):
        table.add_column(column)
    for row in rows:
        instances = ", ".join(f"{name} ×{n}" for name, n in per_host[row.name].items() if n)
        table.add_row(row.name, row.provider, row.state, row.address, row.docker, instances or "-")
    output.out.print(table)
    for row in rows:
        if row.problem:
            console.print(output.labelled("unreachable:", "yellow", row.problem))
    if hand_started:
        from labctl.verify import BY_REGISTRATOR
    for found in hand_started:
        console.print(
            f"{found['service']} {found['id']} at {found['address']} ({found['status']}): "
            f"{BY_REGISTRATOR}"
        )
    if unasked:
        console.print(output.labelled("unreachable:", "yellow", unasked))
    if views:
        held = lb_client.holders(views)
        console.print(lb_client.describe_pair(spec, views), markup=False)
        if len(held) > 1:
            console.print(output.labelled("warning:", "red", lb_client.split_brain(spec, held)))
    if spec.consul_servers:
        ui = f"http://{spec.consul_servers[0].address}:{CONSUL_HTTP_PORT}/ui"
        login = "log in with the read token: `labctl token read`" if spec.security.acl else (
            "open to anyone (security: seed)")  # fmt: skip
        console.print(f"Consul UI: {ui} — {login}")


def _lb_pair_views(spec: LabSpec) -> list:
    """Every LB of a lab with several (lb_client.VrrpView), and who holds the shared
    address ([] with one)."""
    """Every LB of a lab with several, and who holds the shared address ([] with one)."""
    if not spec.lb_pair:
        return []
    import httpx

    from labctl import lb_client

    with httpx.Client(timeout=3, trust_env=False) as client:
        return lb_client.vrrp_views(client, spec, connection_data(spec))


@app.command()
def token(
    name: Annotated[
        str | None, typer.Argument(help="A token's name (read, consul-template, ...).")
    ] = None,
) -> None:
    """Print a token's secret (e.g. `read`, for the Consul UI); without NAME, list them."""
    spec = _spec()
    if not spec.security.acl:
        raise _fail("this lab has no ACLs (security.acl is false), so it has no tokens.",
                    EXIT_BAD_INPUT)  # fmt: skip
    if problem := not_up_problem(spec):
        raise _refuse([problem])
    saved = security.saved_tokens(spec)
    if name is None:
        table = Table(title=f"lab {spec.name}: Consul tokens (`labctl token NAME` prints one)")
        for column in ("name", "accessor", "may"):
            table.add_column(column)
        descriptions = {t.name: t.description for t in security.token_specs(spec)}
        descriptions[security.MANAGEMENT] = "everything (the bootstrap token)"
        for token_name, saved_token in saved.items():
            table.add_row(token_name, saved_token["accessor"], descriptions.get(token_name, ""))
        output.out.print(table)
        return
    if name not in saved:
        known = ", ".join(saved) or "none yet (run `labctl up`)"
        raise _fail(f"no token named {name!r}; the lab's tokens: {known}.", EXIT_BAD_INPUT)
    print(saved[name]["secret"])


@app.command()
def down(
    purge_engine: Annotated[
        bool, typer.Option(help="Existing machines (ssh): also remove the Docker engine.")
    ] = False,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also remove the lab's host boxes (a cache).")
    ] = False,
) -> None:
    """Remove the lab and local state: Vagrant hosts are destroyed; existing machines
    keep nothing the lab put there (containers, volumes, networks, images, its
    configuration and daemon.json keys), but keep the Docker engine unless --purge-engine.
    The lab's newest host boxes stay, for the next `up`, unless --purge."""
    spec = _spec()
    removed = _run("down", lambda report: lifecycle.down(spec, report, purge_engine, purge))
    console.print("  removed: " + (", ".join(removed) if removed else "nothing (already down)"))


def _box_spec() -> tuple[LabSpec, str]:
    """The spec of a lab on a road with boxes, and the road (docker: the engine's boxes,
    virtualbox: Vagrant's); on another road, the sentence why it has none, exit 0."""
    spec = _spec()
    try:
        provider = lifecycle.resolve_provider(spec)
    except (system.PrerequisiteError, lifecycle.LifecycleError) as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    if reason := box.no_box_reason(provider, {"delivery": "control"}):
        console.print(f"lab {spec.name}: {reason}.", markup=False)
        raise typer.Exit(0)
    return spec, provider


def _vagrant_box_list(spec: LabSpec, as_json: bool) -> None:
    try:
        found = virtualbox_box.kept(spec)
    except box.BoxError as exc:
        raise _fail(f"could not list Vagrant's boxes ({exc}).", EXIT_BAD_INPUT) from None
    if as_json:
        _print_json([{"key": k.box.short, "vagrant_box": k.box.name, "version": k.version,
                      "created": k.created, "in_use": k.in_use} for k in found])  # fmt: skip
        return
    table = Table(title=f"lab {spec.name}: Vagrant boxes (kept: the newest {box.CACHE_BOUND})")
    for column in ("key", "vagrant box", "created", "in use"):
        table.add_column(column)
    for k in found:
        table.add_row(k.box.short, k.box.name, k.created, "yes" if k.in_use else "no")
    output.out.print(table)


@box_app.command("list")
def box_list(as_json: AsJson = False) -> None:
    """The lab's boxes, newest first: key, what they hold, sizes, whether hosts use them."""
    spec, provider = _box_spec()
    if provider == "virtualbox":
        return _vagrant_box_list(spec, as_json)
    found = box.kept(system.ensure_engine(), spec.name, sizes=True)
    if as_json:
        _print_json([{"key": k.box.short, "image": k.box.image, "volume": k.box.volume,
                      "created": k.created, "engine": k.engine, "image_bytes": k.image_bytes,
                      "data_bytes": k.data_bytes, "in_use": k.in_use} for k in found])  # fmt: skip
        return
    table = Table(title=f"lab {spec.name}: host boxes (kept: the newest {box.CACHE_BOUND})")
    for column in ("key", "image", "engine", "image size", "images size", "in use"):
        table.add_column(column)
    for k in found:
        data = "?" if k.data_bytes is None else f"{k.data_bytes / 1e6:.0f} MB"
        table.add_row(k.box.short, k.box.image, k.engine, f"{k.image_bytes / 1e6:.0f} MB",
                      data, "yes" if k.in_use else "no")  # fmt: skip
    output.out.print(table)


@box_app.command("remove")
def box_remove(
    keys: Annotated[
        list[str] | None, typer.Argument(help="Keys as `labctl box list` shows them.")
    ] = None,
    remove_all: Annotated[bool, typer.Option("--all", help="Every box of the lab.")] = False,
) -> None:
    """Remove boxes of the lab (none that its hosts run from)."""
    if bool(keys) == remove_all:
        raise _fail("name the boxes to remove by key, or give --all (not both).", EXIT_BAD_INPUT)
    if problems := [p for p in map(box.key_problem, keys or []) if p]:
        raise _refuse(problems[:1])
    spec, provider = _box_spec()
    try:
        if provider == "virtualbox":
            if remove_all:
                keys = [k.box.short for k in virtualbox_box.kept(spec)]
            removed = virtualbox_box.remove(spec, keys or [])
        else:
            if remove_all:
                keys = [k.box.short for k in box.kept(system.ensure_engine(), spec.name)]
            removed = box.remove(spec.name, keys or [])
    except box.BoxError as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    console.print("  removed: " + (", ".join(removed) if removed else "nothing (no box)"))


@app.command()
def doctor(fix: Annotated[bool, typer.Option(help="Install what is missing (root).")] = False):
    """What this machine has for each provider; --fix installs and starts what is missing."""
    if fix:
        try:
            installed = system.ensure_tools(system.VAGRANT, system.DOCKER_CLI, system.DEBOOTSTRAP)
            system.ensure_engine()
        except system.PrerequisiteError as exc:
            raise _fail(str(exc), EXIT_BAD_INPUT) from None
        if installed:
            console.print(f"installed: {', '.join(installed)}")
    table = Table(title="control machine")
    table.add_column("tool")
    table.add_column("present")
    table.add_column("needed for")
    for tool in (system.VAGRANT, system.DOCKER_CLI, system.DEBOOTSTRAP):
        table.add_row(tool.name, "yes" if system.have(tool) else "no", tool.needed_for)
    installed = virtualbox.installed_virtualbox() if system.have(system.VIRTUALBOX) else None
    table.add_row(
        system.VIRTUALBOX.name,
        ".".join(map(str, installed)) if installed else "no",
        system.VIRTUALBOX.needed_for,
    )
    table.add_row(
        "Docker engine", "answers" if system.engine() else "no answer", "the docker provider"
    )
    output.out.print(table)
    if system.have(system.VIRTUALBOX):
        problem = virtualbox.installed_problem()
        if problem:
            console.print(output.labelled("virtualbox provider:", "yellow", problem))
