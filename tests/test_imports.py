"""Every cfct module imports on its own, in a fresh interpreter, in any order: there is no import cycle."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cfct"
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
)


def _imports_cfct(path: Path) -> set[str]:
    """cfct modules a file imports at module level."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cfct"):
            out |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                    for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("cfct")}
    return out


def test_module_graph_has_no_cycle() -> None:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in _imports_cfct(path) if m in MODULES and m != name and m != "cfct"}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [node, nxt])
                            if nxt in trail else f"import cycle through {node} -> {nxt}")
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert "cfct.sources" in graph["cfct.train"] and "cfct.train" not in graph["cfct.sources"]


@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled"])
def test_every_module_imports_in_a_fresh_interpreter(order: str) -> None:
    modules = list(MODULES)
    if order == "reversed":
        modules.reverse()
    elif order == "shuffled":
        random.Random(0).shuffle(modules)
    code = f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
