"""What every server process the CLI starts sets up first: its settings, gRPC's fork handling
and the garbage collector (serve, coordinator, the workers of serve --workers)."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scaimind.settings import Settings


def load(data_dir: Path | None, **overrides: Any) -> Settings:
    """Settings from the environment, with --data-dir and the given non-None overrides."""
    from scaimind.settings import load_settings

    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def quiet_grpc_fork() -> None:
    """Job processes are started from a process that uses gRPC but never use gRPC in the
    child: without this gRPC's fork handlers log "skipping fork() handlers" at every start.
    Read by gRPC when it is first imported, so set before."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


def tune_gc() -> None:
    """GC settings of a gateway process serving many streams (see `serve`)."""
    # Thousands of open SSE streams allocate many short-lived objects; with CPython's default
    # thresholds full collections walk them often and stall every request on the loop (the tail
    # of GET latency in bench/streams.py). Start-up objects are frozen out of collection and
    # collections run less often. Only in our own server processes: a host app keeps its GC.
    gc.freeze()
    gc.set_threshold(50_000, 10, 100)
