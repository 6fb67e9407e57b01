"""Reading pyinfra's --json results, and the docker role's daemon.json."""

from __future__ import annotations

from types import SimpleNamespace

from labctl.converge import connect_failures, operation_error, operation_failures, parse_results
from roles.docker import DEFAULTS, daemon_config


def op(name, success=(), no_change=(), error=()):
    return {"name": name, "success": list(success), "no_change": list(no_change),
            "error": list(error)}  # fmt: skip


def test_changes_are_counted_per_host_and_named():
    payload = {
        "results": {
            "operations": [
                op("Deploy Docker | Write daemon.json", success=["a1", "b1"]),
                op("Deploy Docker | Install", no_change=["a1", "b1"]),
            ],
            "failed_hosts": [],
        }
    }
    result, errors, failed = parse_results(payload)
    assert result.change_count == 2
    assert result.operations == 2
    assert result.describe_changes() == "Deploy Docker | Write daemon.json on a1, b1"
    assert errors == [] and failed == []


def test_no_changes():
    result, _, _ = parse_results({"results": {"operations": [op("x", no_change=["a1"])]}})
    assert result.change_count == 0 and result.describe_changes() == ""


def test_errors_and_failed_hosts_are_reported():
    payload = {"results": {"operations": [op("y", error=["b1"])], "failed_hosts": ["b1"]}}
    _, errors, failed = parse_results(payload)
    assert errors == [("y", ["b1"])] and failed == ["b1"]


def data(**overrides):
    return SimpleNamespace(**(DEFAULTS | overrides))


def test_daemon_json_defaults_rotate_logs_and_list_no_mirrors():
    assert daemon_config(data()) == {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
    }


def test_daemon_json_mirrors_and_extra_options():
    config = daemon_config(
        data(
            docker_registry_mirrors=["https://mirror.local"],
            docker_daemon_options={"bip": "10.9.0.1/24"},
        )
    )
    assert config["registry-mirrors"] == ["https://mirror.local"]
    assert config["bip"] == "10.9.0.1/24"


def test_connect_failures_name_each_host_and_cause():
    stderr = [
        "--> Connecting to hosts...",
        "    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!",
        "    [m1] SSH host key error (Host key for 192.168.79.2 does not match.)",
        "    [m2] Could not connect ([Errno 111] Connection refused)",
        "    [m3] Authentication error (username=admin, key=/k)",
        "--> pyinfra error: No hosts remaining!",
    ]
    assert connect_failures(stderr) == [
        "m1: ssh host key error (Host key for 192.168.79.2 does not match.)",
        "m2: could not connect ([Errno 111] Connection refused)",
        "m3: authentication error (username=admin, key=/k)",
    ]


def test_connect_failures_ignore_operation_output():
    assert connect_failures(["    [m1] Success", "    [m1] Could not lock /var/lib/dpkg"]) == []


def test_a_failed_operation_is_named_with_its_hosts_last_output_line():
    """What pyinfra printed when every host failed one step (it then says only "No hosts
    remaining!"): the sentence names the step, each host and why."""
    lines = """--> Starting operation: Deploy Consul agent | Write the host's Consul token header
    [node1] Success
--> Starting operation: Deploy Consul agent | Write and validate the agent configuration
    [node1] mv: cannot move 'a' to 'b': No such file or directory
    [node1] Error: executed 6 commands
    [node3] No changes
--> Starting serial operation: Deploy demo service | Run zhibo-2, Deploy demo service | Run zhibo-1
    [node2] Error: executed 1 commands
--> pyinfra error: No hosts remaining!""".splitlines()
    assert operation_failures(lines) == [
        "Deploy Consul agent | Write and validate the agent configuration on node1: "
        "mv: cannot move 'a' to 'b': No such file or directory",
        "Deploy demo service | Run zhibo-2 on node2: "
        "Error: executed 1 commands",
    ]


def test_an_operation_error_is_the_roles_own_sentence():
    """An operation that stops the run (OperationError) says why and what to do, naming
    the host; pyinfra prints it last, behind the file and line that raised it."""
    lines = """--> Starting operation: Deploy demo service | Deregister what the spec dropped
<Greenlet at 0x7f: _run_host_op_with_context(...)> failed with OperationError
--> Disconnecting from hosts...
--> Operation error in /lab/roles/operations.py line 99: the Consul agent on node2 answered 403 (ACL not found) to GET /v1/agent/services; then run `labctl apply`.""".splitlines()  # noqa: E501
    assert operation_error(lines) == (
        "the Consul agent on node2 answered 403 (ACL not found) to GET /v1/agent/services; "
        "then run `labctl apply`."
    )
    assert operation_error(["--> pyinfra error: No hosts remaining!"]) is None
