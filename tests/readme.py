"""README.md as the tests that run its examples read it: a section, and its `sh` code blocks."""

from __future__ import annotations

from pathlib import Path
import re

README = Path(__file__).resolve().parents[1] / "README.md"


def section(heading: str) -> str:
    """The text under `heading` ("## Examples", "### Drift audit"), up to the next heading of its
    level or above."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    level = len(heading) - len(heading.lstrip("#"))
    end = re.compile(rf"\n#{{1,{level}}} ").search(text, start + 1)
    return text[start : end.start() if end else len(text)]


def sh_lines(heading: str) -> list[str]:
    """The non-blank lines of the section's `sh` code blocks, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", section(heading), re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]
