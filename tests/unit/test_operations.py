"""The custom pyinfra operations and facts of roles/operations.py.

Operation tests are data, in pyinfra's own style: one JSON file per case under
tests/unit/operations/<operation>/<case>.json, holding

    "args":     the operation's keyword arguments;
    "facts":    {fact class name: {"key=value,...": fact value}} - every fact the
                operation reads ("" is the key of a fact without arguments); a
                fact the case does not list fails the test;
    "local_files" (optional): {name: content} created on the "control machine"
                (a tmp dir), which args and commands refer to as {local}/<name>;
    "commands": the commands the operation must yield, in order, as text
                (uploads read "upload <src> <dest>", a file-like src "io:<content>");
    or "noop": true, with an optional "noop_description";
    or "error": text the OperationError that stops the operation must hold.

The operations run through pyinfra 3's `._inner` (the raw generator) against a
fake host that answers facts from the case and records no-ops.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra.api import FileUploadCommand, FunctionCommand, OperationError
from pyinfra.operations import files

import roles.operations as ops
from roles.operations import SPEC_LABEL, spec_hash

CASES_DIR = Path(__file__).resolve().parent / "operations"
CASES = sorted(CASES_DIR.glob("*/*.json"))
LOCAL = "{local}"


class FakeHost:
    """Just enough of pyinfra's Host for the operations and files.put."""

    name = "fakehost"
    current_op_global_arguments = None

    def __init__(self, facts: dict):
        self.facts = facts
        self.noops: list[str] = []
        self.fact_calls: list[tuple[str, str]] = []

    def get_fact(self, fact_cls, **kwargs):
        name = fact_cls.__name__
        key = ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
        self.fact_calls.append((name, key))
        known = self.facts.get(name, {})
        if key not in known:
            raise AssertionError(f"the case lists no fact {name} [{key!r}]; add it to 'facts'")
        return copy.deepcopy(known[key])

    def noop(self, description: str) -> None:
        self.noops.append(description)

    def get_temp_filename(self, hash_key=None, hash_filename=True, *, temp_directory=None):
        return f"/tmp/pyinfra-{hashlib.sha1(str(hash_key).encode()).hexdigest()}"


def command_text(command, local_dir: Path) -> str:
    if isinstance(command, FileUploadCommand):
        src = command.src
        if hasattr(src, "getvalue"):
            shown = "io:" + src.getvalue()
        else:
            shown = str(src).replace(str(local_dir), LOCAL)
        return f"upload {shown} {command.dest}"
    if isinstance(command, FunctionCommand):
        args = json.dumps(with_local(list(command.args), local_dir, reverse=True))
        return f"call {command.function.__name__} {args}"
    if isinstance(command, str):
        return command.strip()  # as pyinfra's operation wrapper does
    return str(command)


def with_local(value, local_dir: Path, reverse: bool = False):
    """Replace {local} in every string of a case's args with the control machine's dir
    (`reverse`: the dir with {local}, in what an operation yields)."""
    old, new = (str(local_dir), LOCAL) if reverse else (LOCAL, str(local_dir))
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [with_local(v, local_dir, reverse) for v in value]
    if isinstance(value, dict):
        return {k: with_local(v, local_dir, reverse) for k, v in value.items()}
    return value


@pytest.fixture
def fake_host(monkeypatch):
    """Install a FakeHost for roles.operations and pyinfra's files operations."""

    def install(facts: dict) -> FakeHost:
        host = FakeHost(facts)
        monkeypatch.setattr(ops, "host", host)
        monkeypatch.setattr(files, "host", host)
        # files.put reads state.cwd (to place a relative src) and state.config.DIFF.
        monkeypatch.setattr(
            files, "state", SimpleNamespace(cwd=None, config=SimpleNamespace(DIFF=False))
        )
        return host

    return install


def run_operation(name: str, args: dict, host: FakeHost, local_dir: Path) -> list[str]:
    operation = getattr(ops, name)
    return [command_text(c, local_dir) for c in operation._inner(**args)]


@pytest.mark.parametrize("case_file", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_operation_case(case_file, fake_host, tmp_path):
    case = json.loads(case_file.read_text())
    outcomes = ("commands" in case, bool(case.get("noop")), "error" in case)
    assert sum(outcomes) == 1, "a case has commands, noop: true or an error"
    for name, content in case.get("local_files", {}).items():
        (tmp_path / name).write_text(content)
    host = fake_host(case.get("facts", {}))
    args = with_local(case["args"], tmp_path)

    if "error" in case:
        with pytest.raises(OperationError) as stopped:
            run_operation(case_file.parent.name, args, host, tmp_path)
        assert case["error"] in str(stopped.value)
        assert host.noops == []
        return
    commands = run_operation(case_file.parent.name, args, host, tmp_path)

    if case.get("noop"):
        assert commands == []
        assert len(host.noops) == 1, host.noops
        if "noop_description" in case:
            assert host.noops == [case["noop_description"]]
    else:
        assert commands == case["commands"]
        assert host.noops == []
    listed = {(name, key) for name, values in case.get("facts", {}).items() for key in values}
    assert listed == set(host.fact_calls), "the case lists exactly the facts the operation reads"


def test_every_operation_has_cases():
    operations = {
        "images_present", "container", "containers_pruned", "validated_config",
        "service_instance", "consul_services_absent", "load_balancer_healthy",
        "images_obtained", "labelled_absent", "recorded_images_absent", "json_keys",
        "registrator_instance", "registrator_instances_drained", "drain_lifted",
        "address_absent", "address_yielded",
    }  # fmt: skip
    assert {p.parent.name for p in CASES} == operations


# --- container: the spec label ------------------------------------------------

CONTAINER_ARGS = {
    "container_name": "consul",
    "image": "hashicorp/consul:1.11.3",
    "image_id": "sha256:" + "1f" * 32,
    "args": ["--net=host", "-v=consul-data:/consul/data"],
    "command": ["agent"],
    "labels": {"io.labctl.lab": "dynlb"},
    "depends_on": "5d1e0c9a2b7f4e31",
}


def run_args(commands: list[str]) -> list[str]:
    """The words of the `docker run` command among the yielded commands."""
    (run,) = [c for c in commands if c.startswith("docker run ")]
    return shlex.split(run)


def spec_label(args: dict, fake_host, tmp_path) -> str:
    host = fake_host({"DockerContainerState": {f"container={args['container_name']}": None}})
    words = run_args(run_operation("container", args, host, tmp_path))
    (label,) = [w for w in words if w.startswith(f"--label={SPEC_LABEL}=")]
    return label.split("=", 2)[2]


def test_container_label_carries_the_spec_hash(fake_host, tmp_path):
    a = CONTAINER_ARGS
    expected = spec_hash(a["image_id"], a["args"], a["command"], a["labels"], a["depends_on"])
    assert spec_label(a, fake_host, tmp_path) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"image_id": "sha256:" + "2e" * 32},
        {"args": ["--net=host", "-v=other:/consul/data"]},
        {"command": ["agent", "-dev"]},
        {"labels": {"io.labctl.lab": "other"}},
        {"depends_on": "0000000000000000"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_container_label_changes_when_an_argument_changes(change, fake_host, tmp_path):
    before = spec_label(CONTAINER_ARGS, fake_host, tmp_path)
    assert spec_label(CONTAINER_ARGS | change, fake_host, tmp_path) != before


def test_container_label_ignores_the_order_of_labels(fake_host, tmp_path):
    labels = {"a": "1", "b": "2"}
    reordered = {"b": "2", "a": "1"}
    assert spec_label(CONTAINER_ARGS | {"labels": labels}, fake_host, tmp_path) == spec_label(
        CONTAINER_ARGS | {"labels": reordered}, fake_host, tmp_path
    )


def test_container_recreated_from_a_changed_arg_is_matched_on_the_next_run(fake_host, tmp_path):
    changed = CONTAINER_ARGS | {"args": ["--net=host"]}
    digest = spec_label(changed, fake_host, tmp_path)
    host = fake_host(
        {"DockerContainerState": {"container=consul": {"spec": digest, "running": True}}}
    )
    assert run_operation("container", changed, host, tmp_path) == []
    assert host.noops == ["container consul is up to date"]


# --- validated_config: paths are single shell words ------------------------------


def test_validated_config_keeps_a_dir_with_a_space_one_shell_word(fake_host, tmp_path):
    config_dir = "/etc/my lab/consul"
    staged = f"{config_dir}.staged.d/agent.json"
    host = fake_host({
        "Sha1File": {f"path={config_dir}/agent.json": None},
        "File": {f"path={staged}": None},
        "Directory": {f"path={staged}": None},
    })  # fmt: skip
    args = {"config_dir": config_dir, "files": {"agent.json": {"content": "{}\n"}},
            "validate": "true {}"}  # fmt: skip
    commands = run_operation("validated_config", args, host, tmp_path)
    cleanup, move = commands[0], commands[-1]
    # Split at the space, `rm -rf /etc/my ...` would remove the whole of /etc/my.
    for command in (cleanup, move):
        assert "/etc/my" not in shlex.split(command), command


@pytest.mark.parametrize("content", [["{not json"], ['["a list"]']])
def test_json_keys_refuses_a_file_that_holds_no_json_object(content, fake_host, tmp_path):
    host = fake_host({"FileContents": {"path=/etc/docker/daemon.json": content}})
    args = {"path": "/etc/docker/daemon.json", "set_keys": {"log-driver": "json-file"}}
    with pytest.raises(OperationError, match=r"daemon.json holds no JSON object; fix or remove"):
        run_operation("json_keys", args, host, tmp_path)


class LoggingHost:
    def __init__(self):
        self.logged: list[str] = []

    def log_styled(self, text: str, **style) -> None:
        self.logged.append(text)


def test_an_archive_streams_into_the_load_command(tmp_path):
    """What the OpenSSH command receives on stdin is the archive, byte for byte; a
    command that fails is an error naming its last line."""
    archive = tmp_path / "images.tar"
    archive.write_bytes(b"\x00tar bytes\xff" * 1000)
    received = tmp_path / "received"
    host = LoggingHost()
    command = ["sh", "-c", f"cat > {received}"]
    assert ops._load_over_openssh(None, host, str(archive), command) is True
    assert received.read_bytes() == archive.read_bytes() and host.logged == []
    failing = ["sh", "-c", "cat >/dev/null; echo 'Error processing tar file'; exit 1"]
    assert ops._load_over_openssh(None, host, str(archive), failing) is False
    assert host.logged == ["Error processing tar file"]


def test_container_digest_is_the_label_container_writes(fake_host, tmp_path):
    digest = ops.container_digest(**{k: v for k, v in CONTAINER_ARGS.items() if k not in (
        "container_name", "image")})  # fmt: skip
    assert spec_label(CONTAINER_ARGS, fake_host, tmp_path) == digest


@pytest.mark.parametrize(
    ("state", "replaces"),
    [
        ({"spec": "other", "running": True}, True),
        ({"spec": "current", "running": True}, False),
        ({"spec": "other", "running": False}, False),  # nothing serves: no wait after it
        (None, False),
    ],
    ids=["running-other-spec", "running-same-spec", "stopped-other-spec", "absent"],
)
def test_replaces_running_is_when_container_would_run_replaced_ready(state, replaces, fake_host):
    fake_host({"DockerContainerState": {"container=consul": state}})
    assert ops.replaces_running("consul", "current") is replaces


@pytest.mark.parametrize(
    ("state", "serial"),
    [
        (None, False),  # a first start takes nothing out of service: every host at once
        ({"spec": "other", "running": True}, True),  # a replacement: one host at a time
        ({"spec": "other", "running": False}, True),
    ],
    ids=["absent", "running", "stopped"],
)
def test_rolling_runs_replacements_one_host_at_a_time_and_first_starts_at_once(
    state, serial, fake_host
):
    fake_host({"DockerContainerState": {"container=zhibo-1": state}})
    calls = []
    ops.rolling(lambda **kwargs: calls.append(kwargs), "zhibo-1", name="Run zhibo-1")
    assert calls == [{"container_name": "zhibo-1", "name": "Run zhibo-1"}
                     | ({"_serial": True} if serial else {})]  # fmt: skip
