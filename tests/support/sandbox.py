"""labctl with no way out: any network connection, child process or exec is a failure.

A bad input must be refused before labctl touches anything, and a verb on a lab that is
not up must answer from the local state alone. `no_contact()` makes every way out of the
process (socket connect, subprocess, exec, os.system) raise `Contact` in-process, for
CliRunner tests; run as a program, this module runs labctl with the same guards, its
labs' state under a directory of the caller's, and ends the process with
CONTACT_EXIT on the first attempt, naming it on stderr:

    python -m tests.support.sandbox STATE_DIR -- [labctl arguments]
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

CONTACT_EXIT = 97
CONTACT_MARK = "sandbox: contact:"


class Contact(BaseException):
    """labctl tried to reach outside the process. A BaseException, so that no
    `except Exception` in labctl can turn it into an answer."""


# What a child process may be: ctypes.util.find_library's look into this machine's library
# cache, which an import (trio's, under httpx) makes.
LOCAL_LOOKUPS = (["/sbin/ldconfig", "-p"],)
_POPEN_INIT = subprocess.Popen.__init__


def _guards(on_contact: Callable[[str], None]) -> dict[tuple[object, str], object]:
    def connect(self, address, *args, **kwargs):
        on_contact(f"connect {address!r}")

    def popen(self, args, *rest, **kwargs):
        if isinstance(args, list | tuple) and list(args) in LOCAL_LOOKUPS:
            return _POPEN_INIT(self, args, *rest, **kwargs)
        on_contact(f"run {args!r}")

    def execute(*args, **kwargs):
        on_contact(f"exec {args!r}")

    guards: dict[tuple[object, str], object] = {
        (socket.socket, "connect"): connect,
        (socket.socket, "connect_ex"): connect,
        (subprocess.Popen, "__init__"): popen,
        (os, "system"): execute,
        (os, "posix_spawn"): execute,
        (os, "posix_spawnp"): execute,
    }
    for name in ("execv", "execve", "execvp", "execvpe", "execl", "execlp", "fork"):
        guards[(os, name)] = execute
    return guards


@contextlib.contextmanager
def no_contact() -> Iterator[None]:
    """In-process: every way out raises Contact while the block runs."""

    def refuse(what: str) -> None:
        raise Contact(what)

    saved = {key: getattr(*key) for key in _guards(refuse)}
    try:
        for (owner, name), guard in _guards(refuse).items():
            setattr(owner, name, guard)
        yield
    finally:
        for (owner, name), original in saved.items():
            setattr(owner, name, original)


def invoke(app, args: list[str]) -> Result:
    """CliRunner's result for `labctl ARGS` under no_contact(); a Contact is the result's
    exception (CliRunner lets BaseExceptions through)."""
    runner = CliRunner()
    try:
        with no_contact():
            return runner.invoke(app, args, prog_name="labctl")
    except Contact as contact:
        return Result(runner, b"", b"", b"", None, 1, contact, None)


def _exit_on_contact(what: str) -> None:
    sys.stderr.write(f"{CONTACT_MARK} {what}\n")
    sys.stderr.flush()
    os._exit(CONTACT_EXIT)


def main(argv: list[str]) -> None:
    state_dir, separator, *arguments = argv
    assert separator == "--", "usage: python -m tests.support.sandbox STATE_DIR -- ARGS..."
    from labctl import paths

    # The labs' state (.lab/<name>) under the caller's directory, not this checkout's.
    paths.PROJECT_ROOT = Path(state_dir)
    for (owner, name), guard in _guards(_exit_on_contact).items():
        setattr(owner, name, guard)
    from labctl.cli import app

    app(arguments, prog_name="labctl")


if __name__ == "__main__":
    main(sys.argv[1:])
