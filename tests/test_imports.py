"""The import graph of src/robustopt: layered, without circles, so the file tree shows the architecture.

Every import counts, at module level, inside functions and under ``TYPE_CHECKING`` alike: an
import hidden in a function is still a dependency. A module may import its own layer and the
layers below; ``__init__`` files may import their package's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A name ending in ".*" covers a package and its modules.
LAYERS = [
    ["robustopt._io", "robustopt._checks", "robustopt._device", "robustopt._progress", "robustopt._registry",
     "robustopt.malloc", "robustopt.losses", "robustopt.distributed", "robustopt.threat", "robustopt.threat.*"],
    ["robustopt._lock", "robustopt.data", "robustopt.data.*", "robustopt.models", "robustopt.models.*"],
    ["robustopt.checkpoint", "robustopt.checkpoint.*"],
    ["robustopt.attacks", "robustopt.attacks.*"],
    ["robustopt.evaluation", "robustopt.evaluation.*"],
    ["robustopt.training", "robustopt.training.*"],
    ["robustopt.runs"],
    ["robustopt.zoo"],
    ["robustopt.experiments", "robustopt.experiments.*"],
    ["robustopt.external"],
    ["robustopt", "robustopt.cli", "robustopt.cli.*", "robustopt.__main__"],
]
# Known exceptions, each with what removes it.
KNOWN: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "robustopt").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else resolve(base) for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t and t != name}
    return graph


def _layer(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(module == n or (n.endswith(".*") and module.startswith(n[:-1])) for n in names):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_imports.py: add it where it belongs")


def test_no_module_imports_a_higher_layer():
    graph = _graph(_modules())
    upward = sorted((a, b) for a, targets in graph.items() for b in targets
                    if _layer(b) > _layer(a) and (a, b) not in KNOWN)
    assert not upward, f"imports of a higher layer: {upward}"
    stale = [edge for edge in KNOWN if edge[1] not in graph[edge[0]]]
    assert not stale, f"these known exceptions are gone, remove them from KNOWN: {stale}"


def test_no_import_circle():
    graph = _graph(_modules())
    for a, b in KNOWN:
        graph[a].discard(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(target):] + [module, target]))
            if target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])

