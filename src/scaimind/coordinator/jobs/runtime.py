"""What the parts of the job manager share: a placed job's runtime state, the caller, the
protocols between the manager and the workloads, stop reasons and small helpers.

`Workload` is what a job type provides; `JobHost` is the narrow view of the manager a workload
gets (never the manager itself), so workloads/ depends on this module only and jobs/ never
imports a workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.data.cache import DatasetCache
from scaimind.coordinator.executors.base import (
    RunHandle,
)
from scaimind.coordinator.executors.process import OutputSink, ProcessSpec
from scaimind.coordinator.executors.sandbox import Sandbox
from scaimind.coordinator.jobs.jobfiles import JobFiles
from scaimind.coordinator.jobs.notifier import JobNotifier
from scaimind.coordinator.persistence.ops_store import OpsStore
from scaimind.coordinator.persistence.records import CheckpointRecord, JobRecord, PendingLog
from scaimind.v1 import common_pb2, coordinator_pb2

L = common_pb2.LogLevel
EXIT_CHECKPOINTED = 75
DEFAULT_QUEUE = "default"


CANCEL, PAUSE, PREEMPT, SHUTDOWN, TIMEOUT = "cancel", "pause", "preempt", "shutdown", "timeout"

# A process's log level names (structured `log` events) → LogLevel; unknown names are INFO.
LOG_LEVELS = {
    "DEBUG": L.LOG_LEVEL_DEBUG,
    "INFO": L.LOG_LEVEL_INFO,
    "WARNING": L.LOG_LEVEL_WARNING,
    "WARN": L.LOG_LEVEL_WARNING,
    "ERROR": L.LOG_LEVEL_ERROR,
    "CRITICAL": L.LOG_LEVEL_ERROR,
}


class Workload(Protocol):
    """What a job type runs: its process, how its output is read, what success records.

    The manager owns everything generic (states, slots, signals, stop reasons, logs of the
    coordinator); a workload only describes its process. Jobs carry their type in `job_type`.
    """

    preparing: str  # status message of PREPARING

    async def prepare(
        self, m: JobHost, rt: JobRuntime, row: JobRecord, attempt: int
    ) -> ProcessSpec:
        """PREPARING: resolve inputs and write files; StatusError/OSError = DATA_ERROR."""
        ...

    def sink(self, m: JobHost, rt: JobRuntime, row: JobRecord) -> OutputSink:
        """Receiver of the process's output and events."""
        ...

    def max_runtime_seconds(self, row: JobRecord) -> int:
        """Runtime limit of one attempt (0 = none)."""
        ...

    def describe(self, m: JobHost, row: JobRecord) -> str:
        """What runs, for the job's log (no server paths)."""
        ...

    def completed(self, m: JobHost, rt: JobRuntime, row: JobRecord) -> tuple[dict[str, Any], str]:
        """Columns to write and the status message when the process exited 0."""
        ...


@dataclass(slots=True)
class CallerContext:
    """Who calls: from the metadata."""

    tenant_id: str
    user_id: str = ""
    idempotency_key: str = ""
    scaidrive_token: str = ""  # x-scaidrive-token; never logged


@dataclass(eq=False)
class JobRuntime:
    """In-memory state of a placed job while its process lives."""

    job_id: str
    tenant_id: str
    queue_name: str
    slots: list[tuple[str, int]]
    node_ids: list[str]
    stop_reason: str | None = None
    run: RunHandle | None = None  # the attempt, once the executor started it
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started_mono: float = field(default_factory=time.monotonic)
    steps: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=20))
    current_step: int = 0
    total_steps: int = 0
    spec: ProcessSpec | None = None  # what runs (paths the process reports map back through it)
    graceful: bool = True
    # Left running when the coordinator stopped (an executor whose runs outlive it).
    detached: bool = False

    @property
    def node_id(self) -> str:
        """The first node (log entries carry it)."""
        return self.node_ids[0] if self.node_ids else ""

    def steps_per_second(self) -> float | None:
        """Recent training throughput."""
        if len(self.steps) < 2:
            return None
        (t0, s0), (t1, s1) = self.steps[0], self.steps[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        return (s1 - s0) / (t1 - t0)

    def remaining_seconds(self, fallback: float) -> float:
        """Estimated time until this job frees its slots."""
        rate = self.steps_per_second()
        if rate and self.total_steps > 0:
            return max(0.0, (self.total_steps - self.current_step) / rate)
        return max(1.0, fallback - (time.monotonic() - self.started_mono))


class JobRecorder(Protocol):
    """The part of the job store a workload uses: read its job, record what its process says,
    and (evaluations) insert the evaluation's job."""

    def get_job(self, job_id: str, tenant_id: str | None = None) -> JobRecord | None: ...

    def job_for_key(self, tenant_id: str, key: str) -> str | None: ...

    def insert_job(
        self,
        fields: Mapping[str, Any],
        logs: Sequence[PendingLog],
        idempotency_key: str | None,
    ) -> None: ...

    def update_job(self, job_id: str, fields: Mapping[str, Any], bump: bool = True) -> None: ...

    def append_logs(self, job_id: str, logs: Sequence[PendingLog]) -> None: ...

    def add_metric_points(
        self, job_id: str, points: Sequence[tuple[int, int, str, float, float]]
    ) -> None: ...

    def checkpoint(self, checkpoint_id: str) -> CheckpointRecord | None: ...


class JobHost(Protocol):
    """What a workload may use of the manager: configuration, the job's files and data, the
    stores it records into, and a few job-level operations."""

    config: CoordinatorConfig

    # Read-only for a workload: the manager owns these (a Protocol attribute is mutable).
    @property
    def store(self) -> JobRecorder: ...

    ops: OpsStore
    files: JobFiles
    sandbox: Sandbox
    data_cache: DatasetCache
    notifier: JobNotifier

    def log(self, job_id: str, message: str, level: int = L.LOG_LEVEL_INFO) -> None: ...

    def phase(self, rt: JobRuntime, phase: str) -> None: ...

    def record_checkpoint(
        self, rt: JobRuntime, req: coordinator_pb2.SubmitJobRequest, event: dict[str, Any]
    ) -> None: ...

    def request_of(self, row: JobRecord) -> coordinator_pb2.SubmitJobRequest: ...

    def keep_last(self, req: coordinator_pb2.SubmitJobRequest) -> int: ...

    def shown(self, tenant_id: str, host: str) -> str: ...

    def latest_checkpoint_path(self, job_id: str, fallback: str) -> str: ...

    def caller_job(self, caller: CallerContext, job_id: str) -> JobRecord: ...

    def schedule(self) -> None: ...


def clog(message: str, level: int = L.LOG_LEVEL_INFO, node_id: str = "") -> PendingLog:
    return PendingLog(level, message, "coordinator", node_id)


def to_int(value: Any) -> int:
    """An event's integer field (0 when absent or not a number)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value:
        return int(value)
    return 0


def to_numbers(raw: Any) -> dict[str, float]:
    """The finite numeric values of a mapping."""
    if not isinstance(raw, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and v == v
        and abs(v) != float("inf")
    }


def dir_size(path: Path) -> int:
    """Bytes of the regular files under `path`, never following a symlink (runs in a thread)."""
    total = 0
    for root, _dirs, names in os.walk(path, followlinks=False):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total
