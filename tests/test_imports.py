"""No import circles in what runs on the charger (chargerd/ without bench/, and hal/).

Typing-only imports count: a module that imports another under TYPE_CHECKING
still cannot be read, tested or moved without it.  The two circles this
closed (daemon <-> control.commands, features.connectors <->
features.transactions) are now Protocols on the importing side.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for file in [*REPO.glob("chargerd/**/*.py"), *REPO.glob("hal/**/*.py")]:
        parts = list(file.relative_to(REPO).with_suffix("").parts)
        if parts[:2] == ["chargerd", "bench"]:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = file
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, file in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            deps.update(r for t in targets if (r := resolve(t)) and r != name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_circles_on_the_charger():
    graph = import_graph()
    assert "chargerd.daemon" in graph and "chargerd.features.transactions" in graph
    assert "chargerd.daemon" not in graph["chargerd.control.commands"]
    assert "chargerd.features.connectors" not in graph["chargerd.features.transactions"]
    assert cycles(graph) == []
