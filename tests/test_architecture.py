"""The package's shape: no import cycle between modules or subpackages, and the task is asked, never compared by name.

Both checks parse the source (``ast``) of ``compressor``, ``compressor.kernels`` (``kernels/``) and
``compressor.export`` (``export/``): only imports executed when a module loads count (module level, also inside
``try`` and ``if``, but not ``if TYPE_CHECKING:``); an import inside a function is a lazy one and cannot form a cycle
at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"compressor": ROOT / "compressor", "compressor.kernels": ROOT / "kernels",
            "compressor.export": ROOT / "export"}
TASK_NAMES = {"multiclass", "multilabel"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by the name of its ``__init__``)."""
    found = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            found[".".join([prefix, *(parts[:-1] if parts[-1] == "__init__" else parts)])] = path
    return found


def load_time_imports(tree: ast.Module):
    """The import statements a module runs when it is loaded."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            pending[:0] = node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending[:0] = node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at load time (``from a import b`` counts ``a.b`` if a module)."""
    mods = modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        for node in load_time_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import: from the module's package, up level - 1 packages
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (found := visit(start, [start])):
            return found
    return None


def subpackage(module: str) -> str:
    """The unit of layering a module belongs to: its first-level subpackage, or the top-level module itself."""
    return ".".join(module.split(".")[:2])


def test_finder_sees_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "compressor.training.hooks" in graph["compressor.training.loop"]  # from x import y of a module
    assert "compressor.export.metadata" in graph["compressor.export.runtime"]  # a relative import


def test_no_import_cycle_between_modules():
    assert find_cycle(import_graph()) is None


def test_no_import_cycle_between_subpackages():
    layers: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        layers.setdefault(subpackage(module), set())
        layers[subpackage(module)] |= {subpackage(m) for m in imported} - {subpackage(module)}
        for m in imported:
            layers.setdefault(subpackage(m), set())
    assert find_cycle(layers) is None


def test_task_names_are_compared_only_in_the_task_module():
    def names_in(node: ast.AST) -> set[str]:
        return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in TASK_NAMES}

    found = []
    for path in modules().values():
        relative = path.relative_to(ROOT).as_posix()
        if relative == "compressor/task.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and names_in(node):
                found.append(f"{relative}:{node.lineno}")
    assert found == []
