"""docs/spec.md's table of what is refused names the cases of tests/support/bad_inputs.py
that try each row: every case is in the table, and every case the table names exists."""

from __future__ import annotations

import re

from tests.conftest import PROJECT_ROOT
from tests.support.bad_inputs import CASES

DOC = PROJECT_ROOT / "docs" / "spec.md"


def table_cases() -> list[str]:
    """The cases named in the third column of the table under `## What is refused`."""
    section = DOC.read_text().split("\n## What is refused\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [case for row in rows for case in re.findall(r"`([a-z0-9-]+)`", row.split("|")[3])]


def test_every_case_is_in_the_docs_table_and_every_named_case_exists():
    named = table_cases()
    ids = [case.id for case in CASES]
    assert sorted(set(named) - set(ids)) == []
    # The overlap case exists on machines with a route (tests/support/bad_inputs.py).
    assert sorted(set(ids) - set(named)) == []
    assert len(named) == len(set(named)), "a case is named in two rows"
