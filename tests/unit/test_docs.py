"""The README a newcomer reads in five minutes, and the docs/ pages it leads to: every link
to a repository path resolves inside the repository (a clone has nothing beside it), every
anchor names a heading of its page, every link that leaves the repository is a public
https URL, and the README stays short and narrow."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = sorted((PROJECT_ROOT / "docs").glob("*.md"))
PAGES = [README, PROJECT_ROOT / "bench" / "README.md", *DOCS]
README_MAX_LINES = 250
WIDTH = 100

FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target) and ![alt](target); the text may hold a line break, the target none.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans (they hold no links), keeping
    the line count of the fences so that nothing joins across them."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return CODE_SPAN.sub(" ", text)


def links(text: str) -> list[str]:
    return LINK.findall(prose(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped (letters,
    digits, `_` and `-` kept), spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.lower().replace("`", "").replace("*", "")
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of a page's headings, duplicates numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def problems(page: Path, root: Path = PROJECT_ROOT) -> list[str]:
    """What is wrong with the links of one page, one sentence each."""
    found = []
    for target in links(page.read_text()):
        where = f"{page.relative_to(root)}: {target}"
        parts = urlsplit(target)
        if parts.scheme or target.startswith("//"):
            if not public_url(target):
                found.append(f"{where} leaves the repository for a place that is not a public "
                             "https URL")  # fmt: skip
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path)).resolve() if path else page
        if not resolved.is_relative_to(root.resolve()):
            found.append(f"{where} points outside the repository, which a clone does not have")
        elif not resolved.exists():
            found.append(f"{where} names a path that does not exist")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            found.append(f"{where} names an anchor that {resolved.name} has no heading for")
    return found


def public_url(url: str) -> bool:
    """An https URL whose host is a DNS name (not an address, not a local name)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https" or "." not in host or host.endswith((".local", ".internal")):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_link_resolves_inside_the_repository_with_its_anchor(page):
    assert problems(page) == []


def test_the_readme_links_every_docs_page():
    linked = {Path(t.partition("#")[0]).name for t in links(README.read_text())}
    pages = {p.name for p in DOCS}
    assert sorted(pages - linked) == [], "docs pages the README's contents do not list"


def test_the_readme_is_short_and_narrow():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES
    wide = [f"{n}: {len(line)}" for n, line in enumerate(lines, 1) if len(line) > WIDTH]
    assert wide == [], f"README lines wider than {WIDTH} characters"


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_prose_in_the_docs_is_wrapped(page):
    """Prose lines stay within the width; a table row, a code block line or a heading with
    a long name may not (Markdown cannot wrap them)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), page.read_text())
    wide = [
        f"{n}: {line[:40]}..."
        for n, line in enumerate(text.splitlines(), 1)
        if len(line) > WIDTH and not line.lstrip().startswith(("|", "#", "<!--"))
    ]
    assert wide == [], f"lines wider than {WIDTH} characters outside tables and code"


def test_the_checks_can_fail(tmp_path):
    """A link out of the clone, a missing file, a missing anchor and a private URL are each
    caught; a good link and its anchor are not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## The LB's page `x`\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/other.md#the-lbs-page-x) [seed](../shared/reference) [gone](docs/none.md)\n"
        "[anchor](docs/other.md#nowhere) [lab](http://192.168.56.4/) [web](https://pyinfra.com)\n"
        "`[in code](../nowhere)`\n```\n[in a block](../nowhere)\n```\n"
    )
    found = problems(page, root=tmp_path)
    assert [f.split(": ", 1)[1].split(" ", 1)[0] for f in found] == [
        "../shared/reference", "docs/none.md", "docs/other.md#nowhere", "http://192.168.56.4/",
    ]  # fmt: skip
