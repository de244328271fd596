"""Importing a module registers nothing: subsystems are wired by the composition roots.

Every module of the package is imported in a fresh interpreter; the Prometheus registry, the
logging handlers, the signal handlers and the running threads must be what they were before.
A metric, hook or handler registered at import time would show up here (and would make the
order of imports matter, which is what the explicit lifespan in gateway/app.py replaced).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

_PROBE = r"""
import importlib, json, logging, pkgutil, signal, sys, threading
import prometheus_client

def snapshot():
    return {
        "metrics": sorted(m.name for m in prometheus_client.REGISTRY.collect()),
        "handlers": sorted(
            f"{name}:{type(h).__name__}"
            # Ours and the root logger's (libraries add NullHandlers to their own loggers).
            for name, logger in [("root", logging.getLogger())]
            + [
                (n, logging.getLogger(n))
                for n in list(logging.root.manager.loggerDict)
                if n.startswith("scaimind")
            ]
            for h in getattr(logger, "handlers", [])
        ),
        "signals": {
            s.name: repr(signal.getsignal(s))
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)
        },
        "threads": sorted(t.name for t in threading.enumerate()),
    }

before = snapshot()
import scaimind
names = []
for info in pkgutil.walk_packages(scaimind.__path__, "scaimind."):
    # Generated code, and the worker processes' entry modules (they configure their own
    # process on import, which is what an entry module is for), are not wired subsystems.
    if info.name.startswith(("scaimind.v1", "scaimind.coordinator.worker")):
        continue
    if info.name.endswith("__main__"):
        continue
    importlib.import_module(info.name)
    names.append(info.name)
print(json.dumps({"before": before, "after": snapshot(), "imported": names}))
"""


def test_importing_every_module_registers_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=SRC,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The walk really covered the package (gateway, coordinator and CLI).
    imported = set(result["imported"])
    for module in ("scaimind.gateway.app", "scaimind.coordinator.server", "scaimind.cli.main"):
        assert module in imported
    assert result["after"] == result["before"]


def _module_level_calls(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            found.append((node.lineno, ast.unparse(node.value)[:60]))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.extend(
                (d.lineno, f"@{ast.unparse(d)[:60]}")
                for d in node.decorator_list
                if "register" in ast.unparse(d)
            )
    return found


def test_no_module_calls_a_registration_at_import() -> None:
    # What the probe above cannot see: a call at module level that hands something to another
    # module (`register_startup_hook(open_streams)` was one), or a @register… decorator.
    offenders = []
    for path in sorted((SRC / "scaimind").rglob("*.py")):
        parts = path.relative_to(SRC / "scaimind").parts
        # Generated code, and entry modules (run as programs, not imported by the servers).
        if "v1" in parts or "worker" in parts or path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{path.relative_to(SRC)}:{n}: {s}" for n, s in _module_level_calls(tree)]
    assert offenders == []
