"""Commands on jobs: submit, cancel, pause, resume, retry (and automatic retries), drain and
enable a node."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import grpc

from scaimind.coordinator.jobs.core import JobCore
from scaimind.coordinator.jobs.notifier import wait_event
from scaimind.coordinator.jobs.rules import (
    canonical_gpu_type,
    eligible_nodes,
    priority_of,
    validate_resources,
    validate_submit,
)
from scaimind.coordinator.jobs.runtime import (
    CANCEL,
    PAUSE,
    PREEMPT,
    CallerContext,
    L,
    clog,
)
from scaimind.coordinator.messages import (
    NON_TERMINAL,
    RUNNING,
    TERMINAL,
    S,
    as_status,
    node_status_name,
    status_name,
)
from scaimind.coordinator.persistence.records import IdempotencyConflict, JobRecord
from scaimind.coordinator.status import StatusError, invalid, not_found, precondition
from scaimind.v1 import common_pb2, coordinator_pb2

DEFAULT_QUEUE = "default"
# Retry-After of a full tenant quota: long enough for some queued work to finish.
_QUOTA_RETRY_AFTER_SECONDS = 30

# Idempotency keys of one tenant are namespaced per operation: a key first used on a submit
# never answers a retry (or an evaluation, "evaluation:") with that job.
SUBMIT_KEY = "submit:"
RETRY_KEY = "retry:"


class Commands(JobCore):
    """What callers ask of jobs and nodes."""

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
            raise StatusError(
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
        return self._submit_answer(job_id, "accepted into queue {queue!r}")

    def _submit_replay(self, job_id: str) -> coordinator_pb2.SubmitJobResponse:
        return self._submit_answer(job_id, "already submitted with this idempotency key")

    def _submit_answer(self, job_id: str, what: str) -> coordinator_pb2.SubmitJobResponse:
        """SubmitJob's answer from the stored job; `what` may name its {queue}."""
        row = self.store.get_job(job_id)
        assert row is not None
        return coordinator_pb2.SubmitJobResponse(
            job_id=job_id,
            status=as_status(row.status),
            message=f"job {job_id} " + what.format(queue=row.queue_name),
            estimated_wait_seconds=self._estimates.get(job_id, 0),
        )

    def _insert_job(
        self,
        caller: CallerContext,
        req: coordinator_pb2.SubmitJobRequest,
        *,
        resume: str,
        parent: JobRecord | None,
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
            "parent_job_id": parent.job_id if parent is not None else "",
            "retry_count": int(parent.retry_count) + 1 if parent is not None else 0,
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
                (c.step for c in self.store.checkpoints(parent.job_id) if c.path == resume), None
            )
            if step is not None:
                fields.update(current_step=step, total_steps=parent.total_steps)
        origin = (
            f" (retry {fields['retry_count']} of {parent.job_id})" if parent is not None else ""
        )
        logs = [
            clog(f"job submitted{origin}: {status_name(S.JOB_STATUS_PENDING)}"),
            clog(
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
        status = row.status
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
        status = row.status
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
        if row.status != S.JOB_STATUS_PAUSED:
            raise precondition(
                f"job {job_id} is {status_name(row.status)}; only paused jobs can be resumed"
            )
        if checkpoint_id:
            resume = self._named_checkpoint(caller, checkpoint_id).path
            where = f"checkpoint {checkpoint_id}"
        else:
            resume = self.latest_checkpoint_path(job_id, row.resume_checkpoint)
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
                    parent_job_id=child.parent_job_id,
                    status=as_status(child.status),
                    message="already retried with this idempotency key",
                )
        parent = self.caller_job(caller, req.job_id)
        if parent.status not in (S.JOB_STATUS_FAILED, S.JOB_STATUS_PREEMPTED):
            raise precondition(
                f"job {req.job_id} is {status_name(parent.status)}; "
                "only FAILED or PREEMPTED jobs can be retried"
            )
        submit = coordinator_pb2.SubmitJobRequest.FromString(parent.request)
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
            resume = self.latest_checkpoint_path(parent.job_id, parent.resume_checkpoint)
        try:
            child_id = self._insert_job(
                CallerContext(caller.tenant_id, caller.user_id or parent.user_id),
                submit,
                resume=resume,
                parent=parent,
                note=f"retry of {parent.job_id}",
                key=key,
            )
        except IdempotencyConflict as e:
            child_id = e.job_id
        self.log(parent.job_id, f"retried as job {child_id}")
        self.schedule()
        child = self.store.get_job(child_id)
        assert child is not None
        return coordinator_pb2.RetryJobResponse(
            job_id=child_id,
            parent_job_id=parent.job_id,
            status=as_status(child.status),
            message=f"job {child_id} retries {parent.job_id}"
            + (
                f" from {self.shown(caller.tenant_id, resume)}" if resume else " from the beginning"
            ),
        )

    def _auto_retry(self, job_id: str, why: str) -> None:
        row = self.store.get_job(job_id)
        if row is None or self._closing or row.retry_count >= row.max_retries:
            return
        submit = coordinator_pb2.SubmitJobRequest.FromString(row.request)
        resume = self.latest_checkpoint_path(job_id, row.resume_checkpoint)
        child_id = self._insert_job(
            CallerContext(row.tenant_id, row.user_id),
            submit,
            resume=resume,
            parent=row,
            note=f"automatic retry of {job_id} ({why})",
        )
        self.log(
            job_id,
            f"automatically retried as job {child_id} ({why}; "
            f"retry {row.retry_count + 1} of {row.max_retries})",
        )

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
