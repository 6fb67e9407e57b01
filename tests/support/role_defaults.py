"""The role-defaults tables of docs/roles.md, made from each role's `DEFAULTS` and the
comments above its keys, so that a key is documented once, where it is defined (as
geerlingguy's roles keep `defaults/main.yml`), and the page cannot drift from the code.

    .venv/bin/python -m tests.support.role_defaults          # rewrite the tables in place
    .venv/bin/python -m tests.support.role_defaults --check  # exit 1 naming what differs

A key's meaning is the comment block directly above it (a blank line ends the block); a key
with no comment of its own shares the row of the key before it (`docker_log_max_size`,
`docker_log_max_file`: one comment for both). The default is the value the imported role
holds, so a default computed from another role's shows as it is. Each table sits between
two markers naming its role file; tests/unit/test_role_defaults.py fails when a table is
not what this module makes, or when a role with `DEFAULTS` has no table.

A docs tool, not part of the product: it lives with the tests that hold it.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import PROJECT_ROOT

ROLES = PROJECT_ROOT / "roles"
DOC = PROJECT_ROOT / "docs" / "roles.md"
COMMAND = "python -m tests.support.role_defaults"
BEGIN = "<!-- defaults of {path}: made by `" + COMMAND + "` from its DEFAULTS; edit them there -->"
END = "<!-- end of defaults -->"
BLOCK = re.compile(
    re.escape(BEGIN).replace(r"\{path\}", r"(?P<path>\S+)") + r"\n(?P<table>.*?)" + re.escape(END),
    re.DOTALL,
)


@dataclass
class Row:
    keys: list[str] = field(default_factory=list)
    values: list[object] = field(default_factory=list)
    meaning: str = ""


def defaults_node(tree: ast.Module) -> ast.Dict | None:
    """The dict literal of the module-level `DEFAULTS = {...}`, if the module has one."""
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "DEFAULTS" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return node.value
    return None


def comment_above(lines: list[str], line: int) -> str:
    """The comment block directly above 1-based `line`, as one sentence-run of text."""
    block: list[str] = []
    index = line - 2
    while index >= 0 and lines[index].strip().startswith("#"):
        block.insert(0, lines[index].strip().lstrip("#").strip())
        index -= 1
    return " ".join(block)


def rows(path: Path, values: dict) -> list[Row]:
    """The table rows of one role file: its DEFAULTS keys, in their order, with their
    comments; `values` is the role's DEFAULTS as imported."""
    source = path.read_text()
    node = defaults_node(ast.parse(source))
    if node is None:
        return []
    lines = source.splitlines()
    table: list[Row] = []
    if len(node.keys) != len(values):
        raise ValueError(f"{path.name}: DEFAULTS as written and as imported differ")
    # A key may be a name (a fact of roles/contract.py): its text is the imported one.
    for key, name in zip(node.keys, values, strict=True):
        if key is None or (isinstance(key, ast.Constant) and key.value != name):
            raise ValueError(f"{path.name}: DEFAULTS as written and as imported differ")
        meaning = comment_above(lines, key.lineno)
        if meaning or not table:
            if not meaning:
                raise ValueError(f"{path.name}: {name} has no comment above it")
            table.append(Row(meaning=meaning))
        table[-1].keys.append(name)
        table[-1].values.append(values[name])
    return table


def markdown(table: list[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", r"\|")

    out = ["| data key | default | meaning |", "|---|---|---|"]
    for row in table:
        keys = ", ".join(f"`{k}`" for k in row.keys)
        values = ", ".join(f"`{v!r}`" for v in row.values)
        out.append(f"| {cell(keys)} | {cell(values)} | {cell(row.meaning)} |")
    return "\n".join(out) + "\n"


def role_files() -> list[Path]:
    """Every role module that has DEFAULTS, as paths relative to the project."""
    found = []
    for path in sorted(ROLES.glob("*.py")):
        if defaults_node(ast.parse(path.read_text())) is not None:
            found.append(path)
    return found


def table_for(path: Path) -> str:
    module = importlib.import_module(f"roles.{path.stem}")
    return markdown(rows(path, module.DEFAULTS))


def relative(path: Path) -> str:
    return path.relative_to(PROJECT_ROOT).as_posix()


def rendered(doc: str) -> str:
    """The page with every marked table made afresh."""

    def replace(match: re.Match) -> str:
        path = PROJECT_ROOT / match["path"]
        return BEGIN.format(path=match["path"]) + "\n" + table_for(path) + END

    return BLOCK.sub(replace, doc)


def problems(doc: str) -> list[str]:
    """What makes the page's tables differ from the roles: one sentence each."""
    found = []
    marked = {m["path"]: m["table"] for m in BLOCK.finditer(doc)}
    for path in role_files():
        name = relative(path)
        if name not in marked:
            found.append(f"{name} has DEFAULTS but docs/roles.md has no table of them")
        elif marked[name] != table_for(path):
            found.append(f"docs/roles.md's table of {name} is not what its DEFAULTS say")
    for name in sorted(set(marked) - {relative(p) for p in role_files()}):
        found.append(f"docs/roles.md has a table of {name}, which has no DEFAULTS")
    return found


def main(argv: list[str]) -> int:
    doc = DOC.read_text()
    if argv == ["--check"]:
        found = problems(doc)
        for problem in found:
            print(f"{problem}; run `{COMMAND}`.", file=sys.stderr)
        return 1 if found else 0
    DOC.write_text(rendered(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
