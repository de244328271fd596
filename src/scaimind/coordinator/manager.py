"""The coordinator's core: job state machine, scheduler and the training workload.

Every state change is a compare-and-set on the status column (`Store.transition`), so a late
"process finished" can never overwrite CANCELLED or PAUSED. All of this runs on one event loop;
the methods that touch the database never await in the middle of a read-modify-write.

Choices where the spec leaves room (documented for operators):
- CHECKPOINTING is the state while a stop that saves a checkpoint (pause, preemption, shutdown)
  waits for the process to write it; periodic checkpoints are recorded without a state change
  because they are already complete on disk when reported.
- `training_config.max_retries` drives automatic retries after PREEMPTED (scheduler preemption,
  forced drain, coordinator crash) and after FAILED with code EXIT_CODE: a child job with
  `parent_job_id`, `retry_count + 1`, resuming from the latest checkpoint.
- A clean coordinator shutdown SIGTERMs running jobs and puts them back to QUEUED (keeping
  their place in the queue) with their latest checkpoint as resume point; this consumes no
  retry. A crash is detected at the next start: those jobs become PREEMPTED ("coordinator
  restarted") and are retried when max_retries allows. Runs of an executor that outlive the
  coordinator (Ray jobs) are left running by a shutdown and adopted by the next start.
- Within a queue a job that does not fit blocks later jobs of the same gpu_type (no backfill),
  so a big high-priority job is never starved by a stream of small ones.
- FIFO among equal priorities is by the time a job (re-)entered the queue: submission, resume
  or automatic retry; a job re-queued by a coordinator shutdown keeps its original place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import secrets
import shutil
import signal
import sqlite3
import stat
import statistics
import time
from collections import Counter, deque
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.convert import (
    NON_TERMINAL,
    RUNNING,
    TERMINAL,
    S,
    as_status,
    job_proto,
    node_status_name,
    status_name,
)
from scaimind.coordinator.dataset_cache import DatasetCache
from scaimind.coordinator.errors import CoordinatorError, invalid, not_found, precondition
from scaimind.coordinator.executor import OutputSink, ProcessSpec
from scaimind.coordinator.executors.base import (
    Executor,
    ExecutorError,
    Inventory,
    LaunchSpec,
    Placement,
    RunExit,
    RunHandle,
    kind_of,
)
from scaimind.coordinator.executors.base import os_message as _os_message
from scaimind.coordinator.executors.local import LocalExecutor
from scaimind.coordinator.inventory import CPU, NodeSpec
from scaimind.coordinator.jobfiles import JobFiles
from scaimind.coordinator.notifier import LOGS, JobNotifier, wait_event
from scaimind.coordinator.ops_store import OpsStore
from scaimind.coordinator.sandbox import Sandbox
from scaimind.coordinator.storage import storage_root
from scaimind.coordinator.store import (
    CheckpointRecord,
    IdempotencyConflict,
    PendingLog,
    Store,
)
from scaimind.coordinator.validation import (
    canonical_gpu_type,
    eligible_nodes,
    priority_of,
    validate_resources,
    validate_submit,
)
from scaimind.v1 import cluster_pb2, common_pb2, coordinator_pb2

log = logging.getLogger(__name__)

L = common_pb2.LogLevel
EXIT_CHECKPOINTED = 75
DEFAULT_QUEUE = "default"
# Assumed duration of a job when nothing has completed yet (for wait estimates only).
_DEFAULT_JOB_SECONDS = 60.0
_TICK_SECONDS = 0.5
# Retry-After of a full tenant quota: long enough for some queued work to finish.
_QUOTA_RETRY_AFTER_SECONDS = 30

# Idempotency keys of one tenant are namespaced per operation: a key first used on a submit
# never answers a retry (or an evaluation, "evaluation:") with that job.
SUBMIT_KEY = "submit:"
RETRY_KEY = "retry:"

# Stop reasons: what the coordinator asked the process to do, decided before its exit.
CANCEL, PAUSE, PREEMPT, SHUTDOWN, TIMEOUT = "cancel", "pause", "preempt", "shutdown", "timeout"
TRAINING = "training"


class Workload(Protocol):
    """What a job type runs: its process, how its output is read, what success records.

    The manager owns everything generic (states, slots, signals, stop reasons, logs of the
    coordinator); a workload only describes its process. Jobs carry their type in `job_type`.
    """

    preparing: str  # status message of PREPARING

    async def prepare(
        self, m: JobManager, rt: JobRuntime, row: sqlite3.Row, attempt: int
    ) -> ProcessSpec:
        """PREPARING: resolve inputs and write files; CoordinatorError/OSError = DATA_ERROR."""
        ...

    def sink(self, m: JobManager, rt: JobRuntime, row: sqlite3.Row) -> OutputSink:
        """Receiver of the process's output and events."""
        ...

    def max_runtime_seconds(self, row: sqlite3.Row) -> int:
        """Runtime limit of one attempt (0 = none)."""
        ...

    def describe(self, m: JobManager, row: sqlite3.Row) -> str:
        """What runs, for the job's log (no server paths)."""
        ...

    def completed(
        self, m: JobManager, rt: JobRuntime, row: sqlite3.Row
    ) -> tuple[dict[str, Any], str]:
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


class JobManager:
    """Owns jobs, slots and processes."""

    def __init__(
        self,
        config: CoordinatorConfig,
        nodes: list[NodeSpec],
        store: Store,
        workloads: Mapping[str, Workload] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.config = config
        # Where processes run (executors/): child processes here, or Ray jobs.
        self.executor: Executor = executor or LocalExecutor(config.inventory_path)
        if workloads is None:
            # Imported here: the training workload builds on this module.
            from scaimind.coordinator.evaluations import EVALUATION, EvaluationWorkload
            from scaimind.coordinator.workloads import TrainingWorkload

            workloads = {TRAINING: TrainingWorkload(), EVALUATION: EvaluationWorkload()}
        # job_type -> what its process is; an evaluation workload registers "evaluation".
        self.workloads = dict(workloads)
        self.nodes = nodes
        self._node_by_id = {n.node_id: n for n in nodes}
        self.store = store
        # Evaluations, the dataset cache and data-access tokens (evaluations.py, dataset_cache.py).
        self.ops = OpsStore(config.data_dir / "ops.db")
        self.sandbox = Sandbox(
            config.sandbox, protected=(*config.service_dirs, storage_root(config))
        )
        # Paths tenants may name, where jobs write, what a process sees (jobfiles.py, paths.py).
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

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the previous run (adopting runs that outlived it) and start the
        scheduler."""
        await self._recover()
        self.schedule()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        # Events (submit, exit, resume, enable) schedule immediately; the tick only covers
        # time-based conditions: start_after, max_queue_wait_seconds and fresher estimates,
        # and an inventory that changes (a Ray cluster's nodes).
        while not self._closing:
            await asyncio.sleep(_TICK_SECONDS)
            try:
                await self._refresh_inventory()
                self.schedule()
            except Exception:
                log.exception("scheduler pass failed")

    async def _refresh_inventory(self) -> None:
        every = self.executor.refresh_seconds
        if every <= 0 or time.monotonic() - self._inventory_read < every:
            return
        self._inventory_read = time.monotonic()
        try:
            inventory = await self.executor.inventory()
        except ExecutorError as e:
            log.warning("cannot read the inventory: %s", e)
            return
        self.apply_inventory(inventory)

    def apply_inventory(self, inventory: Inventory) -> None:
        """New nodes get slots; a node that is gone takes no new work (OFFLINE while its jobs'
        runs end on their own) and leaves the list once it holds no job."""
        current = {n.node_id for n in inventory.nodes}
        for node in inventory.nodes:
            if node.node_id not in self._node_by_id:
                self.nodes.append(node)
                self._node_by_id[node.node_id] = node
                self._slots[node.node_id] = [None] * node.gpu_count
                log.info("node %s joined (%d× %s)", node.node_id, node.gpu_count, node.gpu_type)
        for node_id in set(self._node_by_id) - current:
            if all(j is None for j in self._slots[node_id]):
                self.nodes.remove(self._node_by_id.pop(node_id))
                del self._slots[node_id]
        self._offline = set(self._node_by_id) - current
        self._busy = set(inventory.busy) & set(self._node_by_id)

    async def _recover(self) -> None:
        now = time.time()
        for row in self.store.jobs_in_status([S.JOB_STATUS_PENDING]):
            self.store.transition(
                row["job_id"],
                [S.JOB_STATUS_PENDING],
                S.JOB_STATUS_QUEUED,
                {"queued_at": row["queued_at"] or now},
                [_clog("PENDING → QUEUED (coordinator restarted)")],
            )
        for row in self.store.jobs_in_status(RUNNING):
            job_id = row["job_id"]
            run_id = str(row["run_id"])
            if run_id and await self._adopt(row):
                continue
            if kind_of(run_id) not in ("", self.executor.kind):
                log.warning(
                    "job %s ran as %s, which this coordinator's %s executor cannot reach; if "
                    "it still runs, stop it there (its retry would run twice)",
                    job_id,
                    run_id,
                    self.executor.kind,
                )
            if run_id:
                self.executor.discard(run_id)
            resume = self.latest_checkpoint_path(job_id, row["resume_checkpoint"])
            msg = "coordinator restarted while the job was running"
            ok = self.store.transition(
                job_id,
                RUNNING,
                S.JOB_STATUS_PREEMPTED,
                {"status_message": msg, "resume_checkpoint": resume, "run_id": ""},
                [_clog(f"{status_name(row['status'])} → PREEMPTED: {msg}", L.LOG_LEVEL_WARNING)],
            )
            if ok:
                self._auto_retry(job_id, "coordinator restarted")

    async def _adopt(self, row: sqlite3.Row) -> bool:
        """A run that outlived the previous coordinator (a Ray job): follow it again instead of
        restarting the job. False when the executor cannot reach it (it is then discarded)."""
        job_id, run_id = str(row["job_id"]), str(row["run_id"])
        if kind_of(run_id) != self.executor.kind:
            return False
        try:
            run = await self.executor.adopt(run_id, job_id, int(row["run_delivered"]))
        except ExecutorError as e:
            log.warning("job %s: cannot adopt %s: %s", job_id, run_id, e)
            return False
        if run is None:
            return False
        need = max(int(row["gpu_count"]), 1)
        placement: list[tuple[str, int]] = []
        for node_id in json.loads(row["assigned_nodes"] or "[]"):
            free = [i for i, j in enumerate(self._slots.get(node_id, [])) if j is None]
            placement.extend((node_id, i) for i in free[:need])
        rt = JobRuntime(
            job_id=job_id,
            tenant_id=row["tenant_id"],
            queue_name=row["queue_name"],
            slots=placement,
            node_ids=sorted({nid for nid, _ in placement}),
            run=run,
            spec=run.process,
        )
        for nid, i in placement:
            self._slots[nid][i] = job_id
        self._runtimes[job_id] = rt
        self.log(job_id, f"coordinator restarted; {run.label} is still there and is followed again")
        if row["status"] == S.JOB_STATUS_CHECKPOINTING:
            # Why it was stopping died with the previous coordinator: a preemption, so the
            # job continues from its checkpoint (as a retry when max_retries allows).
            rt.stop_reason, rt.graceful = PREEMPT, True
            self._signal(rt)
        workload = self.workloads[row["job_type"]]
        rt.task = asyncio.get_running_loop().create_task(
            self._run(rt, self._follow(rt, row, workload, run))
        )
        return True

    def begin_shutdown(self) -> None:
        """Stop placing work; running jobs checkpoint and stop, or, when their runs outlive the
        coordinator (Ray), keep running and are adopted by the next start."""
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
        for rt in list(self._runtimes.values()):
            if self.executor.keeps_running and rt.run is not None:
                rt.detached = True
                if rt.task is not None:
                    rt.task.cancel()
            elif rt.stop_reason is None:
                self._request_stop(rt, SHUTDOWN, graceful=True)
        # Followers end with UNAVAILABLE instead of holding the server open for the grace period.
        self.notifier.close()

    async def wait_stopped(self, grace: float) -> None:
        """Wait for every job process to exit; SIGKILL what is left after `grace` seconds."""
        tasks = [rt.task for rt in self._runtimes.values() if rt.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                for rt in list(self._runtimes.values()):
                    if rt.run is not None and not rt.detached:
                        self.executor.kill(rt.run)
                await asyncio.wait(pending, timeout=10)
        if self._ticker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.executor.close()

    # ---- helpers ----------------------------------------------------------------------------

    def caller_job(self, caller: CallerContext, job_id: str) -> sqlite3.Row:
        """The caller's job or NOT_FOUND (another tenant's job is indistinguishable)."""
        if not job_id:
            raise invalid("job_id: is required")
        row = self.store.get_job(job_id, caller.tenant_id)
        if row is None:
            raise not_found(f"job {job_id} not found")
        return row

    def job_message(self, row: sqlite3.Row) -> common_pb2.Job:
        """The full Job message, with queue position and estimate while queued."""
        tenant = str(row["tenant_id"])
        job = job_proto(
            row,
            self.request_of(row),
            self.store.checkpoints(row["job_id"]),
            lambda host: self.shown(tenant, host),
        )
        if row["status"] == S.JOB_STATUS_QUEUED:
            job.queue_position = self.store.queue_position(
                row["queue_name"],
                row["priority"],
                row["queued_at"],
                row["job_id"],
                S.JOB_STATUS_QUEUED,
            )
            job.estimated_wait_seconds = self._estimates.get(row["job_id"], 0)
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
        self.store.append_logs(job_id, [_clog(message, level, rt.node_id if rt else "")])
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
            job_id, [row_status], new, fields, [_clog(text, level, rt.node_id if rt else "")]
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

    def runtime_limit(self, workload: Workload, row: sqlite3.Row) -> int:
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

    # ---- submit -----------------------------------------------------------------------------

    def submit(
        self, caller: CallerContext, req: coordinator_pb2.SubmitJobRequest
    ) -> coordinator_pb2.SubmitJobResponse:
        """Validate, persist and enqueue a job (idempotent per tenant and key)."""
        if caller.idempotency_key:
            existing = self.store.job_for_key(caller.tenant_id, SUBMIT_KEY + caller.idempotency_key)
            if existing is not None:
                return self._submit_replay(existing)
        files = self.files.for_tenant(caller.tenant_id, caller.scaidrive_token)
        validate_submit(req, self.nodes, files, self.config.max_runtime_seconds)
        self.executor.check_resources(req.resource_config, "resource_config")
        custom = req.training_config.framework.type == common_pb2.FRAMEWORK_TYPE_CUSTOM
        self.files.sandboxed(custom)
        output = (
            self.files.check_output(files, req.output_config.output_path)
            if req.output_config.output_path
            else None
        )
        resume = ""
        if req.training_config.resume_from_checkpoint:
            resume = self._resolve_checkpoint(
                caller,
                req.training_config.resume_from_checkpoint,
                "training_config.resume_from_checkpoint",
            )
        active = self.store.count_tenant_active(
            caller.tenant_id, NON_TERMINAL - {S.JOB_STATUS_PAUSED, S.JOB_STATUS_PREEMPTED}
        )
        if active >= self.config.tenant_queue_quota:
            raise CoordinatorError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"tenant {caller.tenant_id} already has {active} queued or running jobs "
                f"(quota {self.config.tenant_queue_quota})",
                retry_after=_QUOTA_RETRY_AFTER_SECONDS,
            )
        try:
            job_id = self._insert_job(
                caller,
                req,
                resume=resume,
                parent=None,
                key=SUBMIT_KEY + caller.idempotency_key if caller.idempotency_key else "",
            )
        except IdempotencyConflict as e:
            return self._submit_replay(e.job_id)
        if output is not None:
            self.ops.claim_output(str(output), caller.tenant_id, job_id)
        self.schedule()
        row = self.store.get_job(job_id)
        assert row is not None
        return coordinator_pb2.SubmitJobResponse(
            job_id=job_id,
            status=row["status"],
            message=f"job {job_id} accepted into queue {row['queue_name']!r}",
            estimated_wait_seconds=self._estimates.get(job_id, 0),
        )

    def _submit_replay(self, job_id: str) -> coordinator_pb2.SubmitJobResponse:
        row = self.store.get_job(job_id)
        assert row is not None
        return coordinator_pb2.SubmitJobResponse(
            job_id=job_id,
            status=row["status"],
            message=f"job {job_id} already submitted with this idempotency key",
            estimated_wait_seconds=self._estimates.get(job_id, 0),
        )

    def _insert_job(
        self,
        caller: CallerContext,
        req: coordinator_pb2.SubmitJobRequest,
        *,
        resume: str,
        parent: sqlite3.Row | None,
        note: str = "",
        key: str = "",
    ) -> str:
        """Persist a QUEUED job; `key` is its namespaced idempotency key (may be empty)."""
        job_id = "job_" + secrets.token_hex(8)
        now = time.time()
        tc, rc, sc = req.training_config, req.resource_config, req.scheduling_config
        gpu_type = canonical_gpu_type(rc.gpu_type, self.nodes) or ""
        start_after = sc.start_after.ToNanoseconds() / 1e9 if sc.HasField("start_after") else 0.0
        fields: dict[str, Any] = {
            "job_id": job_id,
            "tenant_id": caller.tenant_id,
            "user_id": caller.user_id,
            "name": req.name,
            "status": S.JOB_STATUS_QUEUED,
            "status_message": note or "waiting for slots",
            "request": req.SerializeToString(),
            "labels": json.dumps(dict(req.labels), sort_keys=True),
            "parent_job_id": parent["job_id"] if parent is not None else "",
            "retry_count": int(parent["retry_count"]) + 1 if parent is not None else 0,
            "max_retries": tc.max_retries,
            "priority": priority_of(tc),
            "queue_name": sc.queue_name or DEFAULT_QUEUE,
            "preemptible": int(sc.preemptible),
            "gpu_type": gpu_type,
            "gpu_count": rc.gpu_count,
            "num_nodes": max(rc.num_nodes, 1),
            "resume_checkpoint": resume,
            "start_after": start_after,
            "max_queue_wait": float(sc.max_queue_wait_seconds),
            "created_at": now,
            "queued_at": now,
            "updated_at": now,
        }
        if resume and parent is not None:
            # A child resuming from its parent's checkpoint starts at that step, not at 0.
            step = next(
                (c.step for c in self.store.checkpoints(parent["job_id"]) if c.path == resume), None
            )
            if step is not None:
                fields.update(current_step=step, total_steps=parent["total_steps"])
        origin = (
            f" (retry {fields['retry_count']} of {parent['job_id']})" if parent is not None else ""
        )
        logs = [
            _clog(f"job submitted{origin}: {status_name(S.JOB_STATUS_PENDING)}"),
            _clog(
                f"PENDING → QUEUED: queue {fields['queue_name']!r}, priority {fields['priority']}, "
                f"needs {max(rc.gpu_count, 1) * fields['num_nodes']} slot(s) "
                f"of {gpu_type or 'any type'}"
                + (f", resuming from {self.shown(caller.tenant_id, resume)}" if resume else "")
            ),
        ]
        self.store.insert_job(fields, logs, key or None)
        return job_id

    # ---- cancel / pause / resume / retry -----------------------------------------------------

    def cancel(
        self, caller: CallerContext, job_id: str, reason: str
    ) -> coordinator_pb2.JobActionResponse:
        """Any non-terminal job → CANCELLED; a running process is killed."""
        row = self.caller_job(caller, job_id)
        status = row["status"]
        if status in TERMINAL:
            raise precondition(
                f"job {job_id} is {status_name(status)}; only non-terminal jobs can be cancelled"
            )
        message = "cancelled" + (f": {reason}" if reason else "")
        if not self._transition(
            job_id, NON_TERMINAL, S.JOB_STATUS_CANCELLED, {"error_code": ""}, message
        ):
            now = self.store.job_status(job_id) or 0
            raise precondition(
                f"job {job_id} is {status_name(now)}; only non-terminal jobs can be cancelled"
            )
        rt = self._runtimes.get(job_id)
        if rt is not None:
            self._request_stop(rt, CANCEL, graceful=False)
        self.schedule()
        return coordinator_pb2.JobActionResponse(
            job_id=job_id, status=S.JOB_STATUS_CANCELLED, message=message
        )

    async def pause(
        self,
        caller: CallerContext,
        job_id: str,
        save_checkpoint: bool,
        wait_seconds: float | None = None,
    ) -> coordinator_pb2.JobActionResponse:
        """Stop a running job (checkpointing first when asked) and free its slots → PAUSED.

        Waits for the process to exit, at most `wait_seconds` (the caller's deadline); when the
        checkpoint takes longer the answer is the current state (CHECKPOINTING) and the job
        still becomes PAUSED once the process exits.
        """
        row = self.caller_job(caller, job_id)
        status = row["status"]
        if status not in RUNNING:
            raise precondition(
                f"job {job_id} is {status_name(status)}; only running jobs can be paused"
            )
        rt = self._runtimes.get(job_id)
        if rt is None:
            # Bookkeeping without a runtime cannot happen in one process lifetime; stay truthful.
            self._transition(job_id, RUNNING, S.JOB_STATUS_PAUSED, {}, "paused")
        else:
            if rt.stop_reason is not None:
                raise precondition(
                    f"job {job_id} is {status_name(status)} and already stopping ({rt.stop_reason})"
                )
            self._request_stop(rt, PAUSE, graceful=save_checkpoint)
            limit = self.config.stop_grace_seconds + 15
            if wait_seconds is not None:
                limit = min(limit, max(wait_seconds, 0.0))
            await wait_event(rt.done, limit)
        final = self.store.job_status(job_id) or 0
        ckpt = self.store.checkpoints(job_id)
        where = f"; latest checkpoint at step {ckpt[-1].step}" if ckpt else ""
        return coordinator_pb2.JobActionResponse(
            job_id=job_id,
            status=as_status(final),
            message=f"job is {status_name(final)}{where}",
        )

    def resume(
        self, caller: CallerContext, job_id: str, checkpoint_id: str
    ) -> coordinator_pb2.JobActionResponse:
        """PAUSED → QUEUED, continuing from the named or latest checkpoint."""
        row = self.caller_job(caller, job_id)
        if row["status"] != S.JOB_STATUS_PAUSED:
            raise precondition(
                f"job {job_id} is {status_name(row['status'])}; only paused jobs can be resumed"
            )
        if checkpoint_id:
            resume = self._named_checkpoint(caller, checkpoint_id).path
            where = f"checkpoint {checkpoint_id}"
        else:
            resume = self.latest_checkpoint_path(job_id, row["resume_checkpoint"])
            where = (
                f"checkpoint {self.shown(caller.tenant_id, resume)}"
                if resume
                else "the beginning (no checkpoint)"
            )
        message = f"resumed; continues from {where}"
        if not self._transition(
            job_id,
            [S.JOB_STATUS_PAUSED],
            S.JOB_STATUS_QUEUED,
            {"resume_checkpoint": resume, "queued_at": time.time()},
            message,
        ):
            now = self.store.job_status(job_id) or 0
            raise precondition(
                f"job {job_id} is {status_name(now)}; only paused jobs can be resumed"
            )
        self.schedule()
        return coordinator_pb2.JobActionResponse(
            job_id=job_id, status=S.JOB_STATUS_QUEUED, message=message
        )

    def retry(
        self, caller: CallerContext, req: coordinator_pb2.RetryJobRequest
    ) -> coordinator_pb2.RetryJobResponse:
        """A FAILED or PREEMPTED job → a new child job from its latest (or a named) checkpoint."""
        key = f"{RETRY_KEY}{req.job_id}:{caller.idempotency_key}" if caller.idempotency_key else ""
        if key:
            existing = self.store.job_for_key(caller.tenant_id, key)
            if existing is not None:
                child = self.store.get_job(existing)
                assert child is not None
                return coordinator_pb2.RetryJobResponse(
                    job_id=existing,
                    parent_job_id=child["parent_job_id"],
                    status=child["status"],
                    message="already retried with this idempotency key",
                )
        parent = self.caller_job(caller, req.job_id)
        if parent["status"] not in (S.JOB_STATUS_FAILED, S.JOB_STATUS_PREEMPTED):
            raise precondition(
                f"job {req.job_id} is {status_name(parent['status'])}; "
                "only FAILED or PREEMPTED jobs can be retried"
            )
        submit = coordinator_pb2.SubmitJobRequest.FromString(parent["request"])
        if req.modify_resources:
            if not req.HasField("new_resource_config"):
                raise invalid("new_resource_config: is required when modify_resources is true")
            validate_resources(req.new_resource_config, self.nodes, "new_resource_config")
            self.executor.check_resources(req.new_resource_config, "new_resource_config")
            submit.resource_config.CopyFrom(req.new_resource_config)
            if not eligible_nodes(submit.resource_config, submit.scheduling_config, self.nodes):
                raise invalid(
                    "new_resource_config: no node matches it together with the job's "
                    "node_selector and node_affinity"
                )
        if req.checkpoint_id:
            resume = self._named_checkpoint(caller, req.checkpoint_id).path
        else:
            resume = self.latest_checkpoint_path(parent["job_id"], parent["resume_checkpoint"])
        try:
            child_id = self._insert_job(
                CallerContext(caller.tenant_id, caller.user_id or parent["user_id"]),
                submit,
                resume=resume,
                parent=parent,
                note=f"retry of {parent['job_id']}",
                key=key,
            )
        except IdempotencyConflict as e:
            child_id = e.job_id
        self.log(parent["job_id"], f"retried as job {child_id}")
        self.schedule()
        child = self.store.get_job(child_id)
        assert child is not None
        return coordinator_pb2.RetryJobResponse(
            job_id=child_id,
            parent_job_id=parent["job_id"],
            status=child["status"],
            message=f"job {child_id} retries {parent['job_id']}"
            + (
                f" from {self.shown(caller.tenant_id, resume)}" if resume else " from the beginning"
            ),
        )

    def _auto_retry(self, job_id: str, why: str) -> None:
        row = self.store.get_job(job_id)
        if row is None or self._closing or row["retry_count"] >= row["max_retries"]:
            return
        submit = coordinator_pb2.SubmitJobRequest.FromString(row["request"])
        resume = self.latest_checkpoint_path(job_id, row["resume_checkpoint"])
        child_id = self._insert_job(
            CallerContext(row["tenant_id"], row["user_id"]),
            submit,
            resume=resume,
            parent=row,
            note=f"automatic retry of {job_id} ({why})",
        )
        self.log(
            job_id,
            f"automatically retried as job {child_id} ({why}; "
            f"retry {row['retry_count'] + 1} of {row['max_retries']})",
        )

    # ---- scheduler --------------------------------------------------------------------------

    def node_status(self, node_id: str) -> int:
        """ONLINE, DRAINING (drained, still running work), DRAINED or OFFLINE (gone)."""
        if node_id in self._offline:
            return cluster_pb2.NODE_STATUS_OFFLINE
        if node_id not in self._drained:
            return cluster_pb2.NODE_STATUS_ONLINE
        busy = any(j is not None for j in self._slots[node_id])
        return cluster_pb2.NODE_STATUS_DRAINING if busy else cluster_pb2.NODE_STATUS_DRAINED

    def slots_of(self, node_id: str) -> list[str | None]:
        """Job id per slot of a node (None when free)."""
        return list(self._slots[node_id])

    def drain(self, node_id: str, force: bool, reason: str) -> None:
        """Stop placing work on a node; `force` preempts what runs there."""
        if node_id not in self._node_by_id:
            raise not_found(f"node {node_id} not found")
        if node_id in self._drained:
            raise precondition(
                f"node {node_id} is {node_status_name(self.node_status(node_id))}; "
                "it is already drained"
            )
        self._drained[node_id] = reason
        self.store.set_node_state(node_id, True, reason)
        if force:
            for job_id in {j for j in self._slots[node_id] if j is not None}:
                rt = self._runtimes.get(job_id)
                if rt is not None and rt.stop_reason is None:
                    self.log(
                        job_id,
                        f"node {node_id} is being drained (force); preempting",
                        L.LOG_LEVEL_WARNING,
                    )
                    self._request_stop(rt, PREEMPT, graceful=True)
        self.schedule()

    def enable(self, node_id: str) -> None:
        """Re-open a drained node."""
        if node_id not in self._node_by_id:
            raise not_found(f"node {node_id} not found")
        if node_id not in self._drained:
            raise precondition(
                f"node {node_id} is ONLINE; only drained or disabled nodes can be enabled"
            )
        del self._drained[node_id]
        self.store.set_node_state(node_id, False, "")
        self.schedule()

    def drain_reason(self, node_id: str) -> str:
        """Why a node is drained ('' when online)."""
        return self._drained.get(node_id, "")

    def schedule(self) -> None:
        """One scheduler pass: expire, place, preempt, estimate. Synchronous and cheap."""
        if self._closing or self._in_pass:
            return
        self._in_pass = True
        try:
            self._schedule_pass()
        finally:
            self._in_pass = False

    def request_of(self, row: sqlite3.Row) -> coordinator_pb2.SubmitJobRequest:
        """The job's (immutable) definition, parsed once: every scheduler pass and read uses it.

        Shared: callers that change it must work on a copy.
        """
        job_id = row["job_id"]
        req = self._parsed.get(job_id)
        if req is None:
            if len(self._parsed) > 50_000:
                self._parsed.clear()
            req = self._parsed[job_id] = coordinator_pb2.SubmitJobRequest.FromString(row["request"])
        return req

    def _free_slots(self) -> dict[str, list[int]]:
        return {
            nid: [i for i, j in enumerate(slots) if j is None]
            for nid, slots in self._slots.items()
            if nid not in self._drained and nid not in self._offline and nid not in self._busy
        }

    def _schedule_pass(self) -> None:
        now = time.time()
        free = self._free_slots()
        blocked: set[tuple[str, str]] = set()
        queued = self.store.jobs_in_status([S.JOB_STATUS_QUEUED])
        waiting: list[tuple[sqlite3.Row, list[NodeSpec]]] = []
        for row in queued:
            job_id = row["job_id"]
            if row["max_queue_wait"] > 0 and now - row["queued_at"] > row["max_queue_wait"]:
                why = f"not started within max_queue_wait_seconds={int(row['max_queue_wait'])}"
                self._transition(
                    job_id,
                    [S.JOB_STATUS_QUEUED],
                    S.JOB_STATUS_FAILED,
                    {"error_code": "QUEUE_TIMEOUT", "error_message": why},
                    why,
                    L.LOG_LEVEL_ERROR,
                )
                continue
            req = self.request_of(row)
            candidates = eligible_nodes(req.resource_config, req.scheduling_config, self.nodes)
            if len(candidates) < row["num_nodes"]:
                # Only after an inventory change (submit validates this): it can never start.
                why = "no longer fits the inventory (gpu_type, node_selector, node_affinity)"
                self._transition(
                    job_id,
                    [S.JOB_STATUS_QUEUED],
                    S.JOB_STATUS_FAILED,
                    {"error_code": "UNSCHEDULABLE", "error_message": why},
                    why,
                    L.LOG_LEVEL_ERROR,
                )
                continue
            due = row["start_after"] <= now
            if not (due and self._try_start(row, candidates, free, blocked)):
                waiting.append((row, candidates))
        self._estimate(waiting)

    def _try_start(
        self,
        row: sqlite3.Row,
        candidates: list[NodeSpec],
        free: dict[str, list[int]],
        blocked: set[tuple[str, str]],
    ) -> bool:
        """Start a due job if it fits now; else it may block its queue and preempt for itself."""
        key = (row["queue_name"], row["gpu_type"])
        if key in blocked:
            return False
        placement = self._place(row, candidates, free)
        if placement is not None:
            self._start(row, placement)
            return True
        closed = self._drained.keys() | self._offline | self._busy
        online = [n for n in candidates if n.node_id not in closed]
        if len(online) >= row["num_nodes"]:
            # It could run here once slots free up: keep its place (no backfill behind it).
            blocked.add(key)
            self._maybe_preempt(row, online, free)
        return False

    def _place(
        self, row: sqlite3.Row, candidates: list[NodeSpec], free: dict[str, list[int]]
    ) -> list[tuple[str, int]] | None:
        need = max(int(row["gpu_count"]), 1)
        fits = [n for n in candidates if len(free.get(n.node_id, [])) >= need]
        if len(fits) < row["num_nodes"]:
            return None
        # Best fit: the fullest nodes first keeps big holes for big jobs.
        fits.sort(key=lambda n: (len(free[n.node_id]), n.node_id))
        chosen: list[tuple[str, int]] = []
        for node in fits[: row["num_nodes"]]:
            take = free[node.node_id][:need]
            del free[node.node_id][:need]
            chosen.extend((node.node_id, i) for i in take)
        return chosen

    def _maybe_preempt(
        self, row: sqlite3.Row, online: list[NodeSpec], free: dict[str, list[int]]
    ) -> None:
        need = max(int(row["gpu_count"]), 1)
        ids = {n.node_id for n in online}
        # Slots of jobs already stopping count as free: they are about to be released.
        projected = {nid: len(free.get(nid, [])) for nid in ids}
        victims: list[tuple[int, float, JobRuntime]] = []
        for rt in self._runtimes.values():
            on_nodes = [(nid, i) for nid, i in rt.slots if nid in ids]
            if not on_nodes:
                continue
            if rt.stop_reason is not None:
                for nid, _ in on_nodes:
                    projected[nid] += 1
                continue
            vrow = self.store.get_job(rt.job_id)
            if vrow is None or not vrow["preemptible"] or vrow["priority"] >= row["priority"]:
                continue
            victims.append((int(vrow["priority"]), -rt.started_mono, rt))

        def fits() -> bool:
            return sum(1 for nid in ids if projected[nid] >= need) >= int(row["num_nodes"])

        if fits():
            return
        chosen: list[JobRuntime] = []
        for _, _, rt in sorted(victims, key=lambda v: (v[0], v[1])):
            chosen.append(rt)
            for nid, _ in rt.slots:
                if nid in ids:
                    projected[nid] += 1
            if fits():
                break
        else:
            return
        for rt in chosen:
            self.log(
                rt.job_id,
                f"preempted by job {row['job_id']} (priority {row['priority']}); checkpointing",
                L.LOG_LEVEL_WARNING,
            )
            self._request_stop(rt, PREEMPT, graceful=True)

    def _estimate(self, waiting: list[tuple[sqlite3.Row, list[NodeSpec]]]) -> None:
        """Seconds until each waiting job (with its eligible nodes) likely starts, by simulating
        the queue on the slots."""
        runtimes = self.store.recent_runtimes(S.JOB_STATUS_COMPLETED)
        typical = statistics.median(runtimes) if runtimes else _DEFAULT_JOB_SECONDS
        free_at: dict[str, list[float]] = {}
        for nid, slots in self._slots.items():
            if nid in self._drained or nid in self._offline:
                continue
            times = []
            for job_id in slots:
                rt = self._runtimes.get(job_id) if job_id else None
                times.append(rt.remaining_seconds(typical) if rt else 0.0)
            free_at[nid] = times
        now = time.time()
        estimates: dict[str, int] = {}
        view: dict[str, list[str]] = {}
        for row, candidates in waiting:
            view.setdefault(row["queue_name"], []).append(row["job_id"])
            need = max(int(row["gpu_count"]), 1)
            nodes = [n.node_id for n in candidates if n.node_id in free_at]
            options = []
            for nid in nodes:
                times = sorted(free_at[nid])
                if len(times) >= need:
                    options.append((times[need - 1], nid))
            options.sort()
            if len(options) < row["num_nodes"]:
                estimates[row["job_id"]] = 0
                continue
            chosen = options[: row["num_nodes"]]
            start = max(max(t for t, _ in chosen), row["start_after"] - now, 0.0)
            for _, nid in chosen:
                times = sorted(free_at[nid])
                times[:need] = [start + typical] * need
                free_at[nid] = times
            estimates[row["job_id"]] = math.ceil(start)
        self._estimates = estimates
        self._queue_view = view

    def queue_view(self) -> dict[str, list[str]]:
        """Queue name → waiting job ids in order, from the last scheduler pass."""
        return self._queue_view

    def estimate(self, job_id: str) -> int:
        """Estimated seconds until a queued job starts."""
        return self._estimates.get(job_id, 0)

    def running_in_queue(self, tenant_id: str | None = None) -> dict[str, int]:
        """Queue name → number of placed jobs (of one tenant, when given)."""
        return dict(
            Counter(
                rt.queue_name
                for rt in self._runtimes.values()
                if tenant_id is None or rt.tenant_id == tenant_id
            )
        )

    def _start(self, row: sqlite3.Row, placement: list[tuple[str, int]]) -> None:
        job_id = row["job_id"]
        node_ids = sorted({nid for nid, _ in placement})
        fields: dict[str, Any] = {
            "assigned_nodes": json.dumps(node_ids),
            "status_message": "placed",
        }
        if not row["started_at"]:
            fields["started_at"] = time.time()
        slots_text = ", ".join(f"{nid}#{i}" for nid, i in placement)
        if not self._transition(
            job_id,
            [S.JOB_STATUS_QUEUED],
            S.JOB_STATUS_SCHEDULING,
            fields,
            f"placed on {slots_text}",
        ):
            return
        rt = JobRuntime(
            job_id=job_id,
            tenant_id=row["tenant_id"],
            queue_name=row["queue_name"],
            slots=placement,
            node_ids=node_ids,
        )
        for nid, i in placement:
            self._slots[nid][i] = job_id
        self._runtimes[job_id] = rt
        rt.task = asyncio.get_running_loop().create_task(self._run(rt))

    # ---- stopping ---------------------------------------------------------------------------

    def _request_stop(self, rt: JobRuntime, reason: str, graceful: bool) -> None:
        """Decide why the process stops, then signal it (now, or as soon as it exists)."""
        if rt.stop_reason == CANCEL:
            return
        rt.stop_reason = reason
        rt.graceful = graceful
        if graceful:
            self._transition(
                rt.job_id,
                [S.JOB_STATUS_TRAINING],
                S.JOB_STATUS_CHECKPOINTING,
                {},
                f"{reason}: writing a checkpoint before stopping",
            )
        self._signal(rt)

    def _signal(self, rt: JobRuntime) -> None:
        if rt.run is None or rt.stop_reason is None:
            return
        if rt.graceful:
            self.executor.stop(rt.run, self.config.stop_grace_seconds)
        else:
            self.executor.kill(rt.run)

    # ---- the training workload ---------------------------------------------------------------

    async def _run(self, rt: JobRuntime, body: Coroutine[Any, Any, None] | None = None) -> None:
        try:
            await (body if body is not None else self._run_job(rt))
        except Exception as e:
            log.exception("job %s: executor failure", rt.job_id)
            if rt.run is not None:
                self.executor.kill(rt.run)
            self._transition(
                rt.job_id,
                RUNNING,
                S.JOB_STATUS_FAILED,
                {
                    "error_code": "INTERNAL",
                    "error_message": f"coordinator error: {type(e).__name__}",
                },
                f"coordinator error: {type(e).__name__}",
                L.LOG_LEVEL_ERROR,
            )
        finally:
            # A detached run goes on without this coordinator; the next one adopts it.
            if not rt.detached:
                for nid, i in rt.slots:
                    if self._slots[nid][i] == rt.job_id:
                        self._slots[nid][i] = None
                if rt.run is not None:
                    self.executor.release(rt.run)
                    self.store.update_job(rt.job_id, {"run_id": "", "run_delivered": 0}, bump=False)
            self._runtimes.pop(rt.job_id, None)
            rt.done.set()
            self.notifier.notify(rt.job_id)
            self.schedule()

    async def _run_job(self, rt: JobRuntime) -> None:
        job_id = rt.job_id
        row = self.store.get_job(job_id)
        assert row is not None
        workload = self.workloads[row["job_type"]]
        if not self._transition(
            job_id, [S.JOB_STATUS_SCHEDULING], S.JOB_STATUS_PREPARING, {}, workload.preparing
        ):
            return
        if rt.stop_reason is not None:
            self._settle_stop(rt, row, "before the process started", workload)
            return
        attempt = int(row["attempt"]) + 1
        try:
            pspec = await workload.prepare(self, rt, row, attempt)
        except (CoordinatorError, OSError) as e:
            msg = e.message if isinstance(e, CoordinatorError) else _os_message(e)
            if not isinstance(e, CoordinatorError):
                log.warning("job %s: preparing failed: %s", job_id, e)
            self._transition(
                job_id,
                RUNNING,
                S.JOB_STATUS_FAILED,
                {"error_code": "DATA_ERROR", "error_message": msg},
                msg,
                L.LOG_LEVEL_ERROR,
            )
            return
        # Copying the data yields to the loop, so a cancel, pause or shutdown may arrive meanwhile.
        if rt.stop_reason is not None:
            self._settle_stop(rt, row, "before the process started", workload)
            return
        resume = row["resume_checkpoint"]
        self.log(
            job_id,
            f"starting attempt {attempt}: {workload.describe(self, row)}"
            + (" in the job sandbox" if pspec.sandbox is not None else " without a sandbox")
            + (f", resuming from {self.shown(rt.tenant_id, resume)}" if resume else ""),
        )
        # Persisted before the start: a coordinator that dies while a Ray job is submitted
        # still finds (and adopts) it.
        planned = self.executor.planned_run_id(job_id, attempt)
        self.store.update_job(
            job_id, {"attempt": attempt, "run_id": planned, "run_delivered": 0}, bump=False
        )
        launch = LaunchSpec(
            process=pspec,
            job_id=job_id,
            attempt=attempt,
            tenant_id=rt.tenant_id,
            placement=self._placement(rt, row),
            labels=json.loads(row["labels"] or "{}"),
            stop_grace_seconds=self.config.stop_grace_seconds,
        )
        try:
            run = await self.executor.start(launch)
        except ExecutorError as e:
            msg = str(e)
            log.warning("job %s: %s (%s)", job_id, msg, e.__cause__)
            self.store.update_job(job_id, {"run_id": ""}, bump=False)
            self._transition(
                job_id,
                RUNNING,
                S.JOB_STATUS_FAILED,
                {"error_code": "SPAWN_ERROR", "error_message": msg},
                msg,
                L.LOG_LEVEL_ERROR,
            )
            return
        rt.run = run
        rt.spec = pspec
        rt.started_mono = time.monotonic()
        self.store.update_job(job_id, {"run_id": run.run_id}, bump=False)
        if rt.stop_reason is not None:
            self._signal(rt)
        await self._follow(rt, row, workload, run)

    def _placement(self, rt: JobRuntime, row: sqlite3.Row) -> Placement:
        rc = self.request_of(row).resource_config
        node = self._node_by_id.get(rt.node_id)
        return Placement(
            node_ids=tuple(rt.node_ids),
            gpu_type=node.gpu_type if node is not None else CPU,
            slots_per_node=max(int(row["gpu_count"]), 1),
            cpu_cores=int(rc.cpu_cores),
            memory_bytes=int(rc.memory_gb * 1024**3),
        )

    async def _follow(
        self, rt: JobRuntime, row: sqlite3.Row, workload: Workload, run: RunHandle
    ) -> None:
        """Output and events of a started (or adopted) attempt until it ends; then settle it."""
        job_id = rt.job_id

        def started(run: RunHandle) -> None:
            if rt.stop_reason is not None:
                return
            status = self.store.job_status(job_id)
            if status == S.JOB_STATUS_PREPARING:
                self._transition(
                    job_id,
                    [S.JOB_STATUS_PREPARING],
                    S.JOB_STATUS_TRAINING,
                    {},
                    f"{run.label} started",
                )
            elif status not in RUNNING:
                self.executor.kill(run)  # settled meanwhile: it must not run on

        def progress(run: RunHandle) -> None:
            self.store.update_job(job_id, {"run_delivered": run.delivered}, bump=False)

        timer = None
        limit = self.runtime_limit(workload, row)
        if limit > 0:
            # An adopted attempt has been running for a while already.
            elapsed = max(0.0, time.time() - run.started_at) if run.adopted else 0.0
            timer = asyncio.get_running_loop().call_later(
                max(limit - elapsed, 0.0), self._timeout, rt, limit
            )
        try:
            result = await self.executor.follow(
                run, workload.sink(self, rt, row), started, progress
            )
        finally:
            if timer is not None:
                timer.cancel()
        self._on_exit(rt, row, result, run, workload)

    def _timeout(self, rt: JobRuntime, limit: int) -> None:
        if rt.stop_reason is None and rt.run is not None:
            self.log(
                rt.job_id, f"max_runtime_seconds={limit} exceeded; stopping", L.LOG_LEVEL_ERROR
            )
            self._request_stop(rt, TIMEOUT, graceful=True)

    def _on_exit(
        self,
        rt: JobRuntime,
        row: sqlite3.Row,
        result: RunExit,
        run: RunHandle,
        workload: Workload,
    ) -> None:
        job_id = rt.job_id
        reason = rt.stop_reason
        code = result.code
        if code is None:
            how = result.detail or "it was lost"
        elif code >= 0:
            how = f"exit code {code}"
        else:
            how = f"signal {signal.Signals(-code).name}"
        expected = code in (0, EXIT_CHECKPOINTED) or reason is not None or result.withdrawn
        self.log(
            job_id,
            f"{run.label} ended ({how})",
            L.LOG_LEVEL_INFO if expected else L.LOG_LEVEL_ERROR,
        )
        if reason == CANCEL:
            return
        if result.withdrawn and reason is None:
            # It never ran (the cluster had no room after all): back to its place in the queue,
            # and no new work goes to its nodes until the executor says they have room.
            self._busy.update(rt.node_ids)
            self._transition(
                job_id,
                RUNNING,
                S.JOB_STATUS_QUEUED,
                {"assigned_nodes": "[]"},
                f"{how}; waiting for slots again",
                L.LOG_LEVEL_WARNING,
            )
            return
        if code == 0:
            fields, message = workload.completed(self, rt, row)
            fields.update({"error_code": "", "error_message": ""})
            self._transition(job_id, RUNNING, S.JOB_STATUS_COMPLETED, fields, message)
            return
        if reason is not None:
            self._settle_stop(rt, row, f"process ended with {how}", workload)
        elif result.lost:
            rt.stop_reason = PREEMPT
            self._settle_stop(rt, row, how, workload)
        elif code is None:
            self._transition(
                job_id,
                RUNNING,
                S.JOB_STATUS_FAILED,
                {"error_code": "SPAWN_ERROR", "error_message": how},
                how,
                L.LOG_LEVEL_ERROR,
            )
        elif code == EXIT_CHECKPOINTED:
            rt.stop_reason = PREEMPT
            self._settle_stop(rt, row, "the process checkpointed and stopped on its own", workload)
        else:
            resume = self.latest_checkpoint_path(job_id, row["resume_checkpoint"])
            # One line for error.message: the last thing the process said (its whole output
            # stays in the job's logs).
            last = run.output_tail[-1].split("] ", 1)[-1] if run.output_tail else ""
            msg = f"process exited with {how}" + (f": {last[:300]}" if last else "")
            if self._transition(
                job_id,
                RUNNING,
                S.JOB_STATUS_FAILED,
                {"error_code": "EXIT_CODE", "error_message": msg, "resume_checkpoint": resume},
                f"process exited with {how}",
                L.LOG_LEVEL_ERROR,
            ):
                self._auto_retry(job_id, f"failed with {how}")

    def _settle_stop(
        self, rt: JobRuntime, row: sqlite3.Row, note: str, workload: Workload | None = None
    ) -> None:
        """The state a stopped job lands in, by why the coordinator stopped it."""
        job_id = rt.job_id
        resume = self.latest_checkpoint_path(job_id, row["resume_checkpoint"])
        shown = self.shown(rt.tenant_id, resume)
        at = f"{note}; checkpoint {shown}" if resume else f"{note}; no checkpoint"
        fields: dict[str, Any] = {"resume_checkpoint": resume}
        if rt.stop_reason == PAUSE:
            self._transition(job_id, RUNNING, S.JOB_STATUS_PAUSED, fields, f"paused ({at})")
        elif rt.stop_reason == SHUTDOWN:
            fields["assigned_nodes"] = "[]"
            self._transition(
                job_id,
                RUNNING,
                S.JOB_STATUS_QUEUED,
                fields,
                f"coordinator stopped; will resume ({at})",
            )
        elif rt.stop_reason == PREEMPT:
            if self._transition(
                job_id,
                RUNNING,
                S.JOB_STATUS_PREEMPTED,
                fields,
                f"preempted ({at})",
                L.LOG_LEVEL_WARNING,
            ):
                self._auto_retry(job_id, "preempted")
        elif rt.stop_reason == TIMEOUT:
            limit = self.runtime_limit(workload, row) if workload is not None else 0
            msg = f"exceeded max_runtime_seconds={limit}"
            fields.update({"error_code": "TIMEOUT", "error_message": msg})
            self._transition(job_id, RUNNING, S.JOB_STATUS_FAILED, fields, msg, L.LOG_LEVEL_ERROR)

    # ---- events from the process -------------------------------------------------------------

    def record_checkpoint(
        self, rt: JobRuntime, req: coordinator_pb2.SubmitJobRequest, event: dict[str, Any]
    ) -> None:
        """A complete checkpoint reported by the process (a folder in its checkpoint dir)."""
        step = to_int(event.get("step"))
        reported = str(event.get("path") or "")
        inside = rt.spec.to_host(reported) if rt.spec is not None and reported else None
        host = self.files.checkpoint_host(rt.tenant_id, rt.job_id, inside)
        if host is None:
            # Anything else (say "/") would make the coordinator measure, prune or hand on a
            # directory that is not the job's.
            self.log(
                rt.job_id,
                "checkpoint event ignored: its path must be a folder inside "
                "SCAIMIND_CHECKPOINT_DIR",
                L.LOG_LEVEL_WARNING,
            )
            return
        record = CheckpointRecord(
            checkpoint_id=f"{rt.job_id}-step-{step:06d}",
            job_id=rt.job_id,
            step=step,
            path=str(host),
            size_bytes=to_int(event.get("size_bytes")),
            metrics=to_numbers(event.get("metrics") or {}),
            created_at=time.time(),
        )
        dropped = self.store.add_checkpoint(record, self.keep_last(req))
        loop = asyncio.get_running_loop()
        if not record.size_bytes:
            # Walking a folder is file I/O: off the event loop, inside the job's folder only.
            walk = loop.run_in_executor(None, _dir_size, host)
            walk.add_done_callback(functools.partial(self._measured, record.checkpoint_id))
        for old in dropped:
            # Only folders inside this job's checkpoint dir are removed; a path elsewhere is
            # not the job's.
            path = self.files.checkpoint_host(rt.tenant_id, rt.job_id, Path(old))
            if path is not None:
                loop.run_in_executor(None, functools.partial(shutil.rmtree, path, True))
        self.log(
            rt.job_id,
            f"checkpoint {record.checkpoint_id} saved at step {step} "
            f"({self.shown(rt.tenant_id, str(host))})",
        )

    def _measured(self, checkpoint_id: str, walk: asyncio.Future[int]) -> None:
        if not walk.cancelled() and walk.exception() is None:
            self.store.set_checkpoint_size(checkpoint_id, walk.result())

    def phase(self, rt: JobRuntime, phase: str) -> None:
        """EVALUATING / EXPORTING announced by the process."""
        target = {"EVALUATING": S.JOB_STATUS_EVALUATING, "EXPORTING": S.JOB_STATUS_EXPORTING}.get(
            phase
        )
        if target is None:
            self.log(rt.job_id, f"unknown phase {phase!r} ignored", L.LOG_LEVEL_WARNING)
            return
        if rt.stop_reason is None:
            self._transition(
                rt.job_id,
                [S.JOB_STATUS_TRAINING, S.JOB_STATUS_EVALUATING, S.JOB_STATUS_EXPORTING],
                target,
                {},
                "scoring the validation split"
                if phase == "EVALUATING"
                else "writing the final model",
            )


def _clog(message: str, level: int = L.LOG_LEVEL_INFO, node_id: str = "") -> PendingLog:
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


def _dir_size(path: Path) -> int:
    """Bytes of the regular files under `path`, never following a symlink (runs in a thread)."""
    total = 0
    for root, _dirs, names in os.walk(path, followlinks=False):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total
