"""Runs one workload process and turns its output into events (see the process contract).

A workload (training job today, evaluations later) hands a `ProcessSpec` and an `OutputSink`
to `run_process`; the runner starts the process in its own session, reads stdout/stderr and tails
the JSON-lines metrics file concurrently, and returns the exit code. It knows nothing about
jobs, the database or states.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scaimind.coordinator.config import JobLimits
from scaimind.coordinator.executors.sandbox import Mount, Sandbox, apply_rlimits, prlimit_args

# How often the metrics file is checked for new lines while the process runs. The file is a
# plain append-only file (the contract allows no other channel), so it is polled; 0.1 s keeps
# the latency of a metric point well under a GetJob round trip.
METRICS_POLL_SECONDS = 0.1
_CHUNK = 65536
_METRICS_READ = 1 << 20
# A metrics line longer than this is not an event (it is dropped with a warning).
MAX_EVENT_BYTES = 1 << 20
_PR_SET_PDEATHSIG = 1


@dataclass(slots=True)
class ProcessSpec:
    """What to run, and where: host paths for the coordinator, `mounts` for the job's view.

    `argv`, `env` and `inside_cwd` use the job's paths (those of `mounts`); without a sandbox
    the job sees the host paths themselves, and every mount maps a path onto itself.
    """

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    metrics_file: Path
    mounts: list[Mount] = field(default_factory=list)
    inside_cwd: str = ""
    sandbox: Sandbox | None = None
    limits: JobLimits = field(default_factory=JobLimits)
    # Who owns what the job writes (the sandbox's user when the coordinator runs as root).
    owner: tuple[int, int] | None = None
    # Without a sandbox: SIGKILL the process when the one that started it dies (the launcher of
    # a Ray job; a sandbox has bwrap's --die-with-parent for that).
    die_with_parent: bool = False

    def to_host(self, inside: str) -> Path | None:
        """The host path of a path the job reported (None when outside every mount)."""
        path = os.path.normpath(inside)
        for mount in sorted(self.mounts, key=lambda m: len(m.inside), reverse=True):
            if path == mount.inside or path.startswith(mount.inside.rstrip("/") + "/"):
                return mount.host / os.path.relpath(path, mount.inside)
        return None


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
    # The process group that receives signals: the sandbox's first process (bwrap's pid 1,
    # whose group holds the job) or, without a sandbox, the process itself.
    group: int = 0
    main: int = 0  # the job's own process, once found
    metrics_fd: int = -1  # the metrics file, opened before the process started
    output_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def pid(self) -> int:
        """The process id of what the coordinator started (bwrap, or the job itself)."""
        return self.process.pid

    def main_pid(self) -> int:
        """The job's own process (for CPU and memory figures): inside the sandbox, pid 2."""
        if self.main:
            return self.main
        if self.group in (0, self.process.pid):
            return self.process.pid
        try:
            with open(f"/proc/{self.group}/task/{self.group}/children") as f:
                children = f.read().split()
        except OSError:
            return self.process.pid
        if children:
            self.main = int(children[0])
        return self.main or self.group

    def signal(self, sig: signal.Signals) -> None:
        """Signal the job's process group (a script's children too); ignore a gone process."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.group or self.process.pid, sig)


# The job's environment starts from this, never from the coordinator's own environment.
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    # Line-buffered output so stdout becomes log entries as it happens.
    "PYTHONUNBUFFERED": "1",
    # Jobs share the machine's cores: one BLAS thread each unless the job says otherwise.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def process_env(
    contract: dict[str, str], user: dict[str, str] | None = None, home: str = "/tmp"
) -> dict[str, str]:
    """A job's environment: a clean base, the user's variables, then the contract's.

    Nothing of the coordinator's own environment reaches a job (API secret, downstream token
    key, database URLs, JWT secrets); the user's variable names were checked at submit
    (`jobenv.check_environment`), so none of them can hook the interpreter or the loader.
    """
    env = {**BASE_ENV, "HOME": home, "TMPDIR": "/tmp"}
    env.update(user or {})
    env.update(contract)
    return env


def script_argv(script: str) -> list[str]:
    """How a CUSTOM script (already checked: executable or .py) is started."""
    if script.endswith(".py"):
        return [sys.executable, script]
    return [script]


def write_new(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """Write a file the coordinator makes in a folder a job can write to: whatever the job left
    at that name (a symlink to a host file, say) is removed, never written through."""
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        if owner is not None:
            os.fchown(f.fileno(), *owner)


async def start_process(spec: ProcessSpec) -> RunningProcess:
    """Start the process (sandboxed when `spec.sandbox`); raises OSError when it cannot."""
    spec.cwd.mkdir(parents=True, exist_ok=True)
    write_new(spec.metrics_file, b"", spec.owner)
    # Read through this one open file: the job may replace the name by a link later.
    metrics = os.open(spec.metrics_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return await _start(spec, metrics)
    except BaseException:
        os.close(metrics)
        raise


async def _start(spec: ProcessSpec, metrics: int) -> RunningProcess:
    if spec.sandbox is not None:
        proc, group = await spec.sandbox.start(
            spec.argv, spec.env, spec.mounts, spec.inside_cwd or str(spec.cwd), spec.limits
        )
        return RunningProcess(proc, group, metrics_fd=metrics)
    prlimit = shutil.which("prlimit")
    argv = [prlimit, *prlimit_args(spec.limits), "--", *spec.argv] if prlimit else spec.argv
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(spec.cwd),
        env=spec.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent if spec.die_with_parent else None,
    )
    if prlimit is None:
        apply_rlimits(proc.pid, spec.limits)
    return RunningProcess(proc, proc.pid, metrics_fd=metrics)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


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
        asyncio.create_task(_tail_metrics(running.metrics_fd, sink, exited)),
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
        os.close(running.metrics_fd)
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


async def _tail_metrics(fd: int, sink: OutputSink, exited: asyncio.Event) -> None:
    pending = b""
    while True:
        done = exited.is_set()
        # A bounded read per poll (more once the process exited): a job writing without
        # end cannot make the coordinator hold it all at once.
        for _ in range(64 if done else 1):
            try:
                data = os.read(fd, _METRICS_READ)
            except OSError:
                data = b""
            if not data:
                break
            pending += data
            *complete, pending = pending.split(b"\n")
            if len(pending) > MAX_EVENT_BYTES:
                sink.on_bad_event(pending[:200].decode("utf-8", "replace"), "line too long")
                pending = b""
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
