"""The documentation holds together: every relative link in README.md and docs/**/*.md names a file that exists, every
``#anchor`` names a heading of its target (GitHub's slugs), and README stays a short page."""
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from conftest import REPO

README_MAX_LINES = 350
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the text may hold one level of brackets (an image inside a link).
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
                         r"(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def heading_text(raw: str) -> str:
    """A heading's text as GitHub renders it: code spans and links reduced to their text, emphasis marks dropped."""
    text = INLINE_CODE.sub(lambda match: match.group(2).strip(), raw)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("**", "").replace("*", "")


def slug(text: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than '-' and '_' removed, spaces to '-'."""
    kept = "".join(char for char in text.lower() if char.isalnum() or char in "-_ ")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of ``path``'s headings, duplicates suffixed -1, -2, ... as GitHub does."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(heading_text(match.group(2)))
        count = counts.get(base, 0)
        counts[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link outside code blocks and code spans."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            found.append((number, definition.group(1)))
            continue
        line = INLINE_CODE.sub("", line)
        found += [(number, match.group(1).strip("<>")) for match in INLINE_LINK.finditer(line)]
    return found


def test_slugs_follow_github():
    assert slug(heading_text("Layout of the code")) == "layout-of-the-code"
    assert slug(heading_text("bf16 on the CPU (`--amp bf16`)")) == "bf16-on-the-cpu---amp-bf16"
    assert slug(heading_text("SSTNet — moving infrared dim-small target detection")) == \
        "sstnet--moving-infrared-dim-small-target-detection"
    assert slug(heading_text("What `make_synthetic.py` writes")) == "what-make_syntheticpy-writes"


def test_the_link_parser_sees_what_it_should(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A\n## A\n[x](a.md) ![p](b.png \"t\") `[no](c.md)` [w](https://e.org) [y](#a-1)\n"
                    "```\n[no](d.md)\n```\n[ref]: e.md#f\n", encoding="utf-8")
    assert anchors(page) == {"a", "a-1"}
    assert [target for _, target in links(page)] == ["a.md", "b.png", "https://e.org", "#a-1", "e.md#f"]


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for number, target in links(page):
        if not target or EXTERNAL.match(target):
            continue
        location, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(location)).resolve() if location else page
        where = f"{page.relative_to(REPO)}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where}: no such file")
        elif anchor and (resolved.suffix != ".md" or resolved.is_dir()):
            broken.append(f"{where}: an anchor into a file that is not markdown")
        elif anchor and unquote(anchor) not in anchors(resolved):
            broken.append(f"{where}: no heading with that anchor in {resolved.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


def test_docs_folder_has_pages():
    assert len(PAGES) > 2, PAGES


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}"
