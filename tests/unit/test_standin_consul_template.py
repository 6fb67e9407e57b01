"""Tests of the consul-template stand-in (tests/standins/consul-template).

Runs its Go test suite, then builds the binary (as each release it
implements) and runs it against a fake Consul HTTP API on 127.0.0.1.

    python3 -m pytest tests/unit/test_standin_consul_template.py -q
"""

import os
import re
import socket
import subprocess
import threading

import pytest

from tests.support.consul_fakes import (
    STANDIN_DIR,
    build_consul_template,
    fake_consul,
    go,
    serve_fake_consul,
)

TESTDATA = STANDIN_DIR / "testdata"

# Exit status of consul-template v0.19 for runner errors (failed command,
# Consul unreachable after the retries, bad template, ...).
EXIT_RUNNER_ERROR = 14


def normalize(text):
    """Non-blank lines, each stripped. The seed's published output was
    trimmed by hand, while the template engine keeps the template's
    whitespace; see normalize() in seed_test.go."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_go_test_suite(tmp_path):
    proc = go(tmp_path, STANDIN_DIR, "test", "-count=1", "./...", timeout=600)
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
    # The command runs without a shell in consul-template v0.19, so the
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


# --- the release the stand-in is built as (tests/standins/consul-template/release.go) -----

RELEASES = ("0.19.0", "0.19.5")


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    """The stand-in built as each release it implements."""
    return {v: build_consul_template(tmp_path_factory.mktemp(f"bin-{v}"), v) for v in RELEASES}


@pytest.mark.parametrize("version", RELEASES)
def test_built_release_is_what_dash_v_prints(binaries, version):
    """cli.go Run prints humanVersion on stderr for -v, exit 0."""
    proc = run_standin(binaries[version], "-v")
    assert proc.returncode == 0
    assert proc.stderr == f"consul-template v{version} (standin)\n"


def test_unimplemented_release_fails_the_build_in_one_sentence(tmp_path):
    unimplemented = r'built as version "0\.20\.0", which it does not implement'
    with pytest.raises(AssertionError, match=unimplemented):
        build_consul_template(tmp_path, "0.20.0")


def retry_sleeps(stderr: str) -> dict[int, str]:
    """watch/view.go poll's `(retry attempt %d after %q)`: attempt -> sleep as printed."""
    return {int(n): d for n, d in re.findall(r'\(retry attempt (\d+) after "([^"]+)"\)', stderr)}


@pytest.mark.parametrize("version", RELEASES)
def test_backoff_overflow_follows_the_release(binaries, version, tmp_path, unused_port):
    """config/retry.go RetryFunc: v0.19.0 multiplies 2^retry by the backoff before capping,
    so the product wraps around int64 (GH-1028): with 1ms, from attempt 59 every wait is 0s.
    v0.19.5 caps first (GH-1031): every wait past the cap is the cap."""
    src = tmp_path / "in.ctmpl"
    src.write_text('{{range service "web"}}{{.Address}}{{end}}')
    args = [
        str(binaries[version]),
        f"-consul-addr=127.0.0.1:{unused_port}",
        "-consul-retry-attempts=0",
        "-consul-retry-backoff=1ms",
        "-consul-retry-max-backoff=1ms",
        f"-template={src}:{tmp_path / 'out'}",
    ]
    stderr = read_stderr_until(args, "(retry attempt 70 after", timeout=20)
    sleeps = retry_sleeps(stderr)
    assert all(n in sleeps for n in range(1, 71)), stderr[-2000:]
    if version == "0.19.0":
        assert {sleeps[n] for n in range(1, 45)} == {"1ms"}
        assert {sleeps[n] for n in range(59, 71)} == {"0s"}
    else:
        assert {sleeps[n] for n in range(1, 71)} == {"1ms"}


def read_stderr_until(args: list[str], marker: str, timeout: float) -> str:
    """Run args until `marker` appears on stderr (or timeout); stop it; return stderr."""
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if marker in line:
                break
    finally:
        timer.cancel()
        proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
    stderr = "".join(seen)
    assert marker in stderr, f"no {marker!r} within {timeout}s:\n{stderr[-2000:]}"
    return stderr


@pytest.fixture
def unused_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("version", RELEASES)
def test_stale_reads_fall_back_to_consistent(binaries, version, tmp_path):
    """config/config.go DefaultMaxStale = 2s: every query is ?stale; watch/view.go fetch
    re-reads without ?stale when X-Consul-LastContact is over max_stale."""
    with serve_fake_consul(CATALOG, HEALTH) as fake:
        fake.last_contact_ms = 2500
        proc = run_standin(
            binaries[version],
            "-once",
            f"-consul-addr={fake.address}",
            f"-template={TESTDATA / 'service.ctmpl'}:{tmp_path / 'out'}",
        )
    assert proc.returncode == 0, proc.stderr
    catalog = [r for r in fake.seen if r.path.startswith("/v1/catalog/services")]
    assert [r.stale for r in catalog] == [True, False], fake.requests


@pytest.mark.parametrize("version", RELEASES)
def test_empty_render_writes_nothing_and_runs_nothing(binaries, version, tmp_path):
    """manager/renderer.go Render: bytes.Equal(nil, empty) is true, so an empty render for
    a missing destination is 'up to date'."""
    src, dst, marker = tmp_path / "in.ctmpl", tmp_path / "out", tmp_path / "ran"
    src.write_text('{{range service "zhibo_service"}}{{.Address}}{{end}}')
    with fake_consul(CATALOG, {"zhibo_service": []}) as (address, _):
        proc = run_standin(
            binaries[version],
            "-once",
            f"-consul-addr={address}",
            f"-template={src}:{dst}:/bin/sh -c 'touch {marker}'",
        )
    assert proc.returncode == 0, proc.stderr
    assert not dst.exists() and not marker.exists()


@pytest.mark.parametrize("version", RELEASES)
def test_token_goes_in_the_header_and_403_is_retried(binaries, version, tmp_path):
    """The Consul API client sends the token as X-Consul-Token, never in the URL; a 403 is
    an error like any other: retried with the backoff, then exit 14 (watch/view.go poll).
    The log holds the token in the DEBUG final-config line only (manager/runner.go init)."""
    token = "0f6a1f7e-token-from-the-environment"
    with serve_fake_consul(CATALOG, HEALTH) as fake:
        fake.deny = (403, "ACL not found")
        proc = subprocess.run(
            [
                str(binaries[version]),
                f"-consul-addr={fake.address}",
                "-consul-retry-attempts=1",
                "-consul-retry-backoff=10ms",
                "-log-level=trace",
                f"-template={TESTDATA / 'service.ctmpl'}:{tmp_path / 'out'}",
            ],
            env=dict(os.environ, CONSUL_TOKEN="", CONSUL_HTTP_TOKEN=token),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == EXIT_RUNNER_ERROR, proc.stderr
    assert (
        "[WARN] (view) catalog.services: Unexpected response code: 403 (ACL not found) "
        '(retry attempt 1 after "10ms")' in proc.stderr
    )
    assert "(exceeded maximum retries)" in proc.stderr
    assert {r.token for r in fake.seen} == {token} and len(fake.seen) == 2
    assert not any("token" in r.path for r in fake.seen)
    # At trace, as the real 0.19 does, only the "final config" line holds the token.
    showing = [line for line in proc.stderr.splitlines() if token in line]
    assert len(showing) == 1 and "[DEBUG] (runner) final config: {" in showing[0], showing
    assert not (tmp_path / "out").exists()
