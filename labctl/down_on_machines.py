"""`labctl down` on existing machines: remove what the lab put there, leave the machines.

The removal is a pyinfra deploy (roles/teardown.py, routed by deploy.py on the data flag
`lab_teardown`), run on every machine that answers; a machine that does not is named,
and the others are cleaned all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from labctl import machines
from labctl.connections import connection_data
from labctl.converge import converge
from labctl.spec import LabSpec
from roles.contract import PURGE_ENGINE, TEARDOWN

Report = Callable[[str], None]


class PartialTeardown(Exception):
    """Some machines could not be reached (or hold another lab); the others were cleaned."""


def remove_from_machines(
    spec: LabSpec, log: Path, report: Report, purge_engine: bool = False
) -> list[str]:
    """Run the teardown deploy on every reachable machine; return what it removed."""
    connections = connection_data(spec, "ssh")
    report(f"reaching {len(connections)} machines")
    reachable, problems = machines.reach(connections, spec.name)
    removed = []
    if reachable:
        flags = ["--data", f"{TEARDOWN}=true", "--data", f"{PURGE_ENGINE}={purge_engine}"]
        for name in sorted(set(connections) - set(reachable)):
            flags += ["--exclude", name]
        result = converge(spec, log, on_line=report, extra_args=tuple(flags))
        for operation, hosts in result.changed:
            # "Remove the lab | Remove the lab's volumes" -> "the lab's volumes"
            what = operation.rsplit(" | ", 1)[-1].removeprefix("Remove ")
            removed.append(f"{what} on {', '.join(hosts)}")
    if problems:
        names = ", ".join(sorted(reachable))
        cleaned = {0: "no machine was", 1: f"{names} was"}.get(len(reachable), f"{names} were")
        fixed = "that is" if len(problems) == 1 else "those are"
        raise PartialTeardown(
            f"not cleaned: {'; '.join(problems)}; {cleaned} cleaned: run `labctl down` again "
            f"once {fixed} fixed."
        )
    return removed
