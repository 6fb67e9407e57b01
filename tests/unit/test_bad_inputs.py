"""Every bad input of tests/support/bad_inputs.py is refused in one sentence: exit 2, no
traceback, the user's text as written, nothing reached outside the process (no network,
no child process: tests/support/sandbox.py) and nothing created or changed."""

from __future__ import annotations

import contextlib
import signal
import traceback

import pytest

from labctl import paths
from labctl.cli import app
from labctl.spec import SPEC_ENV
from tests.support.bad_inputs import CASES, TIMEOUT, Case, _prepare, judge, snapshot
from tests.support.sandbox import CONTACT_MARK, Contact, invoke


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail a case that does not answer in time (a loop that grows with a count)."""

    def expire(signum, frame):
        raise TimeoutError(f"no answer within {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_in_process(case: Case, directory, monkeypatch):
    """The case's verdict, labctl run in this process with its labs' state in `directory`."""
    monkeypatch.setattr(paths, "PROJECT_ROOT", directory)
    monkeypatch.setenv(SPEC_ENV, str(directory / "lab.yaml"))  # main() sets it; restored
    monkeypatch.setenv("COLUMNS", "200")
    args = _prepare(case, directory)
    before = snapshot(directory)
    try:
        with deadline(TIMEOUT):
            result = invoke(app, args)
    except TimeoutError as exc:
        return judge(case, None, str(exc), before, snapshot(directory))
    out = result.output
    if isinstance(result.exception, Contact):
        out += f"\n{CONTACT_MARK} {result.exception}"
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        out += "\nTraceback: " + "".join(traceback.format_exception(result.exception))
    return judge(case, result.exit_code, out, before, snapshot(directory))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_refused_in_one_sentence(case, tmp_path, monkeypatch):
    outcome = run_in_process(case, tmp_path, monkeypatch)
    assert outcome.refused, f"{outcome.why}\n{outcome.output}"
