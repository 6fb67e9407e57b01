"""Run `pyinfra inventory.py deploy.py` and read back what it changed.

labctl runs the same command a user would type, with `--json` so the result
(which operations changed on which hosts) is read, not scraped from a table.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labctl.paths import log_summary
from labctl.spec import PROJECT_ROOT, LabSpec


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


def pyinfra_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyinfra", "inventory.py", "deploy.py", "--yes", "--json", *args]


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
    """Converge every host; raise ConvergeError with one sentence on failure."""
    returncode, lines, stdout = _run_pyinfra(spec, log_path, on_line, extra_args)
    try:
        payload = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        payload = {}  # no result: the checks below name the failure from the log
    converged, errors, failed_hosts = parse_results(payload)
    _raise_on_failure(lines, errors, failed_hosts, returncode, bool(payload), log_path)
    return converged


def _run_pyinfra(
    spec: LabSpec, log_path: Path, on_line: Callable[[str], None], extra_args: tuple[str, ...]
) -> tuple[int, list[str], str]:
    """Run pyinfra on the spec, its progress (stderr) line by line to the log and
    `on_line`; its exit status, those lines, and its JSON result (stdout)."""
    env = os.environ | {"LAB_SPEC": str(spec.source), "PYTHONUNBUFFERED": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Line-buffered: `tail -f` (and a test waiting for a step) sees each line as it comes.
    with log_path.open("a", buffering=1) as log:
        process = subprocess.Popen(
            pyinfra_command(*extra_args), cwd=PROJECT_ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None and process.stdout is not None
        lines = []
        for line in process.stderr:
            log.write(line)
            lines.append(line.rstrip())
            on_line(line.rstrip())
        stdout = process.stdout.read()
        process.wait()
        log.write(stdout)
    return process.returncode, lines, stdout


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
