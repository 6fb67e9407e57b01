"""A real registry on the control machine, standing in for Docker Hub (unreachable here).

Debian's `docker-registry` (the CNCF distribution registry, no Docker engine needed)
serves a temporary directory over plain HTTP. The control machine's engine pushes to
it on loopback (which Docker trusts without TLS); the lab's hosts pull from it at the
control machine's address on their network, as a `registry-mirrors` entry of their
engines (Docker allows plain HTTP for mirrors).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

from testbed.machines import docker

READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Registry:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = workdir / "registry.log"

    @property
    def local(self) -> str:
        """Where the control machine's engine pushes."""
        return f"127.0.0.1:{self.port}"

    def mirror(self, gateway: str) -> str:
        """The registry as the hosts reach it (a daemon.json registry-mirrors entry)."""
        return f"http://{gateway}:{self.port}"

    def start(self) -> Registry:
        config = self.workdir / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: info, accesslog: {disabled: false}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.workdir / 'data'}}}}}\n"
            # Every address: the engine pushes on loopback, the hosts pull on their network.
            f"http: {{addr: ':{self.port}'}}\n"
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                if httpx.get(f"http://{self.local}/v2/", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start; see {self.log}")
            time.sleep(0.3)

    def push(self, ref: str, as_path: str | None = None) -> None:
        """Put a local image into the registry, at `as_path` (default: its own path;
        Docker Hub's official images live under library/)."""
        path = as_path or ref
        target = f"{self.local}/{path}"
        docker("tag", ref, target)
        try:
            docker("push", "-q", target, timeout=900)
        finally:
            docker("rmi", target)

    def stop(self) -> None:
        """Stop the registry and remove the images it stored (about 110 MB for the lab's;
        its log stays)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir / "data", ignore_errors=True)
