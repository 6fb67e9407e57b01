"""templates/lb/lb-reload with Debian's nginx (installed by `./lab test`): a render nginx
takes, a render `nginx -t` refuses, and a reload nginx does not take, each seen in what
nginx serves, the state volume's files, lb.json (lb-publish) and lb-health.

nginx runs as the LB runs it, one master reloaded by `nginx -s reload`, but in a temporary
prefix and on a free loopback port: a wrapper named `nginx` first on PATH gives every call
of the scripts that prefix. The reload fails as it does in a container whose pid file no
longer names the master (nginx: "kill(PID, 1) failed (3: No such process)").
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from labctl import verify
from labctl.spec import parse_spec
from tests.unit.test_lb_template import LB_RECIPE, NGINX

NO_SUCH_PID = "4194303"  # above Linux's pid_max default: no process has it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Lb:
    """An LB's files in `root`: the live configuration, the render, the state volume."""

    root: Path
    port: int
    env: dict[str, str]

    @property
    def live(self) -> Path:
        return self.root / "conf.d" / "service.conf"

    @property
    def render_file(self) -> Path:
        return self.root / "service.rendered"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def pid_file(self) -> Path:
        return self.root / "nginx.pid"

    def config(self, answer: str, broken: bool = False) -> str:
        """A service.conf whose server answers `answer` (`broken`: one nginx -t refuses)."""
        end = "" if broken else "}\n"
        return (f"server {{\n    listen 127.0.0.1:{self.port};\n"
                f"    location / {{ return 200 '{answer}'; }}\n{end}")  # fmt: skip

    def render(self, answer: str, broken: bool = False) -> subprocess.CompletedProcess:
        """consul-template's part: write the render, then run lb-reload."""
        self.render_file.write_text(self.config(answer, broken))
        done = self.run("lb-reload")
        assert done.returncode == 0, done.stderr  # always 0: consul-template must go on
        return done

    def run(self, script: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(LB_RECIPE / script)], env=self.env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    def serves(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/", trust_env=False, timeout=5).text

    def published(self) -> dict:
        return json.loads((self.state / "lb.json").read_text())

    def health(self) -> dict:
        done = self.run("lb-health")
        assert done.returncode != 0  # no LB container here: nginx's pid and port :80 differ
        return json.loads(done.stdout)

    def counter(self, name: str) -> int:
        return int((self.state / name).read_text())


def verify_rows(lb: Lb, monkeypatch) -> list[verify.Check]:
    """labctl verify's LB rows, with the LB host's commands answered here: nginx -t
    passes, lb-health is this LB's."""

    def run(ssh, command: str, timeout: float = 30.0, sudo: bool = False):
        if command.endswith("lb-health"):
            return 1, lb.run("lb-health").stdout
        return 0, "nginx: configuration file /etc/nginx/nginx.conf test is successful"

    monkeypatch.setattr(verify, "run", run)
    host = {"name": "lb1", "address": "192.168.56.2", "consul": "server", "lb": True}
    spec = parse_spec({"name": "lbreload", "provider": "ssh", "hosts": [host]})[0]
    return verify.nginx_checks(spec, {"lb1": {}})


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def lb(tmp_path) -> Iterator[Lb]:
    """A real nginx master serving the first render, with start.sh's state: counters at
    0, the first configuration as the last good one."""
    root, port = tmp_path, free_port()
    for folder in ("conf.d", "state", "bin", "logs"):
        (root / folder).mkdir()
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp_paths = "".join(f"    {kind}_temp_path {root / kind};\n" for kind in kinds)
    (root / "nginx.conf").write_text(
        f"pid {root / 'nginx.pid'};\nerror_log {root / 'logs' / 'error.log'};\nevents {{}}\n"
        f"http {{\n{temp_paths}    access_log off;\n    include {root / 'conf.d'}/*.conf;\n}}\n"
    )
    wrapper = root / "bin" / "nginx"
    wrapper.write_text(f'#!/bin/sh\nexec {NGINX} -p {root}/ -e {root / "logs" / "error.log"} '
                       f'-c {root / "nginx.conf"} "$@"\n')  # fmt: skip
    (root / "bin" / "lb-publish").symlink_to(LB_RECIPE / "lb-publish")
    wrapper.chmod(0o755)
    env = os.environ | {
        "PATH": f"{root / 'bin'}:{os.environ['PATH']}",
        "LB_LIVE": str(root / "conf.d" / "service.conf"),
        "LB_RENDER": str(root / "service.rendered"),
        "LB_STATE": str(root / "state"),
    }
    lab = Lb(root, port, env)
    lab.live.write_text(lab.config("first"))
    (lab.state / "service.conf").write_text(lab.config("first"))
    for counter in ("reloads", "rejected", "reload_failures"):
        (lab.state / counter).write_text("0\n")
    subprocess.run([str(wrapper)], env=env, check=True, timeout=30)  # daemonizes
    master = int(wait_until(lambda: lab.pid_file.exists() and lab.pid_file.read_text(), 10,
                            "nginx's pid file"))  # fmt: skip
    try:
        wait_until(lambda: lab.serves() == "first", 10, "nginx serving the first render")
        yield lab
    finally:
        os.kill(master, signal.SIGQUIT)


def test_a_render_nginx_takes_is_served_counted_and_kept_as_the_last_good_one(lb):
    done = lb.render("second")
    assert "lb-reload: reloaded nginx" in done.stderr
    wait_until(lambda: lb.serves() == "second", 10, "nginx serving the second render")
    assert lb.counter("reloads") == 1
    assert (lb.state / "service.conf").read_text() == lb.config("second")
    assert lb.published()["latest_reload_failed"] is False
    assert (lb.health()["config"], lb.health()["reload_failed"]) == ("current", None)


def test_a_render_nginx_t_refuses_is_counted_and_the_previous_one_kept(lb):
    done = lb.render("second", broken=True)
    assert "rendered configuration rejected, kept the previous one" in done.stderr
    assert lb.live.read_text() == lb.config("first")
    assert (lb.counter("reloads"), lb.counter("rejected")) == (0, 1)
    assert lb.serves() == "first"
    assert lb.published()["latest_render_refused"] is True


def test_a_reload_nginx_does_not_take_is_said_kept_and_never_counted_as_a_reload(lb, monkeypatch):
    """`nginx -s reload` fails when its signal reaches no master. nginx then still runs
    the previous configuration: lb-reload must neither count a reload nor record the
    render as the last good configuration (a restart would serve it unchecked), must put
    the previous file back (lb.json describes what nginx runs), and must say so, in its
    log, lb.json and lb-health, where `labctl apply` and `verify` read it."""
    master = lb.pid_file.read_text()
    lb.pid_file.write_text(NO_SUCH_PID + "\n")  # the master is no longer the pid file's
    done = lb.render("second")

    assert "nginx did not take the new configuration (nginx -s reload exited with status 1" \
        in done.stderr  # fmt: skip
    assert "No such process" in done.stderr
    assert "reloaded nginx" not in done.stderr
    assert lb.serves() == "first"
    assert lb.live.read_text() == lb.config("first")  # the file is what nginx runs
    assert (lb.state / "service.conf").read_text() == lb.config("first")  # last good unchanged
    assert (lb.counter("reloads"), lb.counter("reload_failures")) == (0, 1)
    published = lb.published()
    assert (published["reloads"], published["reload_failures"]) == (0, 1)
    assert published["latest_reload_failed"] is True
    health = lb.health()
    assert health["config"] == "stale"  # nginx does not run the latest render
    assert health["reload_failed"].startswith("nginx -s reload exited with status 1: ")
    (row,) = [c for c in verify_rows(lb, monkeypatch) if c.what == "nginx reload"]
    assert not row.ok and "nginx did not take the latest render (nginx -s reload" in row.detail

    # The repair (`apply` restarts the LB: a master the pid file names again), then the
    # next render goes through and the failure is gone.
    lb.pid_file.write_text(master)
    lb.render("third")
    wait_until(lambda: lb.serves() == "third", 10, "nginx serving the third render")
    assert (lb.counter("reloads"), lb.counter("reload_failures")) == (1, 1)
    assert lb.published()["latest_reload_failed"] is False
    assert (lb.health()["config"], lb.health()["reload_failed"]) == ("current", None)
    assert [c.what for c in verify_rows(lb, monkeypatch)] == ["nginx -t"]
