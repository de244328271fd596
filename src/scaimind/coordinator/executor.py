"""Runs one workload process and turns its output into events (see the process contract).

A workload (training job today, evaluations later) hands a `ProcessSpec` and an `OutputSink`
to `run_process`; the runner starts the process in its own session, reads stdout/stderr and tails
the JSON-lines metrics file concurrently, and returns the exit code. It knows nothing about
jobs, the database or states.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# How often the metrics file is checked for new lines while the process runs. The file is a
# plain append-only file (the contract allows no other channel), so it is polled; 0.1 s keeps
# the latency of a metric point well under a GetJob round trip.
METRICS_POLL_SECONDS = 0.1
_CHUNK = 65536


@dataclass(slots=True)
class ProcessSpec:
    """What to run."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    metrics_file: Path


class OutputSink(Protocol):
    """Receives what the process says, in batches (one batch per read)."""

    def on_output(self, source: str, lines: Sequence[str]) -> None:
        """stdout ("stdout") or stderr ("stderr") lines, without newlines."""

    def on_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Parsed JSON objects from the metrics file."""

    def on_bad_event(self, line: str, error: str) -> None:
        """A metrics-file line that is not a JSON object."""


@dataclass(slots=True)
class RunningProcess:
    """Handle to a started process: pid and signalling."""

    process: asyncio.subprocess.Process
    output_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        """Signal the whole process group (a script's children too); ignore a gone process."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


def process_env(extra: dict[str, str], user: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a workload process: ours, the user's variables, then the contract's."""
    # None of ScaiMind's own settings reach user code: they hold the API secret, the downstream
    # token key (anyone holding it could mint scaidrive tokens for every tenant), JWT secrets
    # and database URLs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCAIMIND_")}
    env.update(user or {})
    env.update(extra)
    # Line-buffered output so stdout becomes log entries as it happens.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def script_argv(script: Path) -> list[str]:
    """How a CUSTOM script is started: directly when executable, else a .py with our Python."""
    if os.access(script, os.X_OK):
        return [str(script)]
    if script.suffix == ".py":
        return [sys.executable, str(script)]
    return ["/bin/sh", str(script)]


async def start_process(spec: ProcessSpec) -> RunningProcess:
    """Start the process in a new session; raises OSError when it cannot be started."""
    spec.cwd.mkdir(parents=True, exist_ok=True)
    spec.metrics_file.parent.mkdir(parents=True, exist_ok=True)
    spec.metrics_file.write_bytes(b"")
    proc = await asyncio.create_subprocess_exec(
        *spec.argv,
        cwd=str(spec.cwd),
        env=spec.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    return RunningProcess(proc)


async def follow_process(
    running: RunningProcess,
    spec: ProcessSpec,
    sink: OutputSink,
    on_exit: Callable[[], None] | None = None,
) -> int:
    """Pump output and metrics into `sink` until the process exits and everything is read."""
    exited = asyncio.Event()
    proc = running.process
    assert proc.stdout is not None
    assert proc.stderr is not None
    readers = [
        asyncio.create_task(_read_pipe(proc.stdout, "stdout", sink, running.output_tail)),
        asyncio.create_task(_read_pipe(proc.stderr, "stderr", sink, running.output_tail)),
        asyncio.create_task(_tail_metrics(spec.metrics_file, sink, exited)),
    ]
    try:
        code = await proc.wait()
        if on_exit is not None:
            on_exit()
        exited.set()
        # The pipes hit EOF once the process (and any child holding them) is gone; a grandchild
        # that keeps them open must not hang the job, so the wait is bounded.
        await asyncio.wait_for(asyncio.gather(*readers), timeout=10)
    except TimeoutError:
        pass
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return code


async def _read_pipe(
    stream: asyncio.StreamReader, source: str, sink: OutputSink, tail: deque[str]
) -> None:
    buffer = b""
    while True:
        chunk = await stream.read(_CHUNK)
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        # A single line longer than the buffer is delivered in pieces rather than held forever.
        if len(buffer) > 8 * _CHUNK:
            complete.append(buffer)
            buffer = b""
        _deliver_lines(complete, source, sink, tail)
    if buffer:
        _deliver_lines([buffer], source, sink, tail)


def _deliver_lines(raw: list[bytes], source: str, sink: OutputSink, tail: deque[str]) -> None:
    lines = [b.decode("utf-8", "replace").rstrip("\r") for b in raw]
    lines = [line for line in lines if line.strip()]
    if lines:
        tail.extend(f"[{source}] {line}" for line in lines)
        sink.on_output(source, lines)


async def _tail_metrics(path: Path, sink: OutputSink, exited: asyncio.Event) -> None:
    offset = 0
    pending = b""
    while True:
        done = exited.is_set()
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            data = b""
        if data:
            offset += len(data)
            pending += data
            *complete, pending = pending.split(b"\n")
            _deliver_events(complete, sink)
        if done:
            # After exit a last line without a newline is still a complete record.
            if pending.strip():
                _deliver_events([pending], sink)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exited.wait(), timeout=METRICS_POLL_SECONDS)


def _deliver_events(raw: list[bytes], sink: OutputSink) -> None:
    events: list[dict[str, Any]] = []
    for b in raw:
        line = b.decode("utf-8", "replace").strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            sink.on_bad_event(line, str(e))
            continue
        if not isinstance(obj, dict):
            sink.on_bad_event(line, "not a JSON object")
            continue
        events.append(obj)
    if events:
        sink.on_events(events)
