"""labctl runs pyinfra in its own process: the same run as pyinfra's CLI (operations in
deploy-file order, `--data` and `--exclude`, the CLI's progress lines, its results),
checked here on this machine's `@local` connector with small deploy files that only
echo (the lab's own inventory and deploy.py need the lab's hosts: the e2e suite)."""

from __future__ import annotations

import os
from pathlib import Path

import pyinfra
import pytest
from pyinfra.api import FactBase, Inventory

from labctl import converge as converge_module
from labctl.converge import ConvergeError, converge, parse_flags

HELLO = """
from pyinfra import host
from pyinfra.operations import server

server.shell(name="Say hello", commands=["echo hello"])
if host.data.get("lab_loud"):
    server.shell(name="Say it louder", commands=["echo HELLO"])
"""

STOPS = """
from pyinfra.api.exceptions import OperationError
from pyinfra.operations import server

server.shell(name="Say hello", commands=["echo hello"])
raise OperationError("the lab's agent on @local answered 403; hand it its token.")
"""


@pytest.fixture
def deploy(tmp_path, monkeypatch):
    """Write a deploy file for `@local` and point the converge at it."""

    def write(code: str) -> Path:
        path = tmp_path / "deploy.py"
        path.write_text(code)
        monkeypatch.setattr(converge_module, "DEPLOY_FILE", path)
        return path

    def local_inventory(spec, data):
        return Inventory((["@local"], {}), override_data=data, lab=(["@local"], {}))

    monkeypatch.setattr(converge_module, "_inventory", local_inventory)
    # What the lab's state would keep between converges: the facts each host was asked.
    write.recorded = {}
    monkeypatch.setattr(converge_module, "recorded_facts", lambda spec: dict(write.recorded))
    monkeypatch.setattr(
        converge_module, "record_facts", lambda spec, asked: write.recorded.update(asked)
    )
    return write


def test_an_in_process_converge_reports_what_changed_and_logs_like_the_cli(deploy, tmp_path):
    deploy(HELLO)
    log = tmp_path / "logs" / "converge.log"
    seen: list[str] = []
    cwd = os.getcwd()
    result = converge(None, log, on_line=seen.append)
    assert result.changed == [("Say hello", ["@local"])]
    assert result.operations == 1
    text = log.read_text()
    assert "--> Starting operation: Say hello" in text
    assert "    [@local] Success" in text
    assert "--> Results:" in text
    assert "\x1b[" not in text  # no terminal styles in the log
    assert seen and all(line in text for line in seen)
    # What the run changed in this process is undone.
    assert os.getcwd() == cwd and pyinfra.is_cli is False


def test_data_flags_reach_the_hosts_and_a_second_run_starts_afresh(deploy, tmp_path):
    deploy(HELLO)
    log = tmp_path / "converge.log"
    loud = converge(None, log, extra_args=("--data", "lab_loud=true"))
    assert [name for name, _ in loud.changed] == ["Say hello", "Say it louder"]
    quiet = converge(None, log, extra_args=("--data", "lab_loud=false"))
    assert [name for name, _ in quiet.changed] == ["Say hello"]


def test_an_excluded_host_is_not_touched(deploy, tmp_path):
    deploy(HELLO)
    result = converge(None, tmp_path / "converge.log", extra_args=("--exclude", "@local"))
    assert result.changed == [] and result.operations == 0


def test_an_operation_error_stops_the_run_with_its_sentence(deploy, tmp_path):
    path = deploy(STOPS)
    log = tmp_path / "converge.log"
    with pytest.raises(ConvergeError) as stopped:
        converge(None, log)
    message = str(stopped.value)
    assert message.startswith("converge stopped: the lab's agent on @local answered 403")
    assert f"--> Operation error in {path} line 6:" in log.read_text()


@pytest.mark.parametrize(
    ("flags", "data", "exclude"),
    [
        (("--data", "lab_stage=agents"), {"lab_stage": "agents"}, []),
        (("--data", "lab_teardown=true", "--data", "n=3"), {"lab_teardown": True, "n": 3}, []),
        (("--data", 'env={"A": "1"}'), {"env": {"A": "1"}}, []),
        (("--data", "k=a=b", "--exclude", "m2"), {"k": "a=b"}, ["m2"]),
    ],
)
def test_flags_are_read_as_pyinfra_reads_them(flags, data, exclude):
    assert parse_flags(flags) == (data, exclude)


@pytest.mark.parametrize("flags", [("--limit", "m1"), ("--data",), ("--data", "novalue")])
def test_a_flag_the_converge_does_not_know_is_refused(flags):
    with pytest.raises(ValueError, match="unknown pyinfra flag"):
        parse_flags(flags)


class Reads(FactBase):
    """How often the host was asked: each read appends a line to a file (in the test's
    tmp dir) and answers how many lines it has."""

    host_state_only = True

    def command(self, log):
        return f"echo read >> {log} && wc -l < {log}"

    def process(self, output):
        return int(output[0])


class ReadsNotKept(Reads):
    host_state_only = False


COUNTING = """
from pyinfra import host
from pyinfra.api import operation

from tests.unit.test_converge_in_process import {fact} as Reads


@operation()
def read_twice(log: str, change: bool = False):
    host.get_fact(Reads, log=log)
    if change:
        yield "true"
    host.noop(f"read {{host.get_fact(Reads, log=log)}} times")


read_twice(name="Read", log="{log}")
read_twice(name="Read again", log="{log}")
read_twice(name="Read, change, read", log="{log}", change=True)
read_twice(name="Read after the change", log="{log}")
"""


@pytest.mark.parametrize(("kept", "reads"), [(True, 2), (False, 8)])
def test_a_host_state_fact_is_asked_once_until_a_command_runs_there(deploy, tmp_path, kept, reads):
    """Kept: asked by the first read, and again by the first read after the command (in
    the same operation); every other read is answered from the last. Not kept: asked by
    every read."""
    log = tmp_path / "reads"
    deploy(COUNTING.format(fact="Reads" if kept else "ReadsNotKept", log=log))
    converge(None, tmp_path / "converge.log")
    assert len(log.read_text().splitlines()) == reads
    assert f"--> Facts: 8 read, {8 - reads} answered" in (tmp_path / "converge.log").read_text()


TWO_FACTS = """
from pyinfra import host
from pyinfra.api import operation

from tests.unit.test_converge_in_process import Reads


@operation()
def read(log: str):
    host.noop(f"read {{host.get_fact(Reads, log=log)}}")
    yield from ()  # an operation is a generator, also when it runs nothing


read(name="Read one", log="{log}-one")
read(name="Read two", log="{log}-two")
read(name="Read one again", log="{log}-one")
"""


def test_the_next_converge_asks_the_facts_the_last_one_asked_in_one_command(deploy, tmp_path):
    deploy(TWO_FACTS.format(log=tmp_path / "reads"))
    log = tmp_path / "converge.log"
    converge(None, log)
    assert "--> Facts: 3 read, 1 answered from this run's earlier reads (0 read" in log.read_text()
    reads = "tests.unit.test_converge_in_process:Reads"
    assert deploy.recorded == {
        "@local": [[reads, [], {"log": f"{tmp_path}/reads-one"}],
                   [reads, [], {"log": f"{tmp_path}/reads-two"}]]
    }  # fmt: skip
    log.unlink()
    converge(None, log)
    assert "--> Facts: 3 read, 3 answered from this run's earlier reads (2 read" in log.read_text()
    # Each fact's command ran once per converge: the second time, in the prefetch.
    assert (tmp_path / "reads-one").read_text() == "read\nread\n"
    assert (tmp_path / "reads-two").read_text() == "read\nread\n"
