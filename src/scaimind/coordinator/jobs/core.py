"""The job manager's state and the helpers every part of it uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.data.cache import DatasetCache
from scaimind.coordinator.data.scaidrive import storage_root
from scaimind.coordinator.executors.base import (
    Executor,
)
from scaimind.coordinator.executors.inventory import NodeSpec
from scaimind.coordinator.executors.local import LocalExecutor
from scaimind.coordinator.executors.sandbox import Sandbox
from scaimind.coordinator.jobs.jobfiles import JobFiles
from scaimind.coordinator.jobs.notifier import LOGS, JobNotifier
from scaimind.coordinator.jobs.queries import JobReads
from scaimind.coordinator.jobs.runtime import (
    CallerContext,
    JobRuntime,
    L,
    Workload,
    clog,
)
from scaimind.coordinator.messages import (
    TERMINAL,
    S,
    job_proto,
    status_name,
)
from scaimind.coordinator.persistence.ops_store import OpsStore
from scaimind.coordinator.persistence.records import CheckpointRecord, JobRecord
from scaimind.coordinator.persistence.store import Store
from scaimind.coordinator.status import invalid, not_found, precondition
from scaimind.v1 import common_pb2, coordinator_pb2


class JobCore:
    """State shared by the manager's parts: slots, runtimes, stores, files."""

    def __init__(
        self,
        config: CoordinatorConfig,
        nodes: list[NodeSpec],
        store: Store,
        workloads: Mapping[str, Workload],
        executor: Executor | None = None,
    ) -> None:
        self.config = config
        # Where processes run (executors/): child processes here, or Ray jobs.
        self.executor: Executor = executor or LocalExecutor(config.inventory_path)
        # job_type -> what its process is; an evaluation workload registers "evaluation".
        self.workloads = dict(workloads)
        self.nodes = nodes
        self._node_by_id = {n.node_id: n for n in nodes}
        self.store = store
        # What the RPC layer may read (queries.py): the store, typed read-only.
        self.reads: JobReads = store
        # Evaluations, the dataset cache and data-access tokens (workloads/evaluation.py,
        # data/cache.py).
        self.ops = OpsStore(config.data_dir / "ops.db")
        self.sandbox = Sandbox(
            config.sandbox, protected=(*config.service_dirs, storage_root(config))
        )
        # Paths tenants may name, where jobs write, what a process sees (jobfiles.py,
        # data/paths.py).
        self.files = JobFiles(config, store, self.ops, self.sandbox, self.request_of)
        self.data_cache = DatasetCache(
            self.ops,
            config.shared / "dataset-cache",
            config.dataset_cache_capacity_bytes,
            self.is_active,
            owner=self.files.owner,
        )
        self.notifier = JobNotifier()
        self.jobs_dir = self.files.layout.jobs_dir
        self._slots: dict[str, list[str | None]] = {n.node_id: [None] * n.gpu_count for n in nodes}
        self._runtimes: dict[str, JobRuntime] = {}
        self._drained: dict[str, str] = {k: r for k, (d, r) in store.node_states().items() if d}
        # Nodes the executor reports gone or dead: listed, but no new work goes there; busy
        # ones (used by others, on Ray) take none for now either.
        self._offline: set[str] = set()
        self._busy: set[str] = set()
        self._inventory_read = time.monotonic()
        self._estimates: dict[str, int] = {}
        self._queue_view: dict[str, list[str]] = {}
        self._closing = False
        self._ticker: asyncio.Task[None] | None = None
        self._in_pass = False
        self._parsed: dict[str, coordinator_pb2.SubmitJobRequest] = {}

    # ---- helpers ----------------------------------------------------------------------------

    def caller_job(self, caller: CallerContext, job_id: str) -> JobRecord:
        """The caller's job or NOT_FOUND (another tenant's job is indistinguishable)."""
        if not job_id:
            raise invalid("job_id: is required")
        row = self.store.get_job(job_id, caller.tenant_id)
        if row is None:
            raise not_found(f"job {job_id} not found")
        return row

    def job_message(self, row: JobRecord) -> common_pb2.Job:
        """The full Job message, with queue position and estimate while queued."""
        tenant = str(row.tenant_id)
        job = job_proto(
            row,
            self.request_of(row),
            self.store.checkpoints(row.job_id),
            lambda host: self.shown(tenant, host),
        )
        if row.status == S.JOB_STATUS_QUEUED:
            job.queue_position = self.store.queue_position(
                row.queue_name,
                row.priority,
                row.queued_at,
                row.job_id,
                S.JOB_STATUS_QUEUED,
            )
            job.estimated_wait_seconds = self._estimates.get(row.job_id, 0)
        return job

    def is_active(self, job_id: str) -> bool:
        """True while a process (or its bookkeeping) for the job exists."""
        return job_id in self._runtimes

    def final_status(self, job_id: str) -> int | None:
        """The job's status once it is terminal and its bookkeeping is done, else None."""
        # Memory first: for a running job (what stream followers mostly wake for) no query.
        if self.is_active(job_id):
            return None
        status = self.store.job_status(job_id) or 0
        return status if status in TERMINAL else None

    def process_stats(self, job_id: str) -> dict[str, float]:
        """cpu_percent and memory_used_bytes of the job's process (empty when none)."""
        rt = self._runtimes.get(job_id)
        if rt is None or rt.run is None:
            return {}
        return self.executor.stats(rt.run)

    def log(self, job_id: str, message: str, level: int = L.LOG_LEVEL_INFO) -> None:
        """Persist a coordinator log entry for a job and wake its followers."""
        rt = self._runtimes.get(job_id)
        self.store.append_logs(job_id, [clog(message, level, rt.node_id if rt else "")])
        self.notifier.notify(job_id, LOGS)

    def _transition(
        self,
        job_id: str,
        expected: Sequence[int] | frozenset[int],
        new: int,
        fields: dict[str, Any] | None = None,
        message: str = "",
        level: int = L.LOG_LEVEL_INFO,
    ) -> bool:
        row_status = self.store.job_status(job_id)
        if row_status is None or row_status not in expected:
            return False
        fields = dict(fields or {})
        if new in TERMINAL:
            fields.setdefault("completed_at", time.time())
        if message:
            fields.setdefault("status_message", message)
        rt = self._runtimes.get(job_id)
        text = f"{status_name(row_status)} → {status_name(new)}" + (
            f": {message}" if message else ""
        )
        ok = self.store.transition(
            job_id, [row_status], new, fields, [clog(text, level, rt.node_id if rt else "")]
        )
        if ok:
            self.notifier.notify(job_id)
        return ok

    def latest_checkpoint_path(self, job_id: str, fallback: str) -> str:
        """The newest checkpoint of the job that still exists on disk, else `fallback`."""
        # A recorded checkpoint may be gone (pruned by keep_last_checkpoints in a process that
        # outlived its coordinator); resuming from it would fail, so the newest existing wins.
        for ckpt in reversed(self.store.checkpoints(job_id)):
            if Path(ckpt.path).exists():
                return ckpt.path
        return fallback

    def _named_checkpoint(self, caller: CallerContext, checkpoint_id: str) -> CheckpointRecord:
        """A checkpoint of the tenant that still exists on disk."""
        ckpt = self.store.checkpoint(checkpoint_id)
        if ckpt is None or self.store.get_job(ckpt.job_id, caller.tenant_id) is None:
            raise not_found(f"checkpoint {checkpoint_id} not found")
        if not Path(ckpt.path).exists():
            raise precondition(f"checkpoint {checkpoint_id} no longer exists on disk")
        return ckpt

    def _resolve_checkpoint(self, caller: CallerContext, ref: str, field_name: str) -> str:
        """A checkpoint id of the tenant, or a directory the tenant may name, to a host path."""
        ckpt = self.store.checkpoint(ref)
        if ckpt is not None and self.store.get_job(ckpt.job_id, caller.tenant_id) is not None:
            return ckpt.path
        path = self.files.for_tenant(caller.tenant_id, caller.scaidrive_token).resolve(
            ref, field_name
        )
        if not path.is_dir():
            raise invalid(f"{field_name}: {ref} is neither a checkpoint id nor a directory")
        return str(path)

    def runtime_limit(self, workload: Workload, row: JobRecord) -> int:
        """Seconds one attempt may run: the job's own limit within the operator's maximum,
        which also applies to jobs (and evaluations) that set none. 0 = no limit."""
        own, most = workload.max_runtime_seconds(row), self.config.max_runtime_seconds
        return min(own, most) if own and most else own or most

    def keep_last(self, req: coordinator_pb2.SubmitJobRequest) -> int:
        """How many checkpoints a job keeps (output_config.keep_last_checkpoints, else the
        coordinator's default: a long run must not keep hundreds)."""
        return req.output_config.keep_last_checkpoints or self.config.default_keep_last_checkpoints

    def shown(self, tenant_id: str, host: str) -> str:
        """A host path as a log line or message shows it (scaidrive:// or just its name)."""
        return self.files.display(tenant_id, host) if host else ""

    def request_of(self, row: JobRecord) -> coordinator_pb2.SubmitJobRequest:
        """The job's (immutable) definition, parsed once: every scheduler pass and read uses it.

        Shared: callers that change it must work on a copy.
        """
        job_id = row.job_id
        req = self._parsed.get(job_id)
        if req is None:
            if len(self._parsed) > 50_000:
                self._parsed.clear()
            req = self._parsed[job_id] = coordinator_pb2.SubmitJobRequest.FromString(row.request)
        return req

    # Provided by the other parts (scheduler.py, runner.py, commands.py).

    def schedule(self) -> None:
        raise NotImplementedError

    def _start(self, row: JobRecord, placement: list[tuple[str, int]]) -> None:
        raise NotImplementedError

    def _request_stop(self, rt: JobRuntime, reason: str, graceful: bool) -> None:
        raise NotImplementedError

    def _auto_retry(self, job_id: str, why: str) -> None:
        raise NotImplementedError

    def node_status(self, node_id: str) -> int:
        raise NotImplementedError

    def phase(self, rt: JobRuntime, phase: str) -> None:
        raise NotImplementedError

    def record_checkpoint(
        self, rt: JobRuntime, req: coordinator_pb2.SubmitJobRequest, event: dict[str, Any]
    ) -> None:
        raise NotImplementedError
