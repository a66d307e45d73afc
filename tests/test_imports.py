"""Imports flow one way: every import in `unimp_core` (at module level and inside functions) goes to a module of the
same or a lower layer (docs/architecture.md, "Layers"), no two modules or packages import each other in a
circle, and no module is over 500 lines."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "unimp_core"

# Lowest first. A unit is a package of unimp_core or one of its top-level modules ("unimp_core" is the package's
# own __init__: the version); the model families' registry, each family package and `run_train` are units of
# their own (SPLIT_UNITS). A module may import its own unit and the units of the same or lower layers.
LAYERS: list[set[str]] = [
    {"unimp_core", "errors", "io", "tokens", "task_names", "rank_metrics", "schedule", "progress", "model.families"},
    {"specs"},
    {"run_folder"},
    {"data"},
    {"imagegen"},
    {"itemcodes"},
    {"tasks"},
    {"prepare", "filter_images"},
    {"model"},
    {"evaluation"},
    {"training"},
    {"model.openflamingo", "model.sasrec"},
    {"training.train"},
    {"generation", "terminal"},
    {"serve", "report"},
]
# Finer units inside a package: the registry sits below the specs that name families, a family package above the
# training helpers it uses, and `run_train` above the families (it reaches them through the registry by name).
SPLIT_UNITS = ("model.families", "model.openflamingo", "model.sasrec", "training.train")
MAX_LINES = 500


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _unit(module: str) -> str:
    parts = module.split(".")
    inner = ".".join(parts[1:3])
    if any(inner == u or inner.startswith(u + ".") for u in SPLIT_UNITS):
        return inner
    return parts[1] if len(parts) > 1 else parts[0]


def _type_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under `if TYPE_CHECKING:` (annotations only: never executed)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The unimp_core modules an import statement loads (a `from package import name` of a submodule names it)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        if name.split(".")[0] != "unimp_core":
            continue
        while name not in MODULES:
            name = name.rsplit(".", 1)[0]
        out.append(name)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line}, every import in unimp_core (module level and in functions)."""
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_only(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in skip:
                for target in _targets(module, node):
                    if target != module:
                        graph[module].setdefault(target, node.lineno)
    return graph


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _edges() -> dict[str, dict[str, int]]:
    return import_graph()


def test_every_unit_has_a_layer():
    placed = [u for layer in LAYERS for u in layer]
    assert len(placed) == len(set(placed))
    missing = sorted({_unit(m) for m in MODULES} - set(placed))
    assert not missing, f"add these to LAYERS here and in docs/architecture.md: {missing}"


def test_no_upward_imports():
    layer = {u: i for i, units in enumerate(LAYERS) for u in units}
    upward = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {t} ({_unit(t)} is above {_unit(m)})"
              for m, targets in _edges().items() for t, line in targets.items()
              if layer[_unit(t)] > layer[_unit(m)]]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    edges = _edges()
    modules = _cycles({m: set(t) for m, t in edges.items()})
    assert not modules, f"modules importing each other in a circle: {modules}"
    units: dict[str, set[str]] = defaultdict(set)
    for m, targets in edges.items():
        units[_unit(m)] |= {_unit(t) for t in targets if _unit(t) != _unit(m)}
    packages = _cycles(units)
    assert not packages, f"packages importing each other in a circle: {packages}"


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # terminal imports evaluation.compare inside a function only
    assert "unimp_core.evaluation.compare" in graph["unimp_core.terminal"]
    # a relative `from . import name` of a submodule is that submodule
    assert "unimp_core.data.process" in graph["unimp_core.prepare"]
