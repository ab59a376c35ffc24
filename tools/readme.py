"""Regenerates the README's generated sections: the model table and the package layout.

    python tools/readme.py --check   # exit 1 when README.md is stale (CI, tests)
    python tools/readme.py --write   # rewrite README.md in place

The model table comes from the zoo table (:data:`wszoo.zoo.ENTRIES`); the layout lists every
module of the ``wszoo`` package with the first line of its docstring, so it cannot drift from
the tree.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from wszoo.registry import model_table  # noqa: E402
from wszoo.zoo import ENTRIES  # noqa: E402

TABLE = "MODEL-TABLE"
LAYOUT = "LAYOUT"

# Folders of the repository outside the package, in the order shown.
FOLDERS = {
    "hubconf.py": "torch.hub entry points (re-exports of wszoo.builders)",
    "tools/": "developer tools: README generator, import-graph check, batch conversion",
    "parity/": "opt-in comparison against real MMDetection",
    "benchmarks/": "ratio benchmarks",
    "tests/": "offline tests, mirroring the package (a loopback HTTP server stands in for the internet)",
}


def _docstring_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""


def layout(root: Path = REPO) -> str:
    """The layout block: one line per public module of the package, then the other folders."""
    package = root / "wszoo"
    rows = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part.startswith("_") and part != "__init__.py" for part in rel.parts):
            continue
        shown = f"{rel.parent}/" if path.name == "__init__.py" else str(rel)
        rows.append((shown, _docstring_line(path)))
    rows += list(FOLDERS.items())
    width = max(len(name) for name, _ in rows) + 2
    return "```\n" + "\n".join(f"{name:<{width}}{text}".rstrip() for name, text in rows) + "\n```"


def _replace(text: str, marker: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {marker}:START[^\n]*-->\n)(.*?)(<!-- {marker}:END -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no {marker} markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)


def render(readme_text: str) -> str:
    """``readme_text`` with both generated sections replaced by their current contents."""
    text = _replace(readme_text, TABLE, model_table(ENTRIES))
    return _replace(text, LAYOUT, layout())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if README.md differs from what would be generated")
    mode.add_argument("--write", action="store_true", help="rewrite README.md's generated sections in place")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md", help="the README to check or write")
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{args.readme} is stale: run `python tools/readme.py --write`", file=sys.stderr)
            return 1
        print(f"{args.readme} is up to date")
        return 0
    if wanted != current:
        args.readme.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
