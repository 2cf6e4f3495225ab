"""The package's layout rules (issue 15): no import cycle, function-local imports and package
re-exports included, and no module over 500 lines.

The import graph is read from the source (every ``import`` and ``from ... import`` of an
``mlp_backend`` module anywhere in a module's AST, at module level or inside a function),
not from what an import happens to load; ``from pkg import name`` is an edge to the
submodule ``pkg.name`` when there is one, else to ``pkg``.
"""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

import mlp_backend

PACKAGE_DIR = Path(mlp_backend.__file__).parent
MAX_LINES = 500


def module_files(package_dir: Path) -> dict[str, Path]:
    """{dotted module name: file} for every ``.py`` file below ``package_dir`` (a package's
    ``__init__.py`` is the package itself)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """{module: the modules of ``modules`` it imports anywhere in its source}."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = alias.name  # `import a.b.c` loads a.b.c (or the longest part that is ours)
                    while target and target not in modules:
                        target = target.rpartition(".")[0]
                    if target:
                        targets.add(target)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: `from . import x` in package p is `from p import x`
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        targets.add(f"{base}.{alias.name}")
                    elif base in modules:
                        targets.add(base)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) for every strongly connected group of modules that import
    each other, directly or through others (a module importing itself included)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = []
    for group in groups:  # the shortest way from the group's first module back to itself
        start = min(group)
        came_from, queue = {}, deque([start])
        while queue:
            v = queue.popleft()
            if start in graph[v]:
                path = [v]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                found.append(path[::-1] + [start])
                break
            for w in sorted(graph[v] & group):
                if w not in came_from and w != start:
                    came_from[w] = v
                    queue.append(w)
    return found


def cycles_touching(scope: str) -> list[list[str]]:
    """The cycles of the whole package's import graph that pass through a module of ``scope``."""
    found = cycles(import_graph(module_files(PACKAGE_DIR)))
    return [c for c in found if any(m == scope or m.startswith(scope + ".") for m in c)]


# ----- the checker itself ---------------------------------------------------------------------

def test_the_checker_finds_function_local_and_reexport_cycles(tmp_path):
    """A cycle made only of a function-local import and a package re-export is found; a
    package importing its submodules that import each other one way only is not a cycle."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import f\n")
    (pkg / "a.py").write_text("from pkg import b\n\ndef f():\n    return b\n")
    (pkg / "b.py").write_text("import os\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import g\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    from pkg.sub import d\n    return d\n")
    (pkg / "sub" / "d.py").write_text("X = 1\n")
    graph = import_graph(module_files(pkg))
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == set()
    assert graph["pkg.sub"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.sub.d"}
    assert cycles(graph) == []
    (pkg / "sub" / "d.py").write_text("def h():\n    from pkg.sub import g\n    return g\n")  # d -> sub -> c -> d
    assert cycles(import_graph(module_files(pkg))) == [["pkg.sub", "pkg.sub.c", "pkg.sub.d", "pkg.sub"]]


# ----- the package ------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["mlp_backend.studies", "mlp_backend"])
def test_no_import_cycle(scope):
    found = cycles_touching(scope)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


# Every module of the package, by its path (issue 15: none over 500 lines).
def _module_cases():
    for path in module_files(PACKAGE_DIR).values():
        yield pytest.param(path, id=path.relative_to(PACKAGE_DIR.parent).as_posix())


@pytest.mark.parametrize("path", _module_cases())
def test_no_module_over_500_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.name}: {n} lines"
