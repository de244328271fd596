"""The layout's rules, checked on the source: no import cycle, no module over 600 lines.

Every module under src/scaimind (except the generated v1/) is parsed; every import counts,
including those inside functions and under `if TYPE_CHECKING:` (a type-only import still ties
two modules together for a reader). Importing `a.b.c` also runs the packages `a` and `a.b`
(unless the importer lives inside them, where they already ran), so those count as edges too.
Cycles are the strongly connected components of that graph with more than one module (or a
module importing itself).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "scaimind"
GENERATED = f"{ROOT}.v1"
COORDINATOR = f"{ROOT}.coordinator"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if name == GENERATED or name.startswith(GENERATED + "."):
            continue
        found[name] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imported(name: str, path: Path, tree: ast.AST) -> Iterator[str]:
    """Dotted names a module imports (absolute; relative imports resolved)."""
    package = name if _is_package(path) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            # `from pkg import mod` imports the submodule pkg.mod.
            for alias in node.names:
                yield f"{target}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (edges into v1/ and third parties dropped)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for target in _imported(name, path, tree):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in modules and dep != name and dep not in ancestors:
                    graph[name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return sorted(found)


def oversized() -> dict[str, int]:
    """Modules over MAX_LINES lines."""
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in _modules().items()
    }
    return {name: n for name, n in sorted(sizes.items()) if n > MAX_LINES}


def _in_coordinator(name: str) -> bool:
    return name == COORDINATOR or name.startswith(COORDINATOR + ".")


def _report(found_cycles: list[list[str]], sizes: dict[str, int]) -> str:
    lines = [f"cycle of {len(c)}: {' → '.join(c)}" for c in found_cycles]
    lines += [f"{name}: {n} lines (over {MAX_LINES})" for name, n in sizes.items()]
    return "\n".join(lines)


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The checker itself: a cycle hidden in a function body is a cycle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]
    tree = ast.parse("def f():\n    from . import sibling\n    import scaimind.x.y\n")
    got = set(_imported("scaimind.pkg.mod", Path("mod.py"), tree))
    assert {"scaimind.pkg.sibling", "scaimind.x.y"} <= got


def test_the_coordinator_has_no_cycle_and_no_oversized_module() -> None:
    found = [c for c in cycles(import_graph()) if any(_in_coordinator(m) for m in c)]
    sizes = {name: n for name, n in oversized().items() if _in_coordinator(name)}
    assert _report(found, sizes) == ""


# The coordinator's layers: what each part may import of the others (its own modules always).
# Shared by all: config, status (the error type), jobenv, messages (job states, protobuf).
_SHARED = {"config", "status", "jobenv", "messages"}
_MAY_IMPORT: dict[str, set[str]] = {
    "worker": set(),  # child processes: the standard library, NumPy and themselves
    "persistence": set(),
    "executors": {"config", "status"},
    "config": set(),
    "status": set(),
    "jobenv": {"status"},
    "messages": {"jobenv", "persistence"},
    "data": _SHARED | {"persistence", "worker"},
    "jobs": _SHARED | {"data", "executors", "persistence"},
    "workloads": _SHARED | {"jobs", "data", "executors", "persistence", "worker"},
    "rpc": _SHARED | {"workloads", "jobs", "data", "executors", "persistence"},
}


def _part(module: str) -> str:
    return module.removeprefix(COORDINATOR + ".").split(".")[0]


def test_the_coordinator_parts_import_only_the_layers_below() -> None:
    """jobs/ never imports a workload or the RPC layer, a worker process only itself, etc."""
    wrong = []
    for module, deps in sorted(import_graph().items()):
        if not module.startswith(COORDINATOR + ".") or _part(module) not in _MAY_IMPORT:
            continue
        part = _part(module)
        for dep in sorted(deps):
            if not _in_coordinator(dep) or dep == COORDINATOR:
                continue
            if _part(dep) != part and _part(dep) not in _MAY_IMPORT[part]:
                wrong.append(f"{module} imports {dep}")
    assert wrong == []


def test_worker_processes_import_nothing_else_of_scaimind() -> None:
    """The sandboxed children start with the standard library, NumPy and the worker package."""
    graph = import_graph()
    worker = f"{COORDINATOR}.worker"
    wrong = [
        f"{module} imports {dep}"
        for module, deps in sorted(graph.items())
        if module.startswith(worker + ".")
        for dep in sorted(deps)
        if not dep.startswith(worker) and dep not in (ROOT, COORDINATOR)
    ]
    assert wrong == []


def test_the_whole_package_has_no_cycle_and_no_oversized_module() -> None:
    found, sizes = cycles(import_graph()), oversized()
    assert _report(found, sizes) == ""


# Who may import whom across the top-level folders. The composition roots are the only places
# one process's code starts the other's: the gateway's app starts the embedded coordinator, the
# CLI starts either. contract/ and settings.py sit below all of them.
_FOLDER_MAY_IMPORT = {
    "contract": set(),
    "settings": {"contract"},
    "coordinator": {"contract"},
    "gateway": {"contract", "settings"},
    "cli": {"contract", "settings", "gateway", "coordinator"},
}
_ROOT_EXCEPTIONS = {
    # The embedded coordinator: one import of its server, at start-up (and so its package).
    (f"{ROOT}.gateway.app", f"{COORDINATOR}.server"),
    (f"{ROOT}.gateway.app", COORDINATOR),
    # Settings hand the coordinator its typed config.
    (f"{ROOT}.settings", f"{COORDINATOR}.config"),
    (f"{ROOT}.settings", COORDINATOR),
    # `python -m scaimind.coordinator` reads the environment like the CLI does.
    (f"{COORDINATOR}.__main__", f"{ROOT}.settings"),
}


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_processes_meet_only_at_the_contract_and_the_composition_roots() -> None:
    """The gateway never imports the coordinator's code and the other way round."""
    wrong = []
    for module, deps in sorted(import_graph().items()):
        own = _folder(module)
        if own not in _FOLDER_MAY_IMPORT:
            continue
        for dep in sorted(deps):
            other = _folder(dep)
            if other is None or other == own or other not in _FOLDER_MAY_IMPORT:
                continue
            if other not in _FOLDER_MAY_IMPORT[own] and (module, dep) not in _ROOT_EXCEPTIONS:
                wrong.append(f"{module} imports {dep}")
    assert wrong == []
