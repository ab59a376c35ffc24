"""Checks wszoo's import graph: no cycle among its modules, no import inside a function except of
an optional dependency, and ``import wszoo`` pulling in no optional dependency.

Run from the repository root: ``python tools/check_imports.py`` (exit 1 and a list of problems
when a rule is broken). ``tests/test_layout.py`` runs it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

# Kept out of ``import wszoo``: imported inside the functions that need them.
OPTIONAL = ("pycocotools", "huggingface_hub", "cv2", "onnx", "onnxruntime", "onnxscript")
# wszoo's modules that import an optional dependency at the top: imported inside functions too.
NEEDS_OPTIONAL = ("wszoo.onnx_group_norm",)


def _optional(target: str) -> bool:
    return target.split(".")[0] in OPTIONAL or any(target == m or target.startswith(m + ".") for m in NEEDS_OPTIONAL)


PACKAGE = "wszoo"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> list[str]:
    """Absolute names of the modules a ``from ... import ...`` may load."""
    if node.level == 0:
        base = node.module or ""
    else:
        parts = current.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(root: Path, package: str = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    """Edges between the package's modules, and the imports inside functions that are not optional."""
    modules = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    nested: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        in_function = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
            if isinstance(n, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(node, name, path.name == "__init__.py")
            else:
                continue
            if id(node) in in_function and not all(_optional(t) for t in targets):
                nested.append(f"{path}:{node.lineno}: import inside a function: {ast.unparse(node)}")
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (first == last), or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def optional_imported_by_package(root: Path, package: str = PACKAGE) -> list[str]:
    """Optional dependencies present in ``sys.modules`` after a fresh ``import <package>``."""
    code = f"import sys, {package}; print(' '.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    return out.stdout.split()


def problems_of(root: Path, package: str = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    """The import graph of ``root/package`` and every broken rule, one line each."""
    graph, nested = import_graph(root, package)
    problems = list(nested)
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    problems += [
        f"`import {package}` imports optional dependency {m}" for m in optional_imported_by_package(root, package)
    ]
    return graph, problems


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    graph, problems = problems_of(root)
    for problem in problems:
        print(problem)
    if not problems:
        print(
            f"{len(graph)} modules, {sum(map(len, graph.values()))} imports between them: no cycle, no nested "
            "import of a required dependency, no optional dependency imported by the package"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
