"""The user documentation: a README a user finishes, and links that lead somewhere.

README.md is for users (at most 300 lines); measurements, the node reference, every option and the
development map live in docs/*.md. Every relative link of those pages must name a file of the
repository, and a link to a heading of a Markdown page (``page.md#heading``) a heading it has.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings (lower case, punctuation dropped, spaces to '-')."""
    anchors = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6}\s+(.*)", line)
        if m:
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_anchor_rule_matches_github():
    page = REPO / "docs" / "cli.md"
    assert {"command-line", "many-files-many-gpus-or-machines---ray"} <= _anchors(page)


def test_readme_is_at_most_300_lines():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= 300, f"README.md has {n} lines: move details to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_points_to_an_existing_file(page):
    links = _relative_links(page)
    assert links or page.name != "README.md"  # the README links to its docs
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(link)
    assert not broken, f"{page.name}: broken links {broken}"


def test_readme_links_every_docs_page():
    linked = {(REPO / l.partition("#")[0]).resolve() for l in _relative_links(REPO / "README.md")}
    pages = {p.resolve() for p in (REPO / "docs").glob("*.md")}
    assert pages <= linked, sorted(p.name for p in pages - linked)
