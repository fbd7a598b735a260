"""The package's layering (docs/architecture.md): contracts, cycles, sizes.

The import-linter contracts live in pyproject.toml; a wrong arrow (an upward or sideways
import, function-level ones included) fails here and so in CI.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "studio_sep"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
#: A function longer than MAX_FUNCTION_LINES says why in a comment just above its ``def`` (or its
#: decorators) that starts with this (any case): ``# Long by its docstring and …``.
LONG_MARK = "# long"


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is not installed (pip install -e '.[test]')"
    done = subprocess.run([lint, str(REPO / "pyproject.toml"), "--no-cache"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every import cycle between the package's modules (Tarjan's strongly connected components)."""
    modules = sorted(m for m in graph.modules if m.startswith("studio_sep"))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:  # recursion depth is bounded by the number of modules (~100)
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in sorted(graph.find_modules_directly_imported_by(m)):
            if not n.startswith("studio_sep"):
                continue
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_between_modules() -> None:
    graph = grimp.build_graph("studio_sep", cache_dir=None)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("studio_sep", "studio_sep.a", "studio_sep.b", "studio_sep.c"):
        graph.add_module(name)
    graph.add_import(importer="studio_sep.a", imported="studio_sep.b")
    graph.add_import(importer="studio_sep.b", imported="studio_sep.a")
    graph.add_import(importer="studio_sep.c", imported="studio_sep.a")
    assert _cycles(graph) == [["studio_sep.a", "studio_sep.b"]]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.name}: {len(lines)} lines; split it by concern"
    tree = ast.parse("\n".join(lines))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            above = first - 2
            while above >= 0 and lines[above].strip().startswith("#") and not lines[above].strip().lower().startswith(LONG_MARK):
                above -= 1  # the comment may run over several lines
            marked = above >= 0 and lines[above].strip().lower().startswith(LONG_MARK)
            assert length <= MAX_FUNCTION_LINES or marked, (
                f"{path.name}:{node.lineno} {node.name} has {length} lines; split it, or say why above its def "
                f"with '# Long because …'")
