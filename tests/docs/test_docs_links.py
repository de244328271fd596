"""The README and docs/ stand alone: every link leads to a file (and heading) of the repository,
and nothing points at the project's private specification outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.readme import ROOT

DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)
# Where the specification lived for the project's authors; a user's clone has none of it.
_OUTSIDE = ("../" + "shared/", "shared/" + "spec", "API.md " + "§", "/work/" + "shared")


def _prose(path: Path) -> str:
    return _FENCE.sub("", path.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_prose(path)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def _broken(path: Path) -> list[str]:
    problems = []
    for target in _LINK.findall(_prose(path)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if file_part.startswith("/"):
            problems.append(f"{target}: an absolute path (a reader's clone is elsewhere)")
        elif file_part and (not linked.is_relative_to(ROOT) or not linked.exists()):
            problems.append(f"{target}: no such file in the repository")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no heading #{anchor} in {linked.name}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_links_lead_into_the_repository(doc: Path) -> None:
    assert _broken(doc) == []


def test_the_http_contract_is_in_the_repository() -> None:
    assert (ROOT / "docs" / "API.md").is_file()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/API.md)" in readme


def test_nothing_refers_to_the_specification_outside_the_repository() -> None:
    here = Path(__file__).resolve()
    files = [
        *DOCS,
        *(
            p
            for d in ("src", "tests", "protos", "bench", "scripts", "alembic")
            for p in (ROOT / d).rglob("*")
        ),
        ROOT / "Dockerfile",
        ROOT / "pyproject.toml",
    ]
    found = []
    for path in files:
        if not path.is_file() or path == here or path.suffix in (".png", ".pyc", ".so"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found.extend(
            f"{path.relative_to(ROOT)}: {marker!r}" for marker in _OUTSIDE if marker in text
        )
    assert found == []


def test_the_link_checker_finds_what_is_broken(tmp_path: Path) -> None:
    page = ROOT / "docs" / "API.md"
    # A sanity check of the checker itself, on text that is broken on purpose.
    broken = tmp_path / "page.md"
    broken.write_text(
        "# Title\n\n[spec](../shared/spec/API.md) [ok](#title) [gone](#nowhere) "
        f"[file]({page}) [web](https://example.com)\n\n```bash\n[not](a-link)\n```\n"
    )
    problems = [p.split(":")[0] for p in _broken(broken)]
    assert problems == ["../shared/spec/API.md", "#nowhere", str(page)]
