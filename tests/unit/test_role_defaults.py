"""docs/roles.md's defaults tables are each role's DEFAULTS and their comments, so they
cannot drift from the code: a key added, renamed, moved or given another default or
comment in a role fails here until `python -m tests.support.role_defaults` is run."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

from tests.support import role_defaults
from tests.support.role_defaults import BEGIN, DOC, END, markdown, problems, rows


def test_every_role_with_defaults_has_its_table_and_each_table_is_its_defaults():
    found = problems(DOC.read_text())
    assert found == [], f"{found}; run `{role_defaults.COMMAND}`"


def test_every_key_of_every_role_is_in_a_row_with_its_default():
    """The tables hold every key once, with the value the role holds (not only the text
    the generator made: what a reader sees)."""
    for path in role_defaults.role_files():
        module = importlib.import_module(f"roles.{path.stem}")
        table = rows(path, module.DEFAULTS)
        keys = [k for row in table for k in row.keys]
        assert keys == list(module.DEFAULTS), path.name
        assert all(row.meaning for row in table), path.name
        section = DOC.read_text().split(BEGIN.format(path=f"roles/{path.name}"), 1)[1]
        section = section.split(END, 1)[0]
        for key, value in module.DEFAULTS.items():
            assert f"`{key}`" in section and f"`{value!r}`" in section, (path.name, key)


ROLE = '''
DEFAULTS = {
    # The first key's meaning.
    "demo_one": "a",
    "demo_two": 2,
    # Not about demo_three: a blank line ends a comment block.

    # The third key's meaning, with a | in it.
    "demo_three": None,
}
'''


def test_comments_become_meanings_and_a_key_without_one_shares_the_row_above(tmp_path: Path):
    role = tmp_path / "demo.py"
    role.write_text(textwrap.dedent(ROLE))
    values = {"demo_one": "a", "demo_two": 2, "demo_three": None}
    table = rows(role, values)
    assert [(r.keys, r.meaning) for r in table] == [
        (["demo_one", "demo_two"], "The first key's meaning."),
        (["demo_three"], "The third key's meaning, with a | in it."),
    ]
    assert markdown(table).splitlines()[2:] == [
        "| `demo_one`, `demo_two` | `'a'`, `2` | The first key's meaning. |",
        r"| `demo_three` | `None` | The third key's meaning, with a \| in it. |",
    ]


def test_a_drifted_table_is_named():
    """A default changed in the page, a table missing and a table of a file without
    DEFAULTS are each one sentence."""
    doc = DOC.read_text()
    changed = doc.replace("| `consul_datacenter` | `'dc1'` |", "| `consul_datacenter` | `'dc2'` |")
    assert changed != doc
    assert problems(changed) == ["docs/roles.md's table of roles/consul.py is not what its "
                                 "DEFAULTS say"]  # fmt: skip
    start = doc.index(BEGIN.format(path="roles/lb.py"))
    without_lb = doc[:start] + doc[doc.index(END, start) + len(END):]
    assert problems(without_lb) == [
        "roles/lb.py has DEFAULTS but docs/roles.md has no table of them"
    ]
    extra = doc + "\n" + BEGIN.format(path="roles/facts.py") + "\n" + END + "\n"
    assert problems(extra) == [
        "docs/roles.md has a table of roles/facts.py, which has no DEFAULTS"
    ]
