"""docs/claims.md stays honest: every test it names exists, every claim it quotes is in
the README or docs/ word for word, and every sentence there that reads like a claim about
faults, security or idempotence is accounted for (a row, a known gap, or not a claim)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

CLAIMS = PROJECT_ROOT / "docs" / "claims.md"
# A test named in the table: a Python test function, or a Go test of a stand-in.
TEST_REF = re.compile(r"(tests/[\w/.-]+\.(?:py|go))::(\w+)")
# Words that make a sentence a claim about faults, security or idempotence.
CLAIM_WORDS = re.compile(
    r"no failed|no client sees an error|refuse|one sentence|no changes|changes? nothing"
    r"|cannot join|deny by default|before any host|before anything|first second"
    r"|restart policy|quorum|safe twice|leav\w* nothing|leaving no|\bnever\b|0600|0700"
    r"|repaired|then stopped|only then|one at a time|no token or key|exits 2",
    re.IGNORECASE,
)


def flat(text: str) -> str:
    return " ".join(text.split())


def table(section: str) -> list[list[str]]:
    """The rows of the first table under `## <section>` in claims.md, as cells."""
    text = CLAIMS.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[2:]]


def docs_text(with_code: bool) -> str:
    """README.md and docs/*.md but this page, whitespace flattened; without code blocks
    for the sentence scan (commands are not sentences)."""
    pages = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
    text = "\n".join(p.read_text() for p in pages if p != CLAIMS)
    return flat(text if with_code else re.sub(r"```.*?```", " ", text, flags=re.DOTALL))


def fragments(section: str) -> list[str]:
    return [flat(row[0].replace("\\|", "|")) for row in table(section)]


def claim_sentences() -> list[str]:
    """The prose sentences (and table cells) of the docs that use a claim's words."""
    pieces = re.split(r"(?<=[.;!?])\s+(?=[A-Z`*(\"])|\s\|\s|\s-\s", docs_text(with_code=False))
    return [p for p in pieces if CLAIM_WORDS.search(p)]


def test_every_row_names_a_test_that_exists():
    rows = table("The table")
    assert len(rows) >= 40, "the claims table lost its rows"
    missing = []
    for claim, tests, _ in rows:
        refs = TEST_REF.findall(tests)
        assert refs, f"no test named for {claim!r}"
        missing += [f"{path}::{name}" for path, name in refs if not defined(path, name)]
    assert missing == [], f"claims.md names tests that do not exist: {missing}"


def defined(path: str, name: str) -> bool:
    file = PROJECT_ROOT / path
    if not file.is_file():
        return False
    if file.suffix == ".go":
        return re.search(rf"^func {name}\(t \*testing\.T\)", file.read_text(), re.M) is not None
    tree = ast.parse(file.read_text())
    nodes = [*tree.body, *(n for c in tree.body if isinstance(c, ast.ClassDef) for n in c.body)]
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in nodes)


@pytest.mark.parametrize("section", ["The table", "Known gaps", "Not claims"])
def test_every_quoted_claim_is_in_the_docs_word_for_word(section):
    docs = docs_text(with_code=True)
    absent = [f for f in fragments(section) if f not in docs]
    assert absent == [], f"claims.md quotes what README.md and docs/ no longer say: {absent}"


def test_every_claim_like_sentence_is_accounted_for():
    known = [f for s in ("The table", "Known gaps", "Not claims") for f in fragments(s)]
    unaccounted = [s for s in claim_sentences() if not any(f in s or s in f for f in known)]
    assert unaccounted == [], (
        "sentences that read like claims about faults, security or idempotence but have no "
        f"row in docs/claims.md (add a row with its test, a known gap, or a not-claim): "
        f"{unaccounted}"
    )


def test_the_checks_above_can_fail(tmp_path, monkeypatch):
    """A test that does not exist and a sentence nobody accounted for are caught."""
    assert not defined("tests/unit/test_claims.py", "test_that_does_not_exist")
    assert defined("tests/unit/test_claims.py", "test_every_row_names_a_test_that_exists")
    readme = tmp_path / "README.md"
    readme.write_text("A new verb never loses a request.\n")
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "PROJECT_ROOT", Path(tmp_path))
    assert claim_sentences() == ["A new verb never loses a request."]
