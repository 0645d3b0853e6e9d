"""The package's shape: no import cycle, short modules and functions, local imports only with a reason.

These read the source with :mod:`ast` (nothing is imported), so they are exact and fast.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "medhash"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative levels resolved against ``mod``)."""
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(mod: str, path: Path, tree: ast.AST | None = None) -> set[str]:
    """The medhash modules ``mod`` imports anywhere in its body (top level or inside functions)."""
    tree = tree or ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, path, node)
            names = [target]
            # `from pkg import sub`: the submodule is imported, not only the package
            names += [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
        else:
            continue
        for name in names:
            while name and name not in MODULES and "." in name:   # `import medhash.x.y` of a name inside a module
                name = name.rsplit(".", 1)[0]
            if name in MODULES and name != mod:
                out.add(name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _package_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without the edges between a package's ``__init__`` and its own submodules: an
    ``__init__`` that re-exports its submodules, and a submodule that imports a sibling through the
    package, are one unit, not a cycle between stages."""
    def inside(a: str, b: str) -> bool:
        return b.startswith(a + ".") and MODULES[a].name == "__init__.py"
    return {m: {n for n in deps if not inside(m, n) and not inside(n, m)} for m, deps in graph.items()}


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph = _package_edges({m: imports_of(m, p) for m, p in MODULES.items()})
    assert _cycles(graph) == []


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_module_is_short(mod):
    n = len(MODULES[mod].read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{MODULES[mod]}: {n} lines (at most {MAX_MODULE_LINES})"


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{path.name}:{node.lineno} {node.name}() {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit]


def test_long_function_finder(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 90)
    assert [s.split()[1] for s in long_functions(f)] == ["long()"]


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_functions_are_short(mod):
    assert long_functions(MODULES[mod]) == []


def uncommented_local_imports(path: Path) -> list[str]:
    """Imports inside functions with no comment on their line or the line above (the reason)."""
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    bad = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                block_end = lines[node.end_lineno - 1]
                if "#" not in here and "#" not in block_end and not above.startswith("#"):
                    bad.append(f"{path.name}:{node.lineno} {here.strip()}")
    return bad


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_local_imports_say_why(mod):
    assert uncommented_local_imports(MODULES[mod]) == []
