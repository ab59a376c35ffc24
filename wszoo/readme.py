"""Regenerates the README's model table from the zoo table: ``python -m wszoo.readme``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .cli import model_table
from .zoo import ENTRIES

START, END = "<!-- MODEL-TABLE:START", "<!-- MODEL-TABLE:END -->"


def render(readme_text: str) -> str:
    """``readme_text`` with the table between the markers replaced by the current one."""
    pattern = re.compile(re.escape(START) + r"(.*?-->\n)(.*?)" + re.escape(END), re.S)
    if not pattern.search(readme_text):
        raise ValueError("README.md has no MODEL-TABLE markers")
    return pattern.sub(lambda m: START + m.group(1) + model_table(ENTRIES) + "\n" + END, readme_text)


def main() -> int:
    path = Path(__file__).resolve().parent.parent / "README.md"
    path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
