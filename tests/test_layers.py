"""The package's imports point down the layers, and no files or packages import each other
in a circle. The imports are read from the source (``ast``), not by importing anything.

Layers (``docs/architecture.md``; imports only point down, or sideways within a layer
without a circle)::

    8  jaxood (the package facade, jaxood/__init__.py)
    7  cli
    6  analyses
    5  bench          benchmark runner; writes fitted detectors
    4  fitted         FittedDetector: fit, threshold, save/load, export
    3  features scoring   the feature pipeline; the compile-once programs
    2  train convert detectors data metrics
    1  models validate
    0  types fsutil parallel distributed version

A *unit* is a top-level module or package of ``jaxood`` (``jaxood.bench``, ``jaxood.metrics``).
Checked here:

* every unit has a layer (a new one must be placed in :data:`LAYERS`);
* no unit imports a unit of a higher layer;
* no circle between units, nor between the files of the package;
* an import inside a function is only for deferring a heavy dependency, listed in
  :data:`DEFERRED` with the reason, and commented at the import.

Imports under ``if TYPE_CHECKING:`` serve annotations only and never run: they count for the
layer rule, not for circles.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxood"

LAYERS = {
    "jaxood": 8,
    "cli": 7,
    "analyses": 6,
    "bench": 5,
    "fitted": 4,
    "features": 3, "scoring": 3,
    "train": 2, "convert": 2, "detectors": 2, "data": 2, "metrics": 2,
    "models": 1, "validate": 1,
    "types": 0, "fsutil": 0, "parallel": 0, "distributed": 0, "version": 0, "hostmem": 0,
}

#: (importer, imported) -> why the import is deferred into a function. Importer ``"cli"``
#: covers every command module: each defers the library (jax, flax, orbax, matplotlib,
#: tensorflow-datasets) to the command that runs, so ``jaxood --help`` does not load them.
DEFERRED = {
    ("jaxood", "jaxood.fitted"): "`import jaxood` stays light: fitted pulls orbax and the "
                                 "whole pipeline",
    ("jaxood.bench.report", "jaxood.bench.plots"): "matplotlib, only when plots are written",
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node, importer: str) -> list[str]:
    """The jaxood modules an import statement loads (``from pkg import submodule`` names the
    submodule; ``from pkg import name`` the package)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "jaxood"]
    base = node.module or ""
    if node.level:  # relative: resolve against the importer's package
        pkg = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
        pkg = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1])
        base = f"{pkg}.{base}" if base else pkg
    if base.split(".")[0] != "jaxood":
        return []
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if sub in MODULES else base)
    return out


def imports(module: str) -> list[tuple[str, int, bool, bool]]:
    """``(imported module, line, in a function, type-checking only)`` of one module."""
    tree = ast.parse(MODULES[module].read_text())
    found = []

    def walk(node, in_function, typing_only):
        for child in ast.iter_child_nodes(node):
            fn = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            tc = typing_only or (isinstance(child, ast.If) and _is_type_checking(child))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((t, child.lineno, fn, tc) for t in _targets(child, module))
            walk(child, fn, tc)

    walk(tree, False, False)
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "jaxood"


EDGES = {m: imports(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a self-loop (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_unit_has_a_layer():
    missing = sorted({unit(m) for m in MODULES} - set(LAYERS))
    assert not missing, f"place {missing} in LAYERS (tests/test_layers.py, docs/architecture.md)"


def test_imports_point_down():
    upward = [
        f"{m}:{line} imports {t} (layer {LAYERS[unit(t)]} > {LAYERS[unit(m)]})"
        for m, edges in EDGES.items() for t, line, _, _ in edges
        if LAYERS[unit(t)] > LAYERS[unit(m)]
    ]
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_circle_between_files():
    graph = {m: {t for t, _, _, tc in edges if not tc and t != m} for m, edges in EDGES.items()}
    assert not _cycles(graph), f"files importing each other in a circle: {_cycles(graph)}"


def test_no_circle_between_packages():
    graph: dict[str, set[str]] = {}
    for m, edges in EDGES.items():
        for t, _, _, tc in edges:
            if not tc and unit(t) != unit(m):
                graph.setdefault(unit(m), set()).add(unit(t))
    assert not _cycles(graph), f"packages importing each other in a circle: {_cycles(graph)}"


def test_function_level_imports_only_defer_heavy_dependencies():
    bad = []
    for m, edges in EDGES.items():
        lines = MODULES[m].read_text().splitlines()
        for t, line, in_function, _ in edges:
            if not in_function or unit(m) == "cli" and LAYERS[unit(t)] < LAYERS["cli"]:
                continue
            if (m, t) not in DEFERRED:
                bad.append(f"{m}:{line} imports {t} inside a function")
            elif not any("#" in s for s in lines[max(0, line - 3) : line]):
                bad.append(f"{m}:{line} defers {t} without a comment saying why")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("from jaxood.bench import runner", ["jaxood.bench.runner"]),
    ("from jaxood.bench.runner import run", ["jaxood.bench.runner"]),
    ("from jaxood import metrics, __version__", ["jaxood.metrics", "jaxood"]),
    ("import jaxood.fitted.io", ["jaxood.fitted.io"]),
    ("import numpy as np", []),
])
def test_import_targets_are_resolved(source, expected):
    # The rules above are only as good as this resolution of import statements.
    assert _targets(ast.parse(source).body[0], "jaxood.analyses.common") == expected


def test_a_planted_circle_and_upward_import_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
