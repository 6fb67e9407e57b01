"""The lab's stand-ins for Consul, consul-template and registrator, for `labctl up
--offline`.

tests/standins holds three small programs with the command line and HTTP surface the
lab uses: a Consul stand-in (Python), a consul-template stand-in and a registrator
stand-in (Go). They are NOT HashiCorp's or registrator's software; they exist so the lab
can be tried where neither Docker Hub nor a mirror answers. Nothing falls back to them:
only `--offline` (recorded in the lab's state) and the test suite name them, through
`images.consul`, `images.consul_template_binary` and `images.registrator`, and then
every output showing Consul, consul-template or registrator says they are stand-ins (NOTE).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from labctl import system
from labctl.images.errors import ImageError
from labctl.images.tags import image_namespace, recipe_tag
from labctl.paths import CACHE
from labctl.platforms import control_arch
from labctl.spec import PROJECT_ROOT, LabSpec

NOTE = (
    "This lab runs the stand-ins (tests/standins) of Consul, consul-template and "
    "registrator, not the real software"
)
Completed = subprocess.CompletedProcess
GO = system.Tool("Go", "go", "golang-go", "the offline road's consul-template stand-in")
# Their sources: the project's rule is that stand-ins live under tests/.
STANDINS = PROJECT_ROOT / "tests" / "standins"
CONSUL_TEMPLATE_SOURCES = STANDINS / "consul-template"


def standin_consul_ref(version: str) -> str:
    """The Consul stand-in's image: its tag carries a hash of its sources, so checkouts
    with different stand-ins on one engine never take each other's image."""
    recipe = STANDINS / "consul"
    return f"{image_namespace()}-standin/consul:{version}-{recipe_tag(recipe)}"


def standin_registrator_ref(version: str) -> str:
    """The registrator stand-in's image, named like the Consul one (the real image's tag
    is v<version>)."""
    recipe = STANDINS / "registrator"
    return f"{image_namespace()}-standin/registrator:v{version}-{recipe_tag(recipe)}"


def is_standin(ref: str, program: str = "consul") -> bool:
    """Whether `ref` names the stand-in image of `program` (consul or registrator)."""
    return ref.rpartition(":")[0].endswith(f"-standin/{program}")


def in_use(spec: LabSpec) -> bool:
    return is_standin(spec.consul_image)


def go(sources: Path, *args: str, arch: str | None = None, timeout: float = 600.0) -> Completed:
    """The go tool run on the stand-in's `sources` (under tests/standins): offline and
    static (standard library only, no module download, no cgo), for `arch` (default:
    this machine's), with a build cache of its own where nothing gives Go one."""
    with tempfile.TemporaryDirectory(prefix="labctl-go-") as scratch:
        env = os.environ | {"GOPROXY": "off", "GOFLAGS": "", "CGO_ENABLED": "0"}
        if arch:
            env["GOARCH"] = arch
        if not any(env.get(k) for k in ("GOCACHE", "HOME", "XDG_CACHE_HOME")):
            env["GOCACHE"] = str(Path(scratch) / "gocache")
        return subprocess.run(
            ["go", *args], cwd=sources, env=env, capture_output=True, text=True, timeout=timeout
        )


def build_consul_template_standin(
    binary: Path, version: str, arch: str | None = None
) -> Completed:
    """Build the consul-template stand-in into `binary`, behaving as release `version`;
    where it can run here, ask it its version: it refuses a release it does not implement."""
    flags = f"-ldflags=-X main.version={version}"
    result = go(CONSUL_TEMPLATE_SOURCES, "build", "-trimpath", flags, "-o", str(binary), ".",
                arch=arch)  # fmt: skip
    if result.returncode == 0 and (arch or control_arch()) == control_arch():
        result = subprocess.run([str(binary), "-v"], capture_output=True, text=True, timeout=30)
    return result


def consul_template_standin(version: str, arch: str = "amd64") -> Path:
    """The consul-template stand-in behaving as release `version`, built for `arch`
    (cached by its sources, the release and the architecture)."""
    tag = recipe_tag(CONSUL_TEMPLATE_SOURCES)
    binary = CACHE / "consul-template" / f"standin-{tag}-{version}-linux_{arch}" / "consul-template"
    if binary.is_file():
        return binary
    system.ensure_tools(GO)
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Per process: two labs (or test workers) may build the same stand-in at once.
    partial = binary.with_suffix(f".partial-{os.getpid()}")
    result = build_consul_template_standin(partial, version, arch)
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
        "registrator": standin_registrator_ref(spec.versions.registrator),
        "consul_template_binary": str(
            consul_template_standin(spec.versions.consul_template, lb_arch)
        ),
    }
