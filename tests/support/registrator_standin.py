"""Helpers for the registrator stand-in's tests: build it, run it against a Consul stand-in
agent on loopback and the machine's real Docker engine, and start the containers it
watches.

Every container a test starts carries the label `io.labctl.test=registrator-standin` and
a run label of its own; it is on the host network (never on a network of its own) and its
process is `sleeper` (tests/standins/registrator/testdata/sleeper), loaded as a one-layer
image without any registry. The health checks the agent runs go to a `HealthServer` on
127.0.0.1. LAB_REGISTRATOR_BINARY runs the same tests against another build (for a
side-by-side with the real registrator built outside the repository).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.support.consul_fakes import go
from tests.support.foreign_image import load_one_layer_image

STANDIN_DIR = Path(__file__).resolve().parents[1] / "standins" / "registrator"
TEST_LABEL = "io.labctl.test"
TEST_LABEL_VALUE = "registrator-standin"
RUN_LABEL = "io.labctl.test-run"
DOCKER_SOCKET = "/var/run/docker.sock"
# The name registrator puts first in every service ID: this machine's (it runs here,
# not in a container).
HOSTNAME = socket.gethostname()


def build_registrator(out_dir: Path) -> Path:
    """The stand-in's binary (or LAB_REGISTRATOR_BINARY's, for a side-by-side)."""
    other = os.environ.get("LAB_REGISTRATOR_BINARY")
    if other:
        return Path(other)
    binary = out_dir / "registrator"
    _go_build(out_dir, binary, ".")
    return binary


def _go_build(tmp_dir: Path, binary: Path, package: str) -> None:
    proc = go(tmp_dir, STANDIN_DIR, "build", "-trimpath", "-o", str(binary), package)
    assert proc.returncode == 0, f"go build {package} failed:\n{proc.stdout}\n{proc.stderr}"


def load_sleeper_image(tmp_dir: Path) -> str:
    """Build `sleeper` and load it as a one-layer image; returns its reference. The tag
    names this process too, so a test worker removing its tag never takes the image
    from under another."""
    binary = tmp_dir / "sleeper"
    _go_build(tmp_dir, binary, "./testdata/sleeper")
    data = binary.read_bytes()
    ref = f"registrator-standin-test/sleeper:{hashlib.sha256(data).hexdigest()[:12]}-{os.getpid()}"
    load_one_layer_image(
        ref,
        docker("version", "-f", "{{.Server.Arch}}"),
        {"sleeper": data},
        ["/sleeper"],
        labels={TEST_LABEL: TEST_LABEL_VALUE},
        modes={"sleeper": 0o755},
    )
    return ref


def docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout.strip()


class Containers:
    """The containers of one test: started on the host network with SERVICE_* metadata
    (labels and/or environment), all removed by `remove_all`."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.run_id = uuid.uuid4().hex[:10]

    def name(self, suffix: str) -> str:
        return f"regtest-{self.run_id}-{suffix}"

    def run(
        self,
        suffix: str,
        port: int | None,
        labels: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        command: tuple[str, ...] = (),
    ) -> str:
        """Start a container (detached) and return its name."""
        name = self.name(suffix)
        args = ["run", "-d", "--name", name, "--net=host", "--stop-timeout=2"]
        args += ["--label", f"{TEST_LABEL}={TEST_LABEL_VALUE}"]
        args += ["--label", f"{RUN_LABEL}={self.run_id}"]
        if port is not None:
            args += ["--expose", str(port)]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        docker(*args, self.image, *command)
        return name

    def remove_all(self) -> None:
        ids = docker("ps", "-aq", "--filter", f"label={RUN_LABEL}={self.run_id}").split()
        if ids:
            docker("rm", "-f", *ids)


class Registrator:
    """One registrator process on this machine, watching the real Docker engine."""

    def __init__(self, binary: Path, log_path: Path) -> None:
        self.binary = binary
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, *args: str, env: dict[str, str] | None = None) -> Registrator:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        environment["DOCKER_HOST"] = f"unix://{DOCKER_SOCKET}"
        environment.update(env or {})
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [str(self.binary), *args], stdout=log, stderr=subprocess.STDOUT, env=environment
        )
        log.close()
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"registrator exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in registrator's log within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class FakeDocker:
    """A Docker Engine API on a unix socket, for what the real engine cannot be made to
    do in a test: end the event stream, or send many events at once. Containers are
    all on the host network, exposing one port, with SERVICE_NAME set; `/events` sends
    `events` (JSON objects), keeps the stream open `hold_s` seconds, then ends it."""

    def __init__(
        self,
        socket_path: Path,
        containers: dict[str, int],
        events: list[dict],
        hold_s: float = 0.0,
    ) -> None:
        import http.server
        import socketserver
        import threading

        owner = self
        self.socket_path = socket_path
        self.containers = containers
        self.events = events
        self.hold_s = hold_s
        self.event_requests: list[str] = []
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def address_string(self) -> str:
                return "fake-docker"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                owner.requests.append(self.path)
                path = self.path.split("?")[0]
                if path == "/containers/json":
                    self._json([])
                elif path == "/events":
                    owner.event_requests.append(self.path)
                    # Chunked, as the engine streams it (a stream with no length
                    # that ends with the connection is refused by older clients).
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for e in owner.events:
                        line = json.dumps(e).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                    time.sleep(owner.hold_s)
                    self.wfile.write(b"0\r\n\r\n")
                    self.close_connection = True
                elif path.startswith("/containers/") and path.endswith("/json"):
                    cid = path.split("/")[2]
                    if cid not in owner.containers:
                        self.send_response(404)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    port = owner.containers[cid]
                    self._json(
                        {
                            "Id": cid,
                            "Name": f"/c{cid[-12:]}",
                            "Config": {
                                "Image": "fake",
                                "Env": [],
                                "Labels": {"SERVICE_NAME": "burst"},
                                "ExposedPorts": {f"{port}/tcp": {}},
                            },
                            "HostConfig": {"NetworkMode": "host"},
                            "NetworkSettings": {"IPAddress": "", "Ports": {}, "Networks": {}},
                            "State": {"Running": True, "ExitCode": 0},
                        }
                    )
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that went away mid-answer

        self.server = Server(str(socket_path), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
