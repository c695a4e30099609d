"""Every relative link in README.md, docs/*.md and model/README.md leads somewhere.

A link's file must exist inside the repository, and a `#anchor` must name a heading of the
page it points to (GitHub's heading ids). Links inside code are not links; web addresses
are not checked (no network in tests).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.server import REPO_ROOT

README = REPO_ROOT / "README.md"
PAGES = sorted({README, REPO_ROOT / "model" / "README.md", *(REPO_ROOT / "docs").glob("*.md")})
#: The chapters the README's long sections moved to.
CHAPTERS = ("api", "deploy", "load-testing", "reliability", "performance")

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"(`+).+?\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def links(text: str) -> list[str]:
    """The targets of the inline links and images in markdown `text`, outside code."""
    text = _CODE.sub("", _FENCE.sub("", text))
    return _LINK.findall(text)


def anchors(text: str) -> set[str]:
    """The ids GitHub gives the headings of a markdown page."""
    seen: dict[str, int] = {}
    ids = set()
    for line in _FENCE.sub("", text).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        title = re.sub(r"[`*_]|<[^>]+>", "", match.group(1))
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link keeps its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def broken_links(page: Path, root: Path = REPO_ROOT) -> list[str]:
    """What is wrong with the relative links of `page`, one line each."""
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if _SCHEME.match(target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{target}: outside the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    return problems


def test_the_readme_links_every_chapter():
    readme = {target.partition("#")[0] for target in links(README.read_text())}
    chapters = {f"docs/{page.name}" for page in (REPO_ROOT / "docs").glob("*.md")}
    assert {f"docs/{name}.md" for name in CHAPTERS} <= chapters
    assert chapters | {"model/README.md"} <= readme, "a chapter nobody can find from the README"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Real heading, with `code`\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Page\n[ok](docs/other.md#real-heading-with-code) [self](#page)\n"
        "[gone](docs/missing.md) [bad anchor](docs/other.md#nope) [up](../elsewhere.md)\n"
        "`[in code](docs/missing.md)` [web](https://example.org/x)\n"
        "```\n[in a block](docs/missing.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "docs/missing.md: no such file",
        "docs/other.md#nope: no heading #nope in other.md",
        "../elsewhere.md: outside the repository",
    ]
