"""Regenerates the README's generated blocks: the model table and the package layout.

    python -m wszoo.readme --check   # exit 1 when README.md is stale (CI, tests); writes nothing
    python -m wszoo.readme --write   # rewrite README.md's generated blocks in place

Run from the repository root (or pass ``--readme PATH``). With neither flag it prints its help and
writes nothing. The model table comes from the zoo table (:data:`wszoo.zoo.ENTRIES`); the layout
lists every module of the ``wszoo`` package with the first line of its docstring, so it cannot
drift from the tree.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from .checkpoint_io import write_file_atomic
from .registry import model_table
from .zoo import ENTRIES

__all__ = ["LAYOUT", "TABLE", "layout", "main", "render"]

TABLE = "MODEL-TABLE"
LAYOUT = "LAYOUT"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

# Folders of the repository outside the package, in the order shown.
FOLDERS = {
    "hubconf.py": "torch.hub entry points (re-exports of wszoo.builders)",
    "tools/": "developer tools: import-graph check, batch conversion, parameter and GFLOPs counts",
    "parity/": "opt-in comparison against real MMDetection",
    "benchmarks/": "ratio benchmarks",
    "tests/": "offline tests, mirroring the package (a loopback HTTP server stands in for the internet)",
}


def _docstring_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""


def layout(root: Path = PACKAGE_ROOT) -> str:
    """The layout block: one line per public module of ``root/wszoo``, then the other folders."""
    rows = []
    for path in sorted((root / "wszoo").rglob("*.py")):
        rel = path.relative_to(root)
        if any(part.startswith("_") and part != "__init__.py" for part in rel.parts):
            continue
        shown = f"{rel.parent.as_posix()}/" if path.name == "__init__.py" else rel.as_posix()
        rows.append((shown, _docstring_line(path)))
    rows += list(FOLDERS.items())
    width = max(len(name) for name, _ in rows) + 2
    return "```\n" + "\n".join(f"{name:<{width}}{text}".rstrip() for name, text in rows) + "\n```"


def _replace(text: str, marker: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {marker}:START[^\n]*-->\n)(.*?)(<!-- {marker}:END -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"the README has no <!-- {marker}:START --> ... <!-- {marker}:END --> markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)


def render(readme_text: str) -> str:
    """``readme_text`` with both generated blocks replaced by their current contents.

    Raises:
        ValueError: A block's start or end marker is missing.
    """
    text = _replace(readme_text, TABLE, model_table(ENTRIES))
    return _replace(text, LAYOUT, layout())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wszoo.readme",
        description="Check or rewrite the README's generated blocks (the model table and the package layout). "
        "Without --check or --write nothing is written.",
        epilog="examples:\n  python -m wszoo.readme --check\n  python -m wszoo.readme --write --readme docs/README.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the README's generated blocks are stale")
    mode.add_argument("--write", action="store_true", help="rewrite the README's generated blocks in place")
    parser.add_argument(
        "--readme", type=Path, default=Path("README.md"), help="the README (default: README.md in this folder)"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m wszoo.readme``: 0 when up to date or rewritten, 1 when stale, 2 on misuse."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.check or args.write):
        parser.print_help()
        return 2
    if not args.readme.is_file():
        print(f"{args.readme} does not exist: run from the repository root or pass --readme PATH", file=sys.stderr)
        return 2
    current = args.readme.read_text(encoding="utf-8")
    try:
        wanted = render(current)
    except ValueError as err:
        print(f"{args.readme}: {err}", file=sys.stderr)
        return 2
    if args.check:
        if wanted != current:
            print(f"{args.readme} is stale: run `python -m wszoo.readme --write`", file=sys.stderr)
            return 1
        print(f"{args.readme} is up to date")
        return 0
    if wanted != current:
        write_file_atomic(args.readme, wanted.encode("utf-8"))
        print(f"rewrote the generated blocks of {args.readme}")
    else:
        print(f"{args.readme} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
