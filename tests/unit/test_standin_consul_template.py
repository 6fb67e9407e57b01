"""Tests of the consul-template stand-in (tests/standins/consul-template).

Runs its Go test suite, then builds the binary and renders the seed's
template once against a tiny fake Consul HTTP API on 127.0.0.1.

    python3 -m pytest tests/unit/test_standin_consul_template.py -q
"""

import subprocess

import pytest

from tests.support.consul_fakes import GO, STANDIN_DIR, build_consul_template, fake_consul, go_env

TESTDATA = STANDIN_DIR / "testdata"

# Exit status of consul-template v0.19.0 for runner errors (failed command,
# Consul unreachable after the retries, bad template, ...).
EXIT_RUNNER_ERROR = 14


def normalize(text):
    """Non-blank lines, each stripped. The seed's published output was
    trimmed by hand, while the template engine keeps the template's
    whitespace; see normalize() in seed_test.go."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_go_test_suite(tmp_path):
    proc = subprocess.run(
        [GO, "test", "-count=1", "./..."],
        cwd=STANDIN_DIR,
        env=go_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"go test failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return build_consul_template(tmp_path_factory.mktemp("bin"))


def _node(name, address):
    return {
        "ID": "id-" + name,
        "Node": name,
        "Address": address,
        "Datacenter": "dc1",
        "TaggedAddresses": {"lan": address},
        "Meta": {},
    }


def _entry(node, address, service, service_id, port, service_address=""):
    return {
        "Node": _node(node, address),
        "Service": {
            "ID": service_id,
            "Service": service,
            "Tags": [],
            "Address": service_address,
            "Port": port,
            "Meta": {},
        },
        "Checks": [
            {
                "Node": node,
                "CheckID": "serfHealth",
                "Name": "Serf Health Status",
                "Status": "passing",
                "ServiceID": "",
                "ServiceName": "",
            }
        ],
    }


# The seed after the three instances started. Entries are deliberately out
# of order: consul-template sorts by node name, then service id. The
# zhibo_service instances have no service address (node address is used).
CATALOG = {"consul": [], "zhibo_service": []}
HEALTH = {
    "consul": [
        _entry("node-b", "192.168.56.3", "consul", "consul", 8300, "192.168.56.3"),
        _entry("node-a", "192.168.56.2", "consul", "consul", 8300, "192.168.56.2"),
    ],
    "zhibo_service": [
        _entry("node-c", "192.168.56.4", "zhibo_service", "zhibo_service-3", 8080),
        _entry("node-a", "192.168.56.2", "zhibo_service", "zhibo_service-1", 8080),
        _entry("node-b", "192.168.56.3", "zhibo_service", "zhibo_service-2", 8080),
    ],
}


@pytest.fixture
def consul_api():
    """(address, request paths seen) of a fake Consul serving the seed's catalog."""
    with fake_consul(CATALOG, HEALTH) as served:
        yield served


@pytest.fixture
def consul(consul_api):
    return consul_api[0]


def run_standin(binary, *args):
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)


def test_once_renders_seed_template(binary, consul_api, tmp_path):
    consul, requests = consul_api
    dst = tmp_path / "nginx.conf"
    marker = tmp_path / "reloaded"
    # The command runs without a shell in consul-template v0.19.0, so the
    # redirection needs an explicit /bin/sh -c.
    command = f"/bin/sh -c 'echo reloaded > {marker}'"
    proc = run_standin(
        binary,
        "-once",
        f"-consul-addr=http://{consul}",
        "-log-level=info",
        "-template",
        f"{TESTDATA / 'service.ctmpl'}:{dst}:{command}",
    )

    assert proc.returncode == 0, proc.stderr
    assert normalize(dst.read_text()) == normalize((TESTDATA / "nginx.conf.expected").read_text())
    assert dst.read_text() == (TESTDATA / "nginx.conf.golden").read_text()
    assert marker.read_text() == "reloaded\n"
    assert f'[INFO] (runner) rendered "{TESTDATA / "service.ctmpl"}" => "{dst}"' in proc.stderr
    health = [r for r in requests if r.startswith("/v1/health/service/")]
    assert health and all("passing=1" in r for r in health), requests


def test_failing_command_exits_with_runner_error(binary, consul, tmp_path):
    dst = tmp_path / "nginx.conf"
    command = "nginx-is-not-installed -s reload"
    proc = run_standin(
        binary,
        "-once",
        f"-consul-addr={consul}",
        "-template",
        f"{TESTDATA / 'service.ctmpl'}:{dst}:{command}",
    )

    assert proc.returncode == EXIT_RUNNER_ERROR, proc.stderr
    assert "[ERR] (cli) 1 error occurred" in proc.stderr
    assert f'failed to execute command "{command}"' in proc.stderr
    assert dst.exists(), "the file is written before the command runs"


def test_dry_run_prints_instead_of_writing(binary, consul, tmp_path):
    dst = tmp_path / "nginx.conf"
    proc = run_standin(
        binary,
        "-once",
        "-dry",
        f"-consul-addr={consul}",
        "-template",
        f"{TESTDATA / 'service.ctmpl'}:{dst}",
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"> {dst}\n")
    assert normalize(proc.stdout)[1:] == normalize((TESTDATA / "nginx.conf.expected").read_text())
    assert not dst.exists()
