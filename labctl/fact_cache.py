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
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FactCounts:
    asked: int = 0  # facts read by the operations
    reused: int = 0  # of those, answered from the host's earlier answer
    answers: dict[Any, dict[tuple, Any]] = field(default_factory=dict)  # host -> key -> value

    def describe(self) -> str:
        return f"--> Facts: {self.asked} read, {self.reused} answered from this run's earlier reads"


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
