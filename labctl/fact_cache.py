"""Facts asked once per host in a converge, until that host changes.

pyinfra 3 asks the host again each time an operation reads a fact: one command over
SSH (through sudo on existing machines) per read. The lab's operations read several
facts more than once on a host in one run: the packages installed (three package
operations), the engine's service state (two), the images present (delivery, then the
checks after it), a container's state (whether to recreate it, then whether to start
it). While labctl's converge runs (`cached_facts`), a fact read again with the same
arguments on the same host is answered with that host's earlier answer, as long as no
command ran on that host in between: every command an operation runs is a change (pyinfra
runs none for an operation that changes nothing), and it forgets all of the host's
answers. So a converge that changes nothing asks each such fact once per host, and one
that changes something asks again after each change, as pyinfra alone does.

Only facts about the host's own state are kept: pyinfra's own (packages, files,
services) and the roles' facts that declare it (`host_state_only = True`: only commands
on that host change them). Facts another host or time can change (Consul's view of the
services, the LB's health, which LB holds a shared address) are always asked.

And they are asked together: each converge records which such facts every host was
asked (`FactCounts.asked_facts`, kept in the lab's state), and the next one asks a host
all of them in one command right after connecting (`prefetch`), each fact's own command
with its exit status, its output read by the fact's own `process`, so that a converge
that changes nothing reads its facts in one round trip per host instead of one per
fact. A fact whose command failed, or that the last converge did not ask, is asked
when read, as pyinfra asks it.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# A fact read, as recorded between runs: ["module:Class", [args], {kwargs}].
RecordedFact = list


@dataclass
class FactCounts:
    asked: int = 0  # facts read by the operations
    reused: int = 0  # of those, answered from the host's earlier answer (or the prefetch)
    prefetched: int = 0  # answers the prefetch gave
    answers: dict[Any, dict[tuple, Any]] = field(default_factory=dict)  # host -> key -> value
    # Per host name, the kept facts its operations asked the host, to prefetch next time.
    asked_facts: dict[str, list[RecordedFact]] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"--> Facts: {self.asked} read, {self.reused} answered from this run's earlier "
            f"reads ({self.prefetched} read in advance, one command per host)"
        )

    def record(self, host_name: str, fact: type, args: tuple, kwargs: dict) -> None:
        entry = [f"{fact.__module__}:{fact.__qualname__}", list(args), kwargs]
        try:
            json.dumps(entry)
        except TypeError:  # not something the lab's state can keep
            return
        recorded = self.asked_facts.setdefault(host_name, [])
        if entry not in recorded:
            recorded.append(entry)


def kept(fact: type) -> bool:
    """Whether an answer of `fact` stays true until a command runs on its host."""
    return fact.__module__.startswith("pyinfra.facts.") or getattr(fact, "host_state_only", False)


def _key(fact: type, args: tuple, kwargs: dict) -> tuple | None:
    try:
        key = (fact, args, tuple(sorted(kwargs.items())))
        hash(key)
    except TypeError:  # an argument that cannot be compared (a list): asked every time
        return None
    return key


@contextlib.contextmanager
def cached_facts() -> Iterator[FactCounts]:
    """Within: pyinfra's Host.get_fact answers again from the host's earlier answers;
    every command pyinfra executes on a host forgets them (see the module's docstring)."""
    from pyinfra.api import command as commands
    from pyinfra.api.host import Host

    counts = FactCounts()
    get_fact = Host.get_fact

    def cached_get_fact(host, fact, *args, **kwargs):
        counts.asked += 1
        key = _key(fact, args, kwargs) if isinstance(fact, type) and kept(fact) else None
        answers = counts.answers.setdefault(host, {})
        if key is not None:
            counts.record(host.name, fact, args, kwargs)
        if key is not None and key in answers:
            counts.reused += 1
            return copy.deepcopy(answers[key])  # an operation may change what it reads
        value = get_fact(host, fact, *args, **kwargs)
        if key is not None:
            answers[key] = copy.deepcopy(value)
        return value

    executors = [
        cls
        for cls in vars(commands).values()
        if isinstance(cls, type) and issubclass(cls, commands.PyinfraCommand)
        and "execute" in vars(cls)
    ]  # fmt: skip
    originals = {cls: cls.execute for cls in executors}

    def forgetting(execute):
        def execute_and_forget(self, state, host, *args, **kwargs):
            counts.answers.pop(host, None)
            return execute(self, state, host, *args, **kwargs)

        return execute_and_forget

    Host.get_fact = cached_get_fact
    for cls, execute in originals.items():
        cls.execute = forgetting(execute)
    try:
        yield counts
    finally:
        Host.get_fact = get_fact
        for cls, execute in originals.items():
            cls.execute = execute


def _fact_class(path: str) -> type | None:
    module, _, name = path.partition(":")
    try:
        fact = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):  # a fact the code no longer has
        return None
    return fact if isinstance(fact, type) and kept(fact) else None


def prefetch(state, counts: FactCounts, recorded: dict[str, list[RecordedFact]]) -> None:
    """Ask every connected host, in one command each (all hosts at once), the facts the
    last converge asked it; their answers serve the reads until a command runs there."""
    import gevent

    hosts = [h for h in state.inventory.iter_activated_hosts() if recorded.get(h.name)]
    greenlets = [
        state.pool.spawn(_prefetch_host, state, counts, host, recorded[host.name])
        for host in hosts
    ]
    gevent.joinall(greenlets)
    for greenlet in greenlets:
        greenlet.get()  # an unexpected error stops the run, named, like any other


def _prefetch_host(state, counts: FactCounts, host, recorded: list[RecordedFact]) -> None:
    """One command on `host` running each recorded fact's command in a subshell between
    markers; each fact that exited 0 is answered by its own `process`."""
    from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
    from pyinfra.api.command import StringCommand
    from pyinfra.api.facts import _handle_fact_kwargs, _make_command
    from pyinfra.context import ctx_host

    mark = f"##lab-fact-{secrets.token_hex(4)}"
    facts, parts = [], []
    with ctx_host.use(host):
        for path, args, kwargs in recorded:
            fact = _fact_class(path)
            key = _key(fact, tuple(args), kwargs) if fact else None
            instance = fact() if key is not None else None
            if instance is None or fact.shell_executable or instance.check_preconditions(
                state, host
            ):
                continue
            fact_kwargs, _ = _handle_fact_kwargs(state, host, fact, args, kwargs)
            command = _make_command(instance.command, dict(fact_kwargs))
            needs = _make_command(instance.requires_command, dict(fact_kwargs))
            text = command.get_raw_value() if isinstance(command, StringCommand) else command
            if needs:
                text = f"command -v {needs} >/dev/null 2>&1 && {{ {text}\n}}"
            i = len(facts)
            facts.append((instance, key))
            parts.append(
                f"out=$( {{ {text}\n}} 2>/dev/null ); s=$?; echo '{mark} {i}'; "
                f'[ -z "$out" ] || printf \'%s\\n\' "$out"; echo "{mark} end $s"'
            )
        if not parts:
            return
        global_kwargs, _ = pop_global_arguments(state, host, {})
        connector = {k: v for k, v in global_kwargs.items() if k in CONNECTOR_ARGUMENT_KEYS}
        ok, output = host.run_shell_command(StringCommand("\n".join(parts)), **connector)
    if not ok:
        return  # every fact is asked when read
    answers = counts.answers.setdefault(host, {})
    current, lines = None, []
    for line in output.stdout_lines:
        if line.startswith(f"{mark} end "):
            status = line.rsplit(" ", 1)[-1]
            if current is not None and status == "0":
                instance, key = facts[current]
                try:
                    answers[key] = instance.process(lines) if lines else instance.default()
                    counts.prefetched += 1
                except Exception:  # left to the read, which names it
                    answers.pop(key, None)
            current, lines = None, []
        elif line.startswith(f"{mark} "):
            current, lines = int(line.rsplit(" ", 1)[-1]), []
        elif current is not None:
            lines.append(line)
