"""The runner: starts a placed job's attempt, follows it, stops it and settles its state;
recovers and adopts runs after a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from scaimind.coordinator.executors.base import (
    ExecutorError,
    LaunchSpec,
    Placement,
    RunExit,
    RunHandle,
    kind_of,
)
from scaimind.coordinator.executors.base import os_message as _os_message
from scaimind.coordinator.executors.inventory import CPU
from scaimind.coordinator.jobs.core import JobCore
from scaimind.coordinator.jobs.runtime import (
    CANCEL,
    EXIT_CHECKPOINTED,
    PAUSE,
    PREEMPT,
    SHUTDOWN,
    TIMEOUT,
    JobRuntime,
    L,
    Workload,
    clog,
)
from scaimind.coordinator.messages import (
    RUNNING,
    S,
    status_name,
)
from scaimind.coordinator.persistence.records import JobRecord
from scaimind.coordinator.status import StatusError

log = logging.getLogger(__name__)


class Running(JobCore):
    """One task per placed job, from PREPARING to its final state."""

    async def _recover(self) -> None:
        now = time.time()
        for row in self.store.jobs_in_status([S.JOB_STATUS_PENDING]):
            self.store.transition(
                row.job_id,
                [S.JOB_STATUS_PENDING],
                S.JOB_STATUS_QUEUED,
                {"queued_at": row.queued_at or now},
                [clog("PENDING → QUEUED (coordinator restarted)")],
            )
        for row in self.store.jobs_in_status(RUNNING):
            job_id = row.job_id
            run_id = str(row.run_id)
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
            resume = self.latest_checkpoint_path(job_id, row.resume_checkpoint)
            msg = "coordinator restarted while the job was running"
            ok = self.store.transition(
                job_id,
                RUNNING,
                S.JOB_STATUS_PREEMPTED,
                {"status_message": msg, "resume_checkpoint": resume, "run_id": ""},
                [clog(f"{status_name(row.status)} → PREEMPTED: {msg}", L.LOG_LEVEL_WARNING)],
            )
            if ok:
                self._auto_retry(job_id, "coordinator restarted")

    async def _adopt(self, row: JobRecord) -> bool:
        """A run that outlived the previous coordinator (a Ray job): follow it again instead of
        restarting the job. False when the executor cannot reach it (it is then discarded)."""
        job_id, run_id = str(row.job_id), str(row.run_id)
        if kind_of(run_id) != self.executor.kind:
            return False
        try:
            run = await self.executor.adopt(run_id, job_id, int(row.run_delivered))
        except ExecutorError as e:
            log.warning("job %s: cannot adopt %s: %s", job_id, run_id, e)
            return False
        if run is None:
            return False
        need = max(int(row.gpu_count), 1)
        placement: list[tuple[str, int]] = []
        for node_id in json.loads(row.assigned_nodes or "[]"):
            free = [i for i, j in enumerate(self._slots.get(node_id, [])) if j is None]
            placement.extend((node_id, i) for i in free[:need])
        rt = JobRuntime(
            job_id=job_id,
            tenant_id=row.tenant_id,
            queue_name=row.queue_name,
            slots=placement,
            node_ids=sorted({nid for nid, _ in placement}),
            run=run,
            spec=run.process,
        )
        for nid, i in placement:
            self._slots[nid][i] = job_id
        self._runtimes[job_id] = rt
        self.log(job_id, f"coordinator restarted; {run.label} is still there and is followed again")
        if row.status == S.JOB_STATUS_CHECKPOINTING:
            # Why it was stopping died with the previous coordinator: a preemption, so the
            # job continues from its checkpoint (as a retry when max_retries allows).
            rt.stop_reason, rt.graceful = PREEMPT, True
            self._signal(rt)
        workload = self.workloads[row.job_type]
        rt.task = asyncio.get_running_loop().create_task(
            self._run(rt, self._follow(rt, row, workload, run))
        )
        return True

    def _start(self, row: JobRecord, placement: list[tuple[str, int]]) -> None:
        job_id = row.job_id
        node_ids = sorted({nid for nid, _ in placement})
        fields: dict[str, Any] = {
            "assigned_nodes": json.dumps(node_ids),
            "status_message": "placed",
        }
        if not row.started_at:
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
            tenant_id=row.tenant_id,
            queue_name=row.queue_name,
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
        workload = self.workloads[row.job_type]
        if not self._transition(
            job_id, [S.JOB_STATUS_SCHEDULING], S.JOB_STATUS_PREPARING, {}, workload.preparing
        ):
            return
        if rt.stop_reason is not None:
            self._settle_stop(rt, row, "before the process started", workload)
            return
        attempt = int(row.attempt) + 1
        try:
            pspec = await workload.prepare(self, rt, row, attempt)
        except (StatusError, OSError) as e:
            msg = e.message if isinstance(e, StatusError) else _os_message(e)
            if not isinstance(e, StatusError):
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
        resume = row.resume_checkpoint
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
            labels=json.loads(row.labels or "{}"),
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

    def _placement(self, rt: JobRuntime, row: JobRecord) -> Placement:
        rc = self.request_of(row).resource_config
        node = self._node_by_id.get(rt.node_id)
        return Placement(
            node_ids=tuple(rt.node_ids),
            gpu_type=node.gpu_type if node is not None else CPU,
            slots_per_node=max(int(row.gpu_count), 1),
            cpu_cores=int(rc.cpu_cores),
            memory_bytes=int(rc.memory_gb * 1024**3),
        )

    async def _follow(
        self, rt: JobRuntime, row: JobRecord, workload: Workload, run: RunHandle
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
        row: JobRecord,
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
            resume = self.latest_checkpoint_path(job_id, row.resume_checkpoint)
            # One line for error.message (the whole output stays in the job's logs).
            last = last_said(run.output_tail)
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
        self, rt: JobRuntime, row: JobRecord, note: str, workload: Workload | None = None
    ) -> None:
        """The state a stopped job lands in, by why the coordinator stopped it."""
        job_id = rt.job_id
        resume = self.latest_checkpoint_path(job_id, row.resume_checkpoint)
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


def last_said(tail: Iterable[str]) -> str:
    """The line that explains a failed process: its last stderr line, else its last stdout line.

    stderr is where programs (and the built-in trainer) report what ended them. The two pipes
    are read concurrently, so which of their last lines came last is not known; taking the
    newest line of either made error.message depend on that race.
    """
    lines = list(tail)
    for source in ("[stderr] ", "[stdout] "):
        for line in reversed(lines):
            if line.startswith(source):
                return line[len(source) :]
    return ""
