"""Converge the lab with pyinfra, in this process, and read back what it changed.

It runs what `pyinfra inventory.py deploy.py --yes` runs (the same inventory groups,
the same deploy file, the same operation order), through pyinfra's API: no second
Python start, no second import of labctl, pyinfra and the Docker SDK, and the lab's
state read once. pyinfra's progress goes line by line to the converge log and to the
caller, in the CLI's words (`--> Starting operation: ...`, `    [host] Success`), and
its results are read from pyinfra's own state, not scraped from a table.

pyinfra works on all hosts at once with gevent: the `labctl` command patches the
standard library for it before anything else is imported (labctl/__main__.py), only
for the verbs that converge. Called in a process that is not patched, the converge is
the same, one host after the other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from labctl.paths import log_summary, read_state, write_state
from labctl.spec import PROJECT_ROOT, LabSpec

DEPLOY_FILE = PROJECT_ROOT / "deploy.py"
# The lab's state key of the facts each host was asked (labctl/fact_cache.py).
FACTS_STATE = "facts_asked"
# ANSI styles pyinfra puts in its messages (the CLI strips them when not on a terminal).
STYLE_RE = re.compile(r"\x1b\[[0-9;]*m")


class ConvergeError(Exception):
    """pyinfra failed; the message names the hosts/operations and where the log is."""

    def __init__(self, message: str, failed_hosts: list[str] | None = None):
        super().__init__(message)
        self.failed_hosts = failed_hosts or []


class ConnectFailure(ConvergeError):
    """pyinfra could not connect to some hosts at the start: nothing changed there."""


# How pyinfra's SSH connector reports a host it could not connect to, e.g.
# "    [m1] SSH host key error (Host key for 192.168.79.2 does not match.)".
CONNECT_ERROR_RE = re.compile(
    r"^\s*\[(?P<host>[^\]]+)\] (?P<what>SSH host key error|Could not connect|"
    r"Authentication error|Could not resolve hostname|SSH error|EOF error)\s*(?P<detail>.*)$"
)


def connect_failures(lines: list[str]) -> list[str]:
    """'m1: SSH host key error (...)' for every host pyinfra could not connect to."""
    failures = []
    for line in lines:
        match = CONNECT_ERROR_RE.match(line)
        if match:
            detail = match["detail"].strip()
            failures.append(f"{match['host']}: {match['what'].lower()} {detail}".strip())
    return failures


OPERATION_START_RE = re.compile(r"^--> Starting (?:\w+ )?operation: (?P<name>.+?)\s*$")
HOST_LINE_RE = re.compile(r"^\s*\[(?P<host>[^\]]+)\] (?P<text>.+)$")


def operation_failures(lines: list[str]) -> list[str]:
    """'OPERATION on HOST: its last output line' for every host an operation failed on
    (pyinfra prints the output, then `[host] Error: ...`), so the sentence says why
    even when pyinfra stops with only "No hosts remaining!"."""
    failures, operation, last = [], "", {}
    for line in lines:
        if start := OPERATION_START_RE.match(line):
            operation, last = start["name"], {}
        elif match := HOST_LINE_RE.match(line):
            host, text = match["host"], match["text"].strip()
            if text.startswith("Error"):
                cause = last.get(host, text)
                failures.append(f"{operation.split(', ')[0]} on {host}: {cause[:160]}")
            elif text not in ("Success", "No changes", "Skipped"):
                last[host] = text
    return failures


# How pyinfra ends a run an operation stopped (an OperationError: a role's own sentence,
# which names the host and the way out), e.g. "--> Operation error in roles/operations.py
# line 99: the Consul agent on node2 ... answered 403 ...".
OPERATION_ERROR_RE = re.compile(r"^--> Operation error(?: in \S+ line \d+)?: (?P<message>.+)$")


def operation_error(lines: list[str]) -> str | None:
    """The sentence of the OperationError that stopped the run, if one did."""
    for line in reversed(lines):
        if match := OPERATION_ERROR_RE.match(line.strip()):
            return match["message"].strip()
    return None


@dataclass
class ConvergeResult:
    # (operation name, hosts it changed), in run order.
    changed: list[tuple[str, list[str]]] = field(default_factory=list)
    operations: int = 0

    @property
    def change_count(self) -> int:
        """Operations that changed something, counted once per host."""
        return sum(len(hosts) for _, hosts in self.changed)

    def __add__(self, later: ConvergeResult) -> ConvergeResult:
        """Two converges of one run (an `up` in stages), as one result."""
        return ConvergeResult(self.changed + later.changed, self.operations + later.operations)

    def describe_changes(self) -> str:
        return "; ".join(f"{name} on {', '.join(hosts)}" for name, hosts in self.changed)


def parse_results(payload: dict) -> tuple[ConvergeResult, list[tuple[str, list[str]]], list[str]]:
    """Changed operations, failed operations and failed hosts from pyinfra's --json output."""
    results = payload.get("results") or {}
    converged = ConvergeResult()
    errors = []
    for op in results.get("operations", []):
        converged.operations += 1
        if op["success"]:
            converged.changed.append((op["name"], op["success"]))
        if op["error"]:
            errors.append((op["name"], op["error"]))
    return converged, errors, results.get("failed_hosts", [])


def converge(
    spec: LabSpec,
    log_path: Path,
    on_line: Callable[[str], None] = lambda line: None,
    extra_args: tuple[str, ...] = (),
) -> ConvergeResult:
    """Converge every host; raise ConvergeError with one sentence on failure.

    `extra_args` are pyinfra CLI flags: `--data KEY=VALUE` and `--exclude HOST`."""
    data, exclude = parse_flags(extra_args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Line-buffered: `tail -f` (and a test waiting for a step) sees each line as it comes.
    with log_path.open("a", buffering=1) as log:
        lines: list[str] = []

        def emit(line: str) -> None:
            log.write(line + "\n")
            lines.append(line)
            on_line(line)

        returncode, payload = _run_pyinfra(spec, emit, data, exclude, log)
        log.write(json.dumps(payload) + "\n")
    converged, errors, failed_hosts = parse_results(payload)
    _raise_on_failure(lines, errors, failed_hosts, returncode, bool(payload), log_path)
    return converged


def parse_flags(flags: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """pyinfra's `--data KEY=VALUE` (values as its CLI reads them: true/false, numbers,
    JSON, else text) and `--exclude HOST` flags, as override data and excluded hosts."""
    data: dict[str, Any] = {}
    exclude: list[str] = []
    pairs = iter(flags)
    for flag in pairs:
        value = next(pairs, None)
        if flag == "--data" and value is not None and "=" in value:
            key, text = value.split("=", 1)
            data[key] = _cli_value(text)
        elif flag == "--exclude" and value is not None:
            exclude.append(value)
        else:
            raise ValueError(f"unknown pyinfra flag {flag!r} (only --data and --exclude)")
    return data, exclude


def _cli_value(text: str) -> Any:
    """A `--data` value as pyinfra's CLI reads it (pyinfra_cli.util.parse_cli_arg)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


class _LineHandler(logging.Handler):
    """pyinfra's log records as its CLI prints them: `-->` headers as they are, every
    other line indented by four spaces, styles stripped."""

    def __init__(self, emit: Callable[[str], None]):
        super().__init__(logging.INFO)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "-->" not in message:
            message = f"    {message}"
        for line in STYLE_RE.sub("", message).splitlines():
            self._emit(line.rstrip())


@contextlib.contextmanager
def _pyinfra_session(emit: Callable[[str], None], log: TextIO) -> Iterator[None]:
    """pyinfra's logger to `emit`, its CLI mode (operations ordered by their line in the
    deploy file, as `pyinfra inventory.py deploy.py` orders them), no progress spinner,
    the project as the working directory (the roles' local paths), and the traceback
    gevent prints for a greenlet that crashed to the `log`, not to the terminal; all
    undone after."""
    import gevent
    import pyinfra
    from pyinfra import logger

    hub = gevent.get_hub()
    stream = hub.exception_stream
    hub.exception_stream = log

    handler = _LineHandler(emit)
    saved = (pyinfra.is_cli, logger.level, logger.propagate, os.getcwd())
    progress = os.environ.get("PYINFRA_PROGRESS")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    pyinfra.is_cli = True
    os.environ["PYINFRA_PROGRESS"] = "off"
    os.chdir(PROJECT_ROOT)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        hub.exception_stream = stream
        pyinfra.is_cli, level, logger.propagate, cwd = saved
        logger.setLevel(level)
        os.chdir(cwd)
        if progress is None:
            os.environ.pop("PYINFRA_PROGRESS", None)
        else:
            os.environ["PYINFRA_PROGRESS"] = progress


def _run_pyinfra(
    spec: LabSpec,
    emit: Callable[[str], None],
    data: dict[str, Any],
    exclude: list[str],
    log: TextIO,
) -> tuple[int, dict]:
    """pyinfra's run of deploy.py on the spec's inventory: 0 and its results, or 1 and
    whatever results it has when it stopped (the reason is in the emitted lines)."""
    from pyinfra.api import Config, State
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.operations import run_ops
    from pyinfra.api.state import StateStage
    from pyinfra.context import ctx_config, ctx_inventory, ctx_state

    from labctl.fact_cache import cached_facts, prefetch

    with _pyinfra_session(emit, log), cached_facts() as facts:
        state = State(check_for_changes=False)  # --yes: no dry run before the run
        state.cwd = str(PROJECT_ROOT)
        config = Config()
        config.lock_current_state()
        stopped = False
        with ctx_state.use(state), ctx_config.use(config):
            logging.getLogger("pyinfra").info("--> Loading config...")
            inventory = _inventory(spec, data)
            with ctx_inventory.use(inventory):
                limit = [h for h in inventory if h.name not in exclude] if exclude else None
                state.init(inventory, config, initial_limit=limit)
                try:
                    logging.getLogger("pyinfra").info("--> Connecting to hosts...")
                    state.set_stage(StateStage.Connect)
                    connect_all(state)
                    prefetch(state, facts, recorded_facts(spec))
                    state.set_stage(StateStage.Prepare)
                    _load_deploy(state)
                    config.reset_locked_state()  # what the deploy file changed in it
                    logging.getLogger("pyinfra").info("--> Beginning operation run...")
                    state.set_stage(StateStage.Execute)
                    run_ops(state)
                    logging.getLogger("pyinfra").info(facts.describe())
                    logging.getLogger("pyinfra").info("--> Results:")
                except Exception as exc:  # named in the log, as the CLI names it
                    stopped = True
                    _log_error(exc)
                finally:
                    state.set_stage(StateStage.Disconnect)
                    disconnect_all(state)
                results = _results(state) if state.initialised else {}
                if not stopped:
                    record_facts(spec, facts.asked_facts)
    return (1 if stopped else 0), ({"results": results} if results else {})


def recorded_facts(spec: LabSpec) -> dict[str, list]:
    """The facts the last converge asked each host (labctl/fact_cache.py)."""
    return read_state(spec).get(FACTS_STATE) or {}


def record_facts(spec: LabSpec, asked: dict[str, list]) -> None:
    """Keep what this converge asked each host it ran on, for the next one's prefetch."""
    if asked:
        write_state(spec, **{FACTS_STATE: recorded_facts(spec) | asked})


def _inventory(spec: LabSpec, data: dict[str, Any]):
    """The groups inventory.py gives pyinfra (labctl.host_data.inventory_groups), as an
    Inventory, `data` over every host's own."""
    from pyinfra.api import Inventory

    from labctl.host_data import inventory_groups

    groups = inventory_groups(spec.source)
    names = [name for name, _ in groups["lab"]]
    return Inventory(
        (names, {}),
        override_data=data,
        **{group: (hosts, {}) for group, hosts in groups.items()},
        inventory=(names, {}),  # the file's own group, as pyinfra's CLI adds it
    )


def _load_deploy(state) -> None:
    """deploy.py on every host, as pyinfra's CLI loads a deploy file: each host runs it
    to add its operations (in parallel, like the CLI)."""
    import gevent
    from pyinfra.context import ctx_config, ctx_host

    code = compile(DEPLOY_FILE.read_text(), str(DEPLOY_FILE), "exec")
    state.current_deploy_filename = str(DEPLOY_FILE)
    state.current_op_file_number = 0

    def load(host) -> Exception | None:
        try:
            with ctx_config.use(state.config.copy()), ctx_host.use(host):
                exec(code, {"__file__": str(DEPLOY_FILE)})
        except Exception as exc:  # raised below, in this greenlet's caller
            return exc
        return None

    greenlets = [state.pool.spawn(load, host) for host in state.inventory.get_active_hosts()]
    gevent.joinall(greenlets)
    for greenlet in greenlets:
        if (error := greenlet.get()) is not None:
            raise error


def _log_error(exc: Exception) -> None:
    """The sentence pyinfra's CLI ends a stopped run with: `--> Operation error in FILE
    line N: message` (the first frame outside pyinfra), or `--> pyinfra error: ...`."""
    from inspect import getframeinfo
    from traceback import walk_tb

    from pyinfra.api.exceptions import OperationError, PyinfraError
    from pyinfra.api.util import PYINFRA_INSTALL_DIR

    if isinstance(exc, OperationError):
        name = "Operation error"
    elif isinstance(exc, PyinfraError):
        name = "pyinfra error"
    else:  # e.g. EOFError from a connection lost in the middle of a fact
        name = f"unexpected {type(exc).__name__}"
    frames = [getframeinfo(frame) for frame, _ in reversed(list(walk_tb(exc.__traceback__)))]
    own = next((f for f in frames if not f.filename.startswith(PYINFRA_INSTALL_DIR)), None)
    where = f" in {own.filename} line {own.lineno}" if own else ""
    logging.getLogger("pyinfra").warning(f"--> {name}{where}: {exc}")


def _results(state) -> dict:
    """pyinfra's results as its CLI's `--json` gives them: per operation (in run order)
    its name and the hosts it changed or failed on, and the hosts that failed."""
    operations = []
    for op_hash in state.get_op_order():
        changed, failed = [], []
        for host in state.inventory.iter_activated_hosts():
            if op_hash not in state.ops[host]:
                continue
            meta = state.ops[host][op_hash].operation_meta
            if not meta.did_succeed(_raise_if_not_complete=False):
                failed.append(host.name)
            elif meta.did_change():
                changed.append(host.name)
        op_meta = state.op_meta[op_hash]
        name = next(iter(op_meta.names), op_hash)  # as pyinfra's CLI names it
        if op_meta.args:
            name = f"{name} ({', '.join(str(arg) for arg in op_meta.args)})"
        operations.append({"name": name, "success": sorted(changed), "error": sorted(failed)})
    return {
        "operations": operations,
        "failed_hosts": sorted(host.name for host in state.failed_hosts),
    }


def _raise_on_failure(
    lines: list[str],
    errors: list[tuple[str, list[str]]],
    failed_hosts: list[str],
    returncode: int,
    has_result: bool,
    log_path: Path,
) -> None:
    """ConvergeError (ConnectFailure for an unreachable host) naming what went wrong,
    if anything did: from pyinfra's progress `lines`, its result and exit status."""
    unreachable = connect_failures(lines)
    if unreachable:
        # Instead of pyinfra's "No hosts remaining!": which host, and why.
        raise ConnectFailure(
            f"pyinfra could not reach {'; '.join(unreachable)}; nothing was changed there: "
            "`labctl status` shows which hosts answer; fix the connection and retry."
        )
    if stopped := operation_error(lines):
        raise ConvergeError(f"converge stopped: {stopped} (log: {log_path})")
    failed = operation_failures(lines)
    if errors or failed_hosts:
        what = "; ".join(f"{name} failed on {', '.join(hosts)}" for name, hosts in errors)
        hosts = f"hosts {', '.join(failed_hosts)} failed" if failed_hosts else ""
        raise ConvergeError(
            f"converge failed ({'; '.join(failed or [p for p in (what, hosts) if p])}); "
            f"read {log_path} for the cause, fix it and run `labctl apply` again.",
            sorted({*failed_hosts, *(h for _, hs in errors for h in hs)}),
        )
    if returncode != 0 or not has_result:
        last = "; ".join(failed) or log_summary(log_path)
        raise ConvergeError(
            f"pyinfra exited with status {returncode} ({last}); "
            f"read {log_path} for the cause, fix it and run `labctl apply` again."
        )
