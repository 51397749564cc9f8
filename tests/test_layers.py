"""The package's import graph, built with ``ast`` from every import statement (those inside
functions included): no cycle, and no module imports a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

import subquad

ROOT = Path(subquad.__file__).parent
#: base modules < model < results < harness < analysis < command line
LAYERS = ("", "model", "results", "harness", "analysis", "cli")


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("subquad", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from p import m`` counts as importing p.m
    when p.m is a module, else p)."""
    mods = modules()
    edges: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            edges[name] |= {t for t in targets if t in mods and t != name}
    return edges


def layer(name: str) -> int:
    parts = name.split(".")
    if parts[1:2] == ["__main__"]:
        return LAYERS.index("cli")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else 0


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_no_upward_import():
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                    if layer(b) > layer(a))
    assert upward == []


def test_the_checks_can_fail():
    """A planted cycle and a planted upward edge are found."""
    edges = {"subquad.model.a": {"subquad.model.b"}, "subquad.model.b": {"subquad.model.a"}}
    assert cycles(edges) == [["subquad.model.a", "subquad.model.b"]]
    assert layer("subquad.analysis.fit") > layer("subquad.results.rundir") > layer(
        "subquad.model.train") > layer("subquad.vocabulary")
