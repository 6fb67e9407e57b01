"""The lab's stand-ins for Consul and consul-template, for `labctl up --offline`.

tests/standins holds two small programs with the command line and HTTP surface the
lab uses: a Consul stand-in (Python) and a consul-template stand-in (Go). They are NOT
HashiCorp software; they exist so the lab can be tried where neither Docker Hub nor a
mirror answers. Nothing falls back to them: only `--offline` (recorded in the lab's
state) and the test suite name them, through `images.consul` and
`images.consul_template_binary`, and then every output showing Consul or
consul-template says they are stand-ins (NOTE).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from labctl import system
from labctl.consul_template import CACHE
from labctl.images import STANDINS, ImageError, is_standin, recipe_tag, standin_consul_ref
from labctl.platforms import control_arch
from labctl.spec import LabSpec

NOTE = (
    "Consul and consul-template in this lab are its stand-ins (tests/standins), "
    "not HashiCorp software"
)
GO = system.Tool("Go", "go", "golang-go", "the offline road's consul-template stand-in")
CONSUL_TEMPLATE_SOURCES = STANDINS / "consul-template"


def in_use(spec: LabSpec) -> bool:
    return is_standin(spec.consul_image)


def consul_template_binary(version: str, arch: str = "amd64") -> Path:
    """The consul-template stand-in behaving as release `version`, built with Go for
    `arch` (cached by its sources, the release and the architecture)."""
    tag = recipe_tag(CONSUL_TEMPLATE_SOURCES)
    binary = CACHE / "consul-template" / f"standin-{tag}-{version}-linux_{arch}" / "consul-template"
    if binary.is_file():
        return binary
    system.ensure_tools(GO)
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Per process: two labs (or test workers) may build the same stand-in at once.
    partial = binary.with_suffix(f".partial-{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="labctl-go-") as tmp:
        # Offline and static: standard library only, no module download.
        env = os.environ | {"GOPROXY": "off", "GOFLAGS": "", "CGO_ENABLED": "0", "GOARCH": arch}
        if not any(env.get(k) for k in ("GOCACHE", "HOME", "XDG_CACHE_HOME")):
            env["GOCACHE"] = str(Path(tmp) / "gocache")
        build = ["go", "build", "-trimpath", f"-ldflags=-X main.version={version}"]
        result = subprocess.run(
            [*build, "-o", str(partial), "."],
            cwd=CONSUL_TEMPLATE_SOURCES, env=env, capture_output=True, text=True,
        )  # fmt: skip
    if result.returncode == 0 and arch == control_arch():
        # It refuses to run as a release it does not implement: say so here, once.
        result = subprocess.run([str(partial), "-v"], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ImageError(
            f"the consul-template stand-in cannot be built as release {version} ({last}); "
            "set versions.consul_template to a release it implements, and check that "
            "`go version` works (Debian's golang-go)."
        )
    partial.rename(binary)
    return binary


def offline_images(spec: LabSpec, lb_arch: str) -> dict[str, str]:
    """The spec's `images` settings that name the stand-ins (the Consul one is built
    from its sources like a recipe; the consul-template one is built here)."""
    return {
        "consul": standin_consul_ref(spec.versions.consul),
        "consul_template_binary": str(
            consul_template_binary(spec.versions.consul_template, lb_arch)
        ),
    }
