"""Every relative link and anchor in README.md and docs/*.md resolves, as GitHub renders them.

Also the links of the template manual a generated project gets
(docs/template-manual.md.jinja includes README.md and rewrites its links).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

# [text](target) and [text]: target, outside code fences and inline code.
INLINE = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks (``` or ~~~)."""
    out, fence = [], ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation but - and _
    removed, each space a hyphen."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, duplicates numbered -1, -2, ... as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return found


def links(text: str) -> list[str]:
    targets = []
    for line in prose(text):
        line = CODE_SPAN.sub("", line)
        targets += INLINE.findall(line) + IMAGE.findall(line)
        ref = REFERENCE.match(line)
        if ref:
            targets.append(ref.group(1))
    return targets


def broken(page: Path, text: str) -> list[str]:
    """The relative links of ``text`` (the content of ``page``) that do not resolve."""
    problems = []
    for target in links(text):
        if EXTERNAL.match(target) or target.startswith("//"):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve()
        if path and not dest.exists():
            problems.append(f"{page.relative_to(ROOT)}: {target}: no file {path}")
            continue
        markdown = not path or dest.suffix == ".md"
        if (
            anchor
            and markdown
            and anchor.lower() not in anchors(dest.read_text() if path else text)
        ):
            problems.append(f"{page.relative_to(ROOT)}: {target}: no heading #{anchor}")
    return problems


def test_slug_follows_github() -> None:
    assert slug("Update from the template") == "update-from-the-template"
    assert slug("The torch model (`model=mlp`)") == "the-torch-model-modelmlp"
    assert slug("Team setup: S3 remote, tracking server, faults") == (
        "team-setup-s3-remote-tracking-server-faults"
    )
    assert slug("A/B: champion and challenger") == "ab-champion-and-challenger"
    assert slug("1. The prediction log") == "1-the-prediction-log"
    assert slug("Scale (`bench/scale.py`)") == "scale-benchscalepy"
    assert slug("snake_case and -dashes-") == "snake_case-and--dashes-"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1", "a-2"}


def test_checker_finds_a_broken_link_and_anchor(tmp_path: Path) -> None:
    page = ROOT / "docs" / "x.md"  # never written: its links resolve against docs/
    text = "[ok](template.md#update-from-the-template) [no](nope.md) [bad](#missing)\n"
    text += "`[code](nope.md)`\n```\n[fenced](nope.md)\n```\n[web](https://example.org)\n"
    assert [p.split(": ", 2)[1] for p in broken(page, text)] == ["nope.md", "#missing"]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    assert broken(page, page.read_text()) == []


def test_generated_manual_links_resolve() -> None:
    """docs/template-manual.md in a generated project: README.md, its links rewritten."""
    source = ROOT / "docs" / "template-manual.md.jinja"
    if not source.exists():
        pytest.skip("not the template repository (a generated project has the rendered manual)")
    jinja = source.read_text()
    rewrite = re.findall(r"regex_replace\('((?:[^'\\]|\\.)*)', '([^']*)'\)", jinja)
    assert len(rewrite) == 2, rewrite
    text = (ROOT / "README.md").read_text()
    for pattern, replacement in rewrite:
        text = re.sub(pattern.replace("\\\\", "\\"), replacement, text)
    assert broken(ROOT / "docs" / "template-manual.md", text) == []
