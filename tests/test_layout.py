"""The package's shape: no import cycles, and the arrows point one way
(HTTP -> calls -> driver interface -> drivers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """What module ``name`` imports, at any depth (function-level imports
    too), as the names of modules of the package, or of outside packages."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in MODULES and target.startswith("gateway"):
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
                # Importing a.b.c runs package a.b first.
                parent = target.rpartition(".")[0]
                while parent.startswith("gateway.") and not name.startswith(parent + "."):
                    out.add(parent)
                    parent = parent.rpartition(".")[0]
    return out


GRAPH = {name: {t for t in _imports(name) if t in MODULES} for name in MODULES}


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components: any with two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(component)

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_cycle_check_sees_a_cycle() -> None:
    # The check itself must be able to fail: a made-up pair that imports each other.
    GRAPH["gateway.x_a"], GRAPH["gateway.x_b"] = {"gateway.x_b"}, {"gateway.x_a"}
    try:
        with pytest.raises(AssertionError):
            test_no_import_cycles()
    finally:
        del GRAPH["gateway.x_a"], GRAPH["gateway.x_b"]


def _reaches(module: str, forbidden: str) -> bool:
    return any(t == forbidden or t.startswith(forbidden + ".") for t in _imports(module))


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("gateway.lines")))
@pytest.mark.parametrize("forbidden", ["flask", "waitress", "gateway.config", "gateway.calls",
                                       "gateway.api", "gateway.console", "gateway.app"])
def test_drivers_know_nothing_of_http_config_or_calls(module: str, forbidden: str) -> None:
    assert not _reaches(module, forbidden)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("gateway.calls")))
@pytest.mark.parametrize("forbidden", ["flask", "waitress", "gateway.api", "gateway.console",
                                       "gateway.app", "gateway.server"])
def test_calls_know_nothing_of_http(module: str, forbidden: str) -> None:
    assert not _reaches(module, forbidden)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("gateway.api")))
def test_the_api_does_not_reach_into_the_console(module: str) -> None:
    assert not _reaches(module, "gateway.console")


def test_readers_of_line_state_use_snapshots() -> None:
    # The console, health, metrics and service status read Line.snapshot(),
    # never a line's driver or worker.
    for name in ("gateway.console.views", "gateway.health", "gateway.api.health",
                 "gateway.server"):
        text = MODULES[name].read_text()
        assert ".driver." not in text and ".worker." not in text, name
