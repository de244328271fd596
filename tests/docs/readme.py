"""The README as data: its command blocks, by position and by section."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def text() -> str:
    """The README."""
    return README.read_text(encoding="utf-8")


def command_blocks(markdown: str | None = None) -> list[str]:
    """The ```bash blocks, in order."""
    return [body for lang, body in _FENCE.findall(markdown or text()) if lang == "bash"]


def section(title: str, markdown: str | None = None) -> str:
    """The text of the `## title` section, up to the next section of that level or above."""
    doc = markdown or text()
    start = re.search(rf"^## {re.escape(title)}\n", doc, re.M)
    assert start is not None, f"README has no section '## {title}'"
    end = re.search(r"^#{1,2} ", doc[start.end() :], re.M)
    return doc[start.end() : start.end() + end.start()] if end else doc[start.end() :]


def section_block(title: str, containing: str) -> str:
    """The one ```bash block of section `title` that contains `containing`."""
    blocks = [b for b in command_blocks(section(title)) if containing in b]
    assert len(blocks) == 1, f"expected one bash block with {containing!r} in '## {title}'"
    return blocks[0]
