"""Property-based tests of labctl's input handling (Hypothesis).

Generated specs (the valid one of tests/support/bad_inputs.py, mutated: values of the wrong
type, odd strings with brackets, unicode and control characters, huge numbers, keys
removed, added or written twice, bytes that are not UTF-8) go to `load_spec`; generated
verb arguments go to the CLI, in-process under tests/support/sandbox.py's guard and a few
through a real child process. Whatever comes in: an answer within a few seconds, exit 0
or 2, one sentence per problem, no traceback, nothing reached outside the process and
nothing written outside the test's own folder.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from labctl import paths, vagrant
from labctl.cli import app
from labctl.paths import labs_dir
from labctl.spec import SPEC_ENV, SpecError, load_spec
from tests.support.bad_inputs import LAB, SANDBOX, UP_STATE, VALID, one_sentence, snapshot
from tests.support.sandbox import CONTACT_EXIT, CONTACT_MARK, Contact, invoke
from tests.unit.test_bad_inputs import deadline

# Fast enough for every CI run (LAB_HYPOTHESIS_EXAMPLES=5000 hunts longer); a slow example
# is a finding (a loop that grows with a number), so the deadline is part of the property.
EXAMPLES = int(os.environ.get("LAB_HYPOTHESIS_EXAMPLES", "150"))
FAST = settings(max_examples=EXAMPLES, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
ANSWER_WITHIN = 5.0

# Text a user may type or paste: markup-like brackets, unicode, control characters.
odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["[x]", "[/x]", "x[/y]", "[bold]", "[/]", "\\[", "直播", "ü", "\x00",
                     "\x1b[31m", "\t", "\n", "", " ", "-1", "0", "1e400", "nan", "²", "٣"]),
    st.builds(lambda a, b: f"{a}[{b}]", st.text(max_size=8), st.text(max_size=8)),
)  # fmt: skip
odd_scalar = st.one_of(
    odd_text,
    st.integers(),
    st.integers(min_value=10**15, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
odd_value = st.recursive(
    odd_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(odd_text, inner, max_size=4)),
    max_leaves=8,
)  # fmt: skip


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value of the spec (keys and list indexes)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


# Keys the valid spec leaves at their defaults, so that mutations reach them too.
FULL = copy.deepcopy(VALID) | {
    "versions": {"consul": "1.11.3", "consul_template": "0.19.5", "nginx": "1.22.1"},
    "images": {"registry_mirrors": ["https://mirror.example"], "delivery": "auto"},
    "virtualbox": {"cpus": 1, "memory": 1024},
    "docker": {"base_image": "debian:bookworm"},
    "ssh": {"user": "root", "port": 22},
    "apt": {"cache": "auto"},
    "security": {"acl": True, "gossip_encryption": True},
    "services": [
        {"name": "zhibo_service"},
        {"name": "api", "tags": ["v1"], "port": 9080, "instances": {"server1": 2},
         "check": {"path": "/health", "interval": "5s", "timeout": "2s",
                   "deregister_critical_after": "90m"}},
    ],
}  # fmt: skip
SPEC_PATHS = _paths(FULL)


@st.composite
def mutated_specs(draw) -> dict:
    """The full valid spec with one to three values replaced, removed or added."""
    data = copy.deepcopy(FULL)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data) or [("name",)]))
        *parents, last = path
        node = data
        try:
            for part in parents:
                node = node[part]
            action = draw(st.sampled_from(["replace", "remove", "add"]))
            if action == "replace":
                node[last] = draw(odd_value)
            elif action == "remove" and isinstance(node, dict):
                del node[last]
            elif isinstance(node, dict):
                node[draw(odd_text)] = draw(odd_value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation changed the shape there
    return data


# Plain scalars YAML 1.1 reads as something else than text (a date, 90 for 1:30, a bool,
# null, infinity, octal and hex), some of which it then cannot make (a 13th month, a
# number past Python's 4300 digits).
YAML_TOKENS = ["2024-13-01", "2024-02-30", "2024-01-01", "1:30", "0x1F", "0o17", "017", "1e3",
               "~", "yes", "no", "on", "off", ".inf", "-.nan", "9" * 5000, "!!binary x",
               "&a 1", "*a", "[", "{", "|", ">-", "'", '"', "@x", "`x", "%x"]  # fmt: skip


@st.composite
def spec_texts(draw) -> bytes:
    """A mutated spec as YAML, sometimes with a value written raw (a token YAML reads as
    another type), a key written twice or bytes altered."""
    text = yaml.safe_dump(draw(mutated_specs()), sort_keys=False, allow_unicode=True)
    lines = text.splitlines(keepends=True)
    valued = [i for i, line in enumerate(lines) if ": " in line]
    if valued and draw(st.booleans()):  # a value written as a raw YAML token
        i = draw(st.sampled_from(valued))
        token = draw(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=12)))
        lines[i] = lines[i].split(": ", 1)[0] + f": {token}\n"
    if draw(st.booleans()) and lines:  # a line written twice: a duplicate key
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
    raw = "".join(lines).encode("utf-8")
    if draw(st.integers(0, 4)) == 0:  # bytes that may not be UTF-8
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:]
    return raw


def _one_sentence(problem: str) -> bool:
    return bool(problem) and "\n" not in problem and problem.rstrip()[-1] in ".?"


@FAST
@given(raw=spec_texts())
@example(raw=b"name: a\nname: b\nhosts: []\n")
@example(raw=b"hosts:\n- {name: s1, address: 3232249858}\n")
@example(raw=b"\xff\xfe")
@example(raw=b"name: 2024-13-01\nhosts: []\n")
@example(raw=b"hosts: [{demo: " + b"9" * 5000 + b"}]\n")
def test_load_spec_accepts_or_names_each_problem_in_one_sentence(raw):
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "lab.yaml"
        file.write_bytes(raw)
        try:
            spec, warnings = load_spec(file)
        except SpecError as exc:
            assert exc.problems and all(map(_one_sentence, exc.problems)), exc.problems
            return
        assert all(map(_one_sentence, warnings)), warnings
        # What the spec accepts, everything derived from it takes.
        instances = spec.instances()
        assert all(1024 <= i.port <= 65535 for i in instances)
        vagrant.vagrantfile_data(spec, "x86_64")


VERBS_NEEDING_A_LAB = ["verify", "status", "watch", "token", "scale", "fail", "recover", "apply",
                       "restart-lb"]  # fmt: skip
options = st.sampled_from(["--wait", "--interval", "--count", "--json", "--provider",
                           "--bundle", "-h"])  # fmt: skip
argument = st.one_of(odd_text.filter(lambda a: "\x00" not in a), options,
                     st.floats().map(repr), st.integers().map(str))  # fmt: skip


def run_cli(args: list[str], state: dict | None):
    """labctl in-process on the valid spec, its state (None: not up) in a folder of its own;
    (exit status, output, contact or None, whether anything was written)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "lab.yaml").write_text(yaml.safe_dump(VALID))
        if state is not None:
            (root / ".lab" / LAB).mkdir(parents=True)
            (root / ".lab" / LAB / "state.json").write_text(json.dumps(state))
        before, outside = snapshot(root), _outside()
        saved_root, saved_env = paths.PROJECT_ROOT, os.environ.get(SPEC_ENV)
        paths.PROJECT_ROOT = root
        try:
            with deadline(ANSWER_WITHIN):
                result = invoke(app, ["--spec", str(root / "lab.yaml"), *args])
        finally:
            paths.PROJECT_ROOT = saved_root
            if saved_env is None:
                os.environ.pop(SPEC_ENV, None)
            else:
                os.environ[SPEC_ENV] = saved_env
        contact = result.exception if isinstance(result.exception, Contact) else None
        if result.exception is not None and contact is None:
            assert isinstance(result.exception, SystemExit), repr(result.exception)
        written = snapshot(root) != before or _outside() != outside
        return result.exit_code, result.output, contact, written


def _outside() -> list[str]:
    """What the real checkout keeps of its labs: none of these runs may touch it."""
    return sorted(p.name for p in labs_dir().glob("*")) if labs_dir().exists() else []


@FAST
@given(verb=st.sampled_from(VERBS_NEEDING_A_LAB), args=st.lists(argument, max_size=3))
@example(verb="scale", args=["zhibo_service=99999999999999999999"])
@example(verb="watch", args=["--interval", "-1"])
@example(verb="fail", args=["[/x]"])
def test_a_verb_on_a_lab_that_is_not_up_answers_locally(verb, args):
    code, out, contact, written = run_cli([verb, *args], state=None)
    assert contact is None, f"{verb} {args} reached outside: {contact}\n{out}"
    assert code in (0, 2), out
    assert not written, out
    assert code == 0 or one_sentence(out), out


@FAST
@given(assignment=st.one_of(
    odd_text,
    st.builds("{}={}".format, st.sampled_from(["zhibo_service", "nosuch", ""]),
              st.one_of(odd_text, st.integers().map(str),
                        st.integers(10**6, 10**60).map(str))),
))  # fmt: skip
def test_scale_on_a_lab_that_is_up_refuses_or_goes_ahead_at_once(assignment):
    """A count is checked before any work that grows with it: refused in one sentence, or
    (a count that fits) on its way to the hosts, never a long silence."""
    code, out, contact, written = run_cli(["scale", assignment], state=UP_STATE)
    service, _, count = assignment.partition("=")
    if contact is not None:  # taken: only a count of ASCII digits whose ports exist
        assert service == "zhibo_service" and count.isascii() and count.isdigit(), assignment
        assert int(count) <= (65535 - 8080 + 1) * 4, assignment
    else:
        assert code == 2 and not written and one_sentence(out), out


@settings(max_examples=4, deadline=None, database=None)
@given(verb=st.sampled_from(VERBS_NEEDING_A_LAB), arg=odd_text.filter(
    lambda a: "\x00" not in a and not a.startswith("-")))  # fmt: skip
def test_a_real_labctl_process_on_a_lab_that_is_not_up(verb, arg):
    """The same through a real process: what a user runs (the guard ends it on contact)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lab.yaml").write_text(yaml.safe_dump(VALID))
        env = os.environ | {"HOME": tmp, "XDG_CACHE_HOME": f"{tmp}/.cache", "COLUMNS": "200"}
        takes_one = ("fail", "recover", "token", "scale", "restart-lb")
        args = [verb] + ([arg] if verb in takes_one else [])
        done = subprocess.run(
            [sys.executable, str(SANDBOX), tmp, "--", "--spec", f"{tmp}/lab.yaml", *args],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        out = done.stdout + done.stderr
        assert done.returncode != CONTACT_EXIT and CONTACT_MARK not in out, out
        assert done.returncode in (0, 2) and "Traceback" not in out, out
        assert not (Path(tmp) / ".lab").exists(), out


def test_the_generated_specs_reach_every_key():
    """The mutations can reach every key of the spec, the nested ones included."""
    keys = {path[-1] for path in SPEC_PATHS if isinstance(path[-1], str)}
    assert {"deregister_critical_after", "registry_mirrors", "ssh", "instances",
            "subnet", "cpus"} <= keys  # fmt: skip
