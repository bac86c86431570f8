"""The plugin registry and the search package import without a cycle (issue 14, item 3).

``registry`` owns the plugin manager and the registries, the base classes (``bases``) know
nothing of it, and the public modules re-export both: a static check of the modules'
run-time imports (not those under ``TYPE_CHECKING``) finds no cycle through these modules,
none of them reaches the others through a function-local import, and each imports on its
own in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "pg_mmretrieval"
ROOT = "pg_mmretrieval"
#: the modules of the registry and of search (what issue 14 untangles)
CHECKED = [
    "pg_mmretrieval.bases",
    "pg_mmretrieval.hookspecs",
    "pg_mmretrieval.registry",
    "pg_mmretrieval.plugins",
    "pg_mmretrieval.encoders",
    "pg_mmretrieval.loaders",
    "pg_mmretrieval.rerankers",
    "pg_mmretrieval.query",
    "pg_mmretrieval.retrieval",
    "pg_mmretrieval.search",
    "pg_mmretrieval.search.plain",
    "pg_mmretrieval.search.rerank",
    "pg_mmretrieval.search.statements",
    "pg_mmretrieval.search.composed",
    "pg_mmretrieval.search.hybrid",
    "pg_mmretrieval.search.feedback",
    "pg_mmretrieval.search.multivector",
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package modules an import statement of ``module`` loads."""
    is_pkg = MODULES[module].name == "__init__.py"
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")
            base = base[: len(base) - node.level + (1 if is_pkg else 0)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
    # loading a.b.c runs the package a.b first, unless the importer is inside a.b (a package
    # is initialised before its submodules; the root package likewise, so it is left out)
    inside = {module.rsplit(".", i)[0] for i in range(module.count(".") + 1)} | {ROOT}
    out = []
    for name in names:
        if name in MODULES:
            parts = name.split(".")
            out += [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
    return [t for t in out if t in MODULES and t not in inside]


def _imports(module: str, *, local: bool) -> set[str]:
    """Top-level run-time imports (``local``: the ones inside functions instead)."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            if in_function == local:
                found.update(_targets(module, node))
            return
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    found.discard(module)
    return found


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {m: _imports(m, local=False) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_checked_modules_exist() -> None:
    assert set(CHECKED) <= set(MODULES)


def test_no_import_cycle_through_registry_or_search() -> None:
    bad = [c for c in _cycles() if set(c) & set(CHECKED)]
    assert bad == []


def test_base_classes_know_nothing_of_the_manager() -> None:
    assert _imports("pg_mmretrieval.bases", local=False) <= {"pg_mmretrieval.errors"}
    assert _imports("pg_mmretrieval.bases", local=True) == set()


def test_no_function_local_imports_between_them() -> None:
    local = {m: _imports(m, local=True) & set(CHECKED) for m in CHECKED}
    assert {m: sorted(t) for m, t in local.items() if t} == {}


def test_the_static_check_sees_a_cycle() -> None:
    """The check itself: registry imports bases; were bases to import registry back, the
    graph would have the cycle (guards against a check that cannot fail)."""
    assert "pg_mmretrieval.bases" in _imports("pg_mmretrieval.registry", local=False)
    assert "pg_mmretrieval.search" in _targets(
        "pg_mmretrieval.registry",
        ast.ImportFrom(module="search.plain", names=[ast.alias("Hit")], level=1),
    )


@pytest.mark.parametrize("module", CHECKED)
def test_module_imports_alone(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
