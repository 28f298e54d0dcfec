"""The layout's rules: the core never imports the shell, and no module imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import funcgan

ROOT = Path(funcgan.__file__).parent
SHELL = ("funcgan.cli", "funcgan.checkpoint", "funcgan.bench")
CORE = ("funcgan.tree", "funcgan.random", "funcgan.optim", "funcgan.nets", "funcgan.losses", "funcgan.penalties",
        "funcgan.step", "funcgan.loops", "funcgan.sweep", "funcgan.guard", "funcgan.compile", "funcgan.metrics")


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("funcgan"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("funcgan"))
    return out


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    mods = {_module(p): p for p in ROOT.rglob("*.py")}
    return {m: {i for i in _imports(p, top_level_only) if i in mods and i != m} for m, p in mods.items()}


def _shell_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} imports {d}" for m, deps in graph.items() if m.startswith(CORE) for d in sorted(deps)
            if d.startswith(SHELL)]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph.get(m, ()):
            if d.startswith(m + ".") or m.startswith(d + "."):
                continue  # a package and its own submodules
            if state.get(d) == 1:
                return stack + [d]
            if d not in state:
                found = visit(d, stack + [d])
                if found:
                    return found
        state[m] = 2
        return None

    for m in graph:
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def test_the_core_never_imports_the_shell():
    assert _shell_imports(_graph(top_level_only=False)) == []


def test_no_import_cycles():
    cycle = _cycle(_graph(top_level_only=True))
    assert cycle is None, " -> ".join(cycle)


def test_the_rules_can_fail():
    """Planted violations are seen: a core module importing the CLI, and a two-module cycle."""
    graph = _graph(top_level_only=False)
    graph["funcgan.step"] = graph["funcgan.step"] | {"funcgan.cli.run"}
    assert _shell_imports(graph) == ["funcgan.step imports funcgan.cli.run"]
    assert _cycle({"funcgan.a": {"funcgan.b"}, "funcgan.b": {"funcgan.a"}}) == ["funcgan.a", "funcgan.b", "funcgan.a"]
