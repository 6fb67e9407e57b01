"""The bad inputs a new user can give labctl, and whether each is refused in one sentence.

Each case is one mistake: a spec value, a spec file, a verb argument, or a verb on a lab
that is not up. "Refused in one sentence" means: exit status 2, no traceback, exactly one
`error:` line (or click's one-sentence usage error), the user's own text shown as written,
no attempt to reach anything outside the process (tests/support/sandbox.py), nothing
created or changed in the case's directory, and an answer within a few seconds.

tests/unit/test_bad_inputs.py runs every case in-process; run as a program this module
runs every case in a child process against a checkout and prints the counts (the figures
of issue 16's closing note; `--checkout` names another checkout, e.g. main's):

    .venv/bin/python -m tests.support.bad_inputs [--checkout DIR] [-v]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SANDBOX = Path(__file__).resolve().with_name("sandbox.py")
CHECKOUT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0
LAB = "badinput"

# A valid spec on a subnet no test or user lab takes (nothing is created anyway).
VALID: dict = {
    "name": LAB,
    "provider": "docker",
    "network": {"subnet": "192.168.250.0/24"},
    "hosts": [
        {"name": "server1", "address": "192.168.250.2", "consul": "server", "bootstrap": True,
         "demo": 1},
        {"name": "server2", "address": "192.168.250.3", "consul": "server", "demo": 1},
        {"name": "server3", "address": "192.168.250.4", "consul": "server", "demo": 1},
        {"name": "lb1", "address": "192.168.250.5", "consul": "client", "lb": True},
    ],
}  # fmt: skip
UP_STATE = {"provider": "docker"}


def spec_with(path: str, value: object) -> str:
    """VALID with the value at a dotted path (`hosts.0.demo`) replaced, as YAML."""
    data = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def valid_yaml() -> str:
    return yaml.safe_dump(VALID, sort_keys=False)


@dataclass(frozen=True)
class Case:
    id: str
    # labctl's arguments after `--spec FILE`; `{dir}` is the case's own directory.
    args: tuple[str, ...] = ("status",)
    # The spec file's content (text, or bytes as written); None: no file.
    spec: str | bytes | None = field(default_factory=valid_yaml)
    spec_name: str = "lab.yaml"
    # The lab's state file (.lab/<name>/state.json); None: the lab is not up.
    state: dict | None = None
    # User text the sentence must show exactly as written.
    literal: str = ""
    # Arguments given instead of `--spec FILE ...` (for the global options themselves).
    raw_args: tuple[str, ...] | None = None


def _services(*services: dict) -> str:
    data = copy.deepcopy(VALID)
    data["services"] = [{"name": "zhibo_service"}, *services]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _check(**check: object) -> str:
    return _services({"name": "api", "port": 9080, "instances": {"server1": 1},
                      "check": check})  # fmt: skip


def _two_lbs(lb_address: object) -> str:
    """VALID with a second LB host (server3) and network.lb_address."""
    data = copy.deepcopy(VALID)
    data["hosts"][2]["lb"] = True
    data["network"]["lb_address"] = lb_address
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


VALID_TEXT = valid_yaml()

CASES: list[Case] = [
    # --- the spec file itself ---------------------------------------------------------
    Case("spec-missing", spec=None),
    Case("spec-is-a-directory", raw_args=("--spec", "{dir}", "status")),
    Case("spec-not-utf8", spec=VALID_TEXT.replace("server3", "serv\xe9r3").encode("latin-1")),
    Case("spec-empty", spec=""),
    Case("spec-a-list", spec="- name: x\n"),
    Case("spec-a-scalar", spec="just words\n"),
    Case("spec-yaml-syntax", spec=VALID_TEXT + "hosts: [\n"),
    Case("spec-nul-byte", spec=VALID_TEXT + "\x00\n"),
    Case("spec-tab-indent", spec=VALID_TEXT.replace("- name: server2", "\t- name: server2")),
    Case("spec-date-that-is-none", spec=VALID_TEXT.replace("name: badinput", "name: 2024-13-01")),
    Case("spec-number-of-5000-digits",
         spec=VALID_TEXT.replace("demo: 1", "demo: " + "9" * 5000, 1)),
    Case("spec-duplicate-top-key", spec=VALID_TEXT + "name: other\n", literal="name"),
    Case("spec-duplicate-host-key",
         spec=VALID_TEXT.replace("  demo: 1\n- name: server2", "  demo: 1\n  demo: 3\n"
                                 "- name: server2", 1), literal="demo"),
    Case("spec-brackets-in-name-missing", spec=None, spec_name="[x]lab.yaml",
         literal="[x]lab.yaml"),
    Case("spec-brackets-in-name-bad", spec="- 1\n", spec_name="[red]lab.yaml",
         literal="[red]lab.yaml"),
    # A folder `lab[` and a file `x].yaml` in it: the path has a closing tag, `[/x]`.
    Case("spec-closing-tag-in-path", spec=None, spec_name="lab[/x].yaml",
         literal="lab[/x].yaml"),
    # --- top-level values ----------------------------------------------------------------
    Case("name-brackets", spec=spec_with("name", "[bold]x"), literal="[bold]x"),
    Case("name-closing-tag", spec=spec_with("name", "x[/y]"), literal="x[/y]"),
    Case("name-uppercase", spec=spec_with("name", "MyLab"), literal="MyLab"),
    Case("name-an-int", spec=spec_with("name", 2024)),
    Case("name-control-char", spec=spec_with("name", "lab\x07")),
    Case("provider-unknown", spec=spec_with("provider", "kvm"), literal="kvm"),
    Case("unknown-key", spec=spec_with("netwrok", {"subnet": "192.168.250.0/24"}),
         literal="netwrok"),
    Case("hosts-empty", spec=spec_with("hosts", [])),
    Case("hosts-a-mapping", spec=spec_with("hosts", {"server1": "192.168.250.2"})),
    Case("security-word", spec=spec_with("security", "open"), literal="open"),
    Case("security-bool-as-string", spec=spec_with("security.acl", "no")),
    # --- network -----------------------------------------------------------------------
    Case("subnet-host-bits", spec=spec_with("network.subnet", "192.168.250.7/24"),
         literal="192.168.250.0/24"),
    Case("subnet-garbage", spec=spec_with("network.subnet", "192.168.250/24x")),
    Case("subnet-ipv6", spec=spec_with("network.subnet", "fd00::/64")),
    Case("subnet-loopback",
         spec=spec_with("network.subnet", "127.0.0.0/24").replace("192.168.250.", "127.0.0.")),
    Case("subnet-multicast",
         spec=spec_with("network.subnet", "224.1.1.0/24").replace("192.168.250.", "224.1.1.")),
    Case("subnet-an-int", spec=spec_with("network.subnet", 24)),
    Case("allow-any-subnet-string", spec=spec_with("network.allow_any_subnet", "yes")),
    # --- versions and images -----------------------------------------------------------
    Case("version-float", spec=spec_with("versions.consul", 1.11)),
    Case("version-two-parts", spec=spec_with("versions.consul", "1.11"), literal="1.11"),
    Case("consul-image-latest", spec=spec_with("images.consul", "hashicorp/consul:latest")),
    Case("consul-image-uppercase", spec=spec_with("images.consul", "HashiCorp/Consul:1.11.3")),
    Case("base-image-uppercase", spec=spec_with("docker.base_image", "Debian:Bookworm"),
         literal="Debian:Bookworm"),
    Case("base-image-no-tag", spec=spec_with("docker.base_image", "debian")),
    Case("mirror-not-a-url", spec=spec_with("images.registry_mirrors", ["not a url"]),
         literal="not a url"),
    Case("mirror-ftp", spec=spec_with("images.registry_mirrors", ["ftp://mirror.example"])),
    Case("mirror-with-path", spec=spec_with("images.registry_mirrors", ["https://m.example/v2/x"])),
    Case("mirror-with-password",
         spec=spec_with("images.registry_mirrors", ["https://u:secret@m.example"])),
    Case("mirror-no-host", spec=spec_with("images.registry_mirrors", ["https://"])),
    Case("mirror-bad-port", spec=spec_with("images.registry_mirrors", ["m.example:99999"])),
    Case("mirrors-a-string", spec=spec_with("images.registry_mirrors", "https://m.example")),
    Case("delivery-unknown", spec=spec_with("images.delivery", "both")),
    Case("ct-binary-missing", args=("up",),
         spec=spec_with("images.consul_template_binary", "/nonexistent/consul-template"),
         literal="/nonexistent/consul-template"),
    # --- providers' settings -----------------------------------------------------------
    Case("cpus-true", spec=spec_with("virtualbox.cpus", True)),
    Case("cpus-zero", spec=spec_with("virtualbox.cpus", 0)),
    Case("cpus-float", spec=spec_with("virtualbox.cpus", 1.5)),
    Case("memory-string", spec=spec_with("virtualbox.memory", "2048")),
    Case("memory-huge", spec=spec_with("virtualbox.memory", 10**30)),
    Case("ssh-port-zero", spec=spec_with("ssh.port", 0)),
    Case("ssh-port-string", spec=spec_with("ssh.port", "22")),
    Case("apt-cache-ftp", spec=spec_with("apt.cache", "ftp://proxy:3142")),
    Case("box-version-word", spec=spec_with("virtualbox.boxes.amd64",
                                            {"box": "debian/bookworm64", "version": "latest"})),
    Case("ssh-user-empty", spec=spec_with("ssh.user", "")),
    Case("host-ssh-user-space", spec=spec_with("hosts.1.ssh_user", "ad min"), literal="ad min"),
    Case("host-ssh-host-space", spec=spec_with("hosts.1.ssh_host", "web 1"), literal="web 1"),
    # --- hosts ---------------------------------------------------------------------------
    Case("host-name-brackets", spec=spec_with("hosts.1.name", "[b]x"), literal="[b]x"),
    Case("host-name-duplicate", spec=spec_with("hosts.1.name", "server1")),
    Case("host-address-int", spec=spec_with("hosts.1.address", 3232299523)),
    Case("host-address-bad", spec=spec_with("hosts.1.address", "192.168.250.300")),
    Case("host-address-outside", spec=spec_with("hosts.1.address", "10.0.0.3")),
    Case("host-address-gateway", spec=spec_with("hosts.1.address", "192.168.250.1")),
    Case("host-consul-capital", spec=spec_with("hosts.1.consul", "Server")),
    Case("host-bootstrap-string", spec=spec_with("hosts.1.bootstrap", "yes")),
    Case("host-lb-int", spec=spec_with("hosts.1.lb", 1)),
    Case("host-demo-true", spec=spec_with("hosts.1.demo", True)),
    Case("host-demo-string", spec=spec_with("hosts.1.demo", "2")),
    Case("host-demo-float", spec=spec_with("hosts.1.demo", 1.0)),
    Case("host-demo-negative", spec=spec_with("hosts.1.demo", -1)),
    Case("host-demo-huge", spec=spec_with("hosts.1.demo", 10**12)),
    Case("host-ssh-port-huge", spec=spec_with("hosts.1.ssh_port", 70000)),
    Case("host-not-a-mapping", spec=spec_with("hosts.1", "server2")),
    # --- two LBs, one address -------------------------------------------------------------
    Case("lb-address-missing", spec=spec_with("hosts.2.lb", True)),
    Case("lb-address-single-lb", spec=spec_with("network.lb_address", "192.168.250.10")),
    Case("lb-address-outside", spec=_two_lbs("10.0.0.10")),
    Case("lb-address-gateway", spec=_two_lbs("192.168.250.1")),
    Case("lb-address-broadcast", spec=_two_lbs("192.168.250.255")),
    Case("lb-address-a-host", spec=_two_lbs("192.168.250.3")),
    Case("lb-address-int", spec=_two_lbs(3232299530)),
    Case("lb-unicast-string", spec=spec_with("network.lb_unicast", "yes")),
    # --- services ------------------------------------------------------------------------
    Case("service-name-brackets", spec=_services({"name": "[x]"}), literal="[x]"),
    Case("service-name-closing-tag", spec=_services({"name": "a[/b]"}), literal="a[/b]"),
    Case("service-name-dot", spec=_services({"name": "a.b"})),
    Case("service-name-unicode", spec=_services({"name": "直播"}), literal="直播"),
    Case("service-name-duplicate", spec=_services({"name": "zhibo_service"})),
    Case("service-port-true",
         spec=_services({"name": "api", "port": True, "instances": {"server1": 1}})),
    Case("service-port-string",
         spec=_services({"name": "api", "port": "9080", "instances": {"server1": 1}})),
    Case("service-port-low", spec=_services({"name": "api", "port": 80})),
    Case("service-instances-true",
         spec=_services({"name": "api", "port": 9080, "instances": {"server1": True}})),
    Case("service-instances-unknown-host",
         spec=_services({"name": "api", "port": 9080, "instances": {"[h]": 1}}), literal="[h]"),
    Case("service-instances-huge",
         spec=_services({"name": "api", "port": 9080, "instances": {"server1": 10**15}})),
    Case("service-tags-a-string", spec=_services({"name": "api", "tags": "v1"})),
    Case("service-registration-unknown",
         spec=_services({"name": "api", "port": 9080, "registration": "consul"})),
    Case("service-registrator-tag-comma",
         spec=_services({"name": "api", "port": 9080, "registration": "registrator",
                         "tags": ["a,b"]}), literal="a,b"),
    Case("check-interval-zero", spec=_check(interval="0s")),
    Case("check-interval-below-1s", spec=_check(interval="500ms")),
    Case("check-interval-no-unit", spec=_check(interval="10")),
    Case("check-interval-overflow", spec=_check(interval="9999999999h")),
    Case("check-interval-an-int", spec=_check(interval=10)),
    Case("check-timeout-zero", spec=_check(timeout="0s")),
    Case("check-deregister-below-1m", spec=_check(deregister_critical_after="30s")),
    Case("check-path-relative", spec=_check(path="health")),
    Case("check-path-space", spec=_check(path="/he alth")),
    # --- verb arguments ------------------------------------------------------------------
    Case("unknown-verb", args=("stauts",)),
    Case("unknown-verb-brackets", args=("x[/y]",), literal="x[/y]"),
    Case("up-unknown-provider", args=("up", "--provider", "kvm"), literal="kvm"),
    Case("up-bundle-missing", args=("up", "--bundle", "{dir}/no-such.tar")),
    Case("up-bundle-not-a-tar", args=("up", "--bundle", "{dir}/lab.yaml")),
    Case("up-wait-negative", args=("up", "--wait", "-1")),
    Case("verify-wait-nan", args=("verify", "--wait", "nan"), state=UP_STATE),
    Case("verify-wait-inf", args=("verify", "--wait", "inf"), state=UP_STATE),
    Case("verify-wait-word", args=("verify", "--wait", "soon"), state=UP_STATE),
    Case("watch-interval-negative", args=("watch", "--interval", "-1"), state=UP_STATE),
    Case("watch-interval-zero", args=("watch", "--interval", "0"), state=UP_STATE),
    Case("watch-interval-huge", args=("watch", "--interval", "1e300"), state=UP_STATE),
    Case("watch-count-negative", args=("watch", "--count", "-3"), state=UP_STATE),
    Case("scale-no-equals", args=("scale", "zhibo_service"), state=UP_STATE),
    Case("scale-empty-service", args=("scale", "=3"), state=UP_STATE),
    Case("scale-negative", args=("scale", "zhibo_service=-1"), state=UP_STATE),
    Case("scale-superscript-digit", args=("scale", "zhibo_service=²"), state=UP_STATE,
         literal="²"),
    Case("scale-float", args=("scale", "zhibo_service=2.5"), state=UP_STATE),
    Case("scale-huge", args=("scale", "zhibo_service=99999999999999999999"), state=UP_STATE),
    Case("scale-past-ports", args=("scale", "zhibo_service=200000"), state=UP_STATE),
    Case("scale-unknown-service", args=("scale", "nosuch=3"), state=UP_STATE, literal="nosuch"),
    Case("scale-service-brackets", args=("scale", "a[/b]=3"), state=UP_STATE, literal="a[/b]"),
    Case("fail-unknown-target", args=("fail", "zhibo-9"), state=UP_STATE, literal="zhibo-9"),
    Case("fail-target-brackets", args=("fail", "[x]"), state=UP_STATE, literal="[x]"),
    Case("fail-target-closing-tag", args=("fail", "[/x]"), state=UP_STATE, literal="[/x]"),
    Case("recover-empty-target", args=("recover", ""), state=UP_STATE),
    Case("restart-lb-not-an-lb", args=("restart-lb", "server1"), state=UP_STATE,
         literal="server1"),
    Case("restart-lb-brackets", args=("restart-lb", "[/b]"), state=UP_STATE, literal="[/b]"),
    Case("token-unknown-name", args=("token", "[/bold]"),
         state=UP_STATE, literal="[/bold]"),
    Case("bundle-save-to-directory", args=("bundle", "save", "{dir}")),
    Case("bundle-save-no-parent", args=("bundle", "save", "{dir}/no/such/dir/b.tar")),
    # --- verbs on a lab that is not up -----------------------------------------------------
    Case("not-up-verify", args=("verify",)),
    Case("not-up-watch", args=("watch", "--count", "1")),
    Case("not-up-token", args=("token",)),
    Case("not-up-token-read", args=("token", "read")),
    Case("not-up-scale", args=("scale", "zhibo_service=2")),
    Case("not-up-fail", args=("fail", "zhibo-1")),
    Case("not-up-recover", args=("recover", "server1")),
    Case("not-up-apply", args=("apply",)),
    Case("not-up-restart-lb", args=("restart-lb",)),
    Case("not-up-state-without-provider", args=("verify",), state={"service_counts": {}}),
    Case("state-not-json", args=("verify",), state={"corrupt": True}),
]


def _routed_subnet() -> str | None:
    """A /24 inside a network this machine routes (its LAN, a Docker bridge), if any."""
    from labctl.hostnet import routes

    for _, network in routes():
        if network.prefixlen <= 24:
            return str(next(network.subnets(new_prefix=24)))
    return None


if routed := _routed_subnet():
    first = routed.rsplit(".", 1)[0]
    CASES.append(Case(
        "up-subnet-overlaps-this-machine", args=("up",),
        spec=spec_with("network.subnet", routed).replace("192.168.250.", f"{first}."),
        literal=routed,
    ))  # fmt: skip


@dataclass
class Outcome:
    case: str
    refused: bool
    why: str  # what fell short, "" when refused in one sentence
    output: str


def _prepare(case: Case, directory: Path) -> list[str]:
    """Write the case's files under `directory`; labctl's arguments."""
    spec_file = directory / case.spec_name
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(case.spec, bytes):
        spec_file.write_bytes(case.spec)
    elif case.spec is not None:
        spec_file.write_text(case.spec, encoding="utf-8")
    if case.state is not None:
        state = directory / ".lab" / LAB / "state.json"
        state.parent.mkdir(parents=True)
        text = "{not json" if case.state == {"corrupt": True} else json.dumps(case.state)
        state.write_text(text)
    args = case.raw_args if case.raw_args is not None else ("--spec", str(spec_file), *case.args)
    return [a.replace("{dir}", str(directory)) for a in args]


def snapshot(directory: Path) -> dict[str, str]:
    """Every file and folder under `directory`, with a hash of each file's content."""
    seen = {}
    for path in sorted(directory.rglob("*")):
        name = str(path.relative_to(directory))
        seen[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return seen


ERROR_LINE = re.compile(r"^error: ", re.MULTILINE)
CLICK_ERROR = "╭─ Error"


def one_sentence(output: str) -> bool:
    """One `error:` line, or click's usage error (a sentence in a box)."""
    return len(ERROR_LINE.findall(output)) == 1 or CLICK_ERROR in output


def judge(case: Case, code: int | None, output: str, before: dict, after: dict) -> Outcome:
    """Whether the case was refused in one sentence, and if not, why."""
    from tests.support.sandbox import CONTACT_MARK

    flat = " ".join(output.split())
    if code is None:
        why = f"no answer within {TIMEOUT:.0f} s"
    elif CONTACT_MARK in output:
        why = "reached outside: " + output.split(CONTACT_MARK, 1)[1].strip().splitlines()[0]
    elif "Traceback" in output:
        why = "traceback: " + output.strip().splitlines()[-1][:120]
    elif code != 2:
        why = f"exit status {code}"
    elif not one_sentence(output):
        why = f"{len(ERROR_LINE.findall(output))} error lines"
    elif case.literal and case.literal not in flat:
        why = f"does not show {case.literal!r} as written"
    elif before != after:
        changed = sorted(set(after.items()) ^ set(before.items()))
        why = f"changed {changed[0][0]}"
    else:
        why = ""
    return Outcome(case.id, not why, why, output)


def run_in_child(case: Case, checkout: Path) -> Outcome:
    """The case against `checkout`'s labctl, in a child process in the sandbox."""
    with tempfile.TemporaryDirectory(prefix="bad-input-") as tmp:
        directory = Path(tmp)
        args = _prepare(case, directory)
        before = snapshot(directory)
        env = os.environ | {
            "PYTHONPATH": f"{checkout}{os.pathsep}{CHECKOUT}",
            "HOME": tmp, "XDG_CACHE_HOME": f"{tmp}/.cache", "COLUMNS": "200",
            "LAB_SPEC": str(directory / "lab.yaml"),
        }  # fmt: skip
        try:
            done = subprocess.run(
                [sys.executable, str(SANDBOX), tmp, "--", *args],
                env=env, capture_output=True, text=True, timeout=TIMEOUT,
            )  # fmt: skip
            code, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            code, output = None, (exc.stdout or b"").decode() + (exc.stderr or b"").decode()
        after = snapshot(directory)
        return judge(case, code, output, before, after)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=CHECKOUT, help="labctl's checkout")
    parser.add_argument("-v", "--verbose", action="store_true", help="each case's verdict")
    options = parser.parse_args()
    outcomes = [run_in_child(case, options.checkout.resolve()) for case in CASES]
    for outcome in outcomes:
        if options.verbose or not outcome.refused:
            verdict = "refused" if outcome.refused else f"NOT refused: {outcome.why}"
            print(f"{outcome.case:36} {verdict}")
    refused = sum(o.refused for o in outcomes)
    print(f"{options.checkout.resolve()}: {refused} of {len(outcomes)} bad inputs refused in one "
          "sentence (exit 2, no traceback, nothing reached or changed)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
