"""Evaluations: SubmitEvaluation / GetEvaluation and the evaluation workload.

An evaluation is a job of its own (`job_type` "evaluation", id `eval_…`, label
`type=evaluation`, `parent_job_id` = the evaluated job), so the scheduler queues and places it
like any job and ListJobs with the label filter lists it; its process is
`python -m scaimind.coordinator.worker.evaluator`. Benchmark results come from the evaluator's
`benchmark` lines and are kept in `ops.db`.

Which model is evaluated (first that applies): the named `checkpoint_id` (a checkpoint of the
job that still exists on disk); `model_uri` when set, which must name a model directory the
caller may read (`scaidrive://<tenant>/…` or a path under its local data roots; any other URI is
refused, never replaced by another model); the job's final model; the job's latest checkpoint.
When none exists the job has no model yet: FAILED_PRECONDITION naming the job's state. The
evaluation record shows the model actually scored. A benchmark without a dataset scores the job's
validation split (or its data when it has none), read through the dataset cache.

The evaluation runs on one slot of the evaluated job's gpu_type (a CPU slot for CPU jobs), in the
job's queue, at the default priority; its states are QUEUED → SCHEDULING → PREPARING →
TRAINING (process started) → EVALUATING (first benchmark running) → COMPLETED, or FAILED.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaimind.contract.private_files import private_dir
from scaimind.coordinator.data.paths import TenantFiles
from scaimind.coordinator.data.scaidrive import is_scaidrive, token_expiry
from scaimind.coordinator.data.sources import LocalSource, resolve_source
from scaimind.coordinator.executors.process import OutputSink, ProcessSpec, process_env, write_new
from scaimind.coordinator.jobs.jobfiles import JOB, MODEL, MountPlan
from scaimind.coordinator.jobs.runtime import (
    LOG_LEVELS,
    CallerContext,
    JobHost,
    JobRuntime,
    clog,
    to_numbers,
)
from scaimind.coordinator.messages import S, as_status, set_time, status_name
from scaimind.coordinator.persistence.records import IdempotencyConflict, JobRecord, PendingLog
from scaimind.coordinator.status import invalid, not_found, precondition
from scaimind.coordinator.worker.evaluator import KNOWN_BENCHMARKS
from scaimind.v1 import common_pb2, coordinator_pb2

if TYPE_CHECKING:
    pass


EVALUATION = "evaluation"
LABEL = {"type": EVALUATION}
B = coordinator_pb2.BenchmarkStatus
L = common_pb2.LogLevel
_EVENT_STATUS = {
    "RUNNING": B.BENCHMARK_STATUS_RUNNING,
    "COMPLETED": B.BENCHMARK_STATUS_COMPLETED,
    "FAILED": B.BENCHMARK_STATUS_FAILED,
}
# Idempotency keys share the jobs' table; the prefix keeps an evaluation's key from replaying a
# job submitted with the same key.
_KEY_PREFIX = "evaluation:"


# ---- data access tokens ---------------------------------------------------------------------


def uses_drive(req: coordinator_pb2.SubmitJobRequest) -> bool:
    """True when a job reads scaidrive:// sources (so PREPARING needs the caller's token)."""
    return any(is_scaidrive(s.path) for s in req.data_config.sources)


def remember_token(m: JobHost, job_id: str, token: str) -> None:
    """Keep the caller's scaidrive token for the job's PREPARING (only jobs that need one)."""
    if not token:
        return
    row = m.store.get_job(job_id)
    if row is None:
        return
    if row.job_type == EVALUATION:
        ev = m.ops.evaluation(job_id)
        parent = m.store.get_job(ev.job_id) if ev is not None else None
        req = coordinator_pb2.SubmitEvaluationRequest.FromString(ev.request) if ev else None
        needed = (parent is not None and uses_drive(m.request_of(parent))) or (
            req is not None and any(is_scaidrive(b.dataset) for b in req.benchmarks)
        )
    else:
        needed = uses_drive(m.request_of(row))
    if needed:
        m.ops.put_token(job_id, token, token_expiry(token))


# ---- SubmitEvaluation / GetEvaluation -------------------------------------------------------


def model_path(
    m: JobHost,
    caller: CallerContext,
    job: JobRecord,
    req: coordinator_pb2.SubmitEvaluationRequest,
) -> Path:
    """The model an evaluation scores (see the module docstring): a host directory."""
    job_id = job.job_id
    state = status_name(job.status)
    if req.checkpoint_id:
        ckpt = m.store.checkpoint(req.checkpoint_id)
        if ckpt is None or ckpt.job_id != job_id:
            raise precondition(f"job {job_id} is {state} and has no checkpoint {req.checkpoint_id}")
        if not Path(ckpt.path).exists():
            raise precondition(
                f"checkpoint {req.checkpoint_id} of job {job_id} ({state}) no longer exists on disk"
            )
        return Path(ckpt.path)
    if req.model_uri.strip():
        # Only a model the caller may read: its storage area or a local data root. Anything
        # else (s3://, "final", another tenant's path) is refused, never silently replaced.
        text = req.model_uri.strip()
        if "://" in text and not text.lower().startswith(("file://", "scaidrive://")):
            raise invalid(
                f"model_uri: {text} is not a model this coordinator can read; give a "
                f"checkpoint_id, scaidrive://{caller.tenant_id}/<path>, a path under a local "
                "data root, or leave model_uri empty to score the job's final model"
            )
        requested = m.files.for_tenant(caller.tenant_id, caller.scaidrive_token).resolve(
            text, "model_uri"
        )
        if not requested.is_dir():
            raise invalid(f"model_uri: {text} is not a model directory")
        return requested
    final = m.files.output_dir(job)
    if job.final_model_uri and final.is_dir():
        return final
    latest = m.latest_checkpoint_path(job_id, "")
    if latest:
        return Path(latest)
    raise precondition(
        f"job {job_id} is {state} and has no model to evaluate yet "
        "(no final model and no checkpoint)"
    )


def _validate(req: coordinator_pb2.SubmitEvaluationRequest) -> None:
    known = ", ".join(KNOWN_BENCHMARKS)
    if not req.benchmarks:
        raise invalid(f"benchmarks: at least one benchmark is required (known: {known})")
    for i, b in enumerate(req.benchmarks):
        if b.name not in KNOWN_BENCHMARKS:
            raise invalid(f"benchmarks[{i}].name: unknown benchmark {b.name!r}; known: {known}")
        if b.num_samples < 0:
            raise invalid(f"benchmarks[{i}].num_samples: must be >= 0")


def submit_evaluation(
    m: JobHost, caller: CallerContext, req: coordinator_pb2.SubmitEvaluationRequest
) -> coordinator_pb2.SubmitEvaluationResponse:
    """Validate, persist and enqueue an evaluation (idempotent per tenant and key)."""
    key = _KEY_PREFIX + caller.idempotency_key if caller.idempotency_key else ""
    if key:
        existing = m.store.job_for_key(caller.tenant_id, key)
        if existing is not None:
            return _replay(m, existing)
    if not req.job_id:
        raise invalid("job_id: is required")
    job = m.caller_job(caller, req.job_id)
    _validate(req)
    files = m.files.for_tenant(caller.tenant_id, caller.scaidrive_token)
    for i, b in enumerate(req.benchmarks):
        if b.dataset:
            resolve_source(common_pb2.DataSource(path=b.dataset), f"benchmarks[{i}].dataset", files)
    model = model_path(m, caller, job, req)

    eval_id = "eval_" + secrets.token_hex(8)
    parent = m.request_of(job)
    rc = parent.resource_config
    spec = coordinator_pb2.SubmitJobRequest(
        name=f"evaluation of {job.name}"[:256],
        labels={**LABEL, "job_id": job.job_id},
    )
    spec.resource_config.gpu_type = rc.gpu_type
    spec.resource_config.gpu_count = min(rc.gpu_count, 1)
    spec.resource_config.node_selector.update(rc.node_selector)
    spec.scheduling_config.queue_name = parent.scheduling_config.queue_name
    now = time.time()
    fields: dict[str, Any] = {
        "job_id": eval_id,
        "tenant_id": caller.tenant_id,
        "user_id": caller.user_id,
        "name": spec.name,
        "job_type": EVALUATION,
        "status": S.JOB_STATUS_QUEUED,
        "status_message": "waiting for a slot",
        "request": spec.SerializeToString(),
        "labels": json.dumps(dict(spec.labels), sort_keys=True),
        "parent_job_id": job.job_id,
        "priority": 5,
        "queue_name": job.queue_name,
        "gpu_type": job.gpu_type,
        "gpu_count": spec.resource_config.gpu_count,
        "num_nodes": 1,
        "created_at": now,
        "queued_at": now,
        "updated_at": now,
    }
    names = ", ".join(b.name for b in req.benchmarks)
    m.ops.insert_evaluation(
        eval_id,
        caller.tenant_id,
        job.job_id,
        req.SerializeToString(),
        str(model),
        [B.BENCHMARK_STATUS_PENDING] * len(req.benchmarks),
    )
    try:
        m.store.insert_job(
            fields,
            [
                clog(
                    f"evaluation of job {job.job_id} submitted: {names} on "
                    f"{m.shown(caller.tenant_id, str(model))}"
                ),
                clog(f"PENDING → QUEUED: queue {fields['queue_name']!r}"),
            ],
            key or None,
        )
    except IdempotencyConflict as e:
        return _replay(m, e.job_id)
    m.log(job.job_id, f"evaluation {eval_id} submitted ({names})")
    if caller.scaidrive_token:
        remember_token(m, eval_id, caller.scaidrive_token)
    m.schedule()
    return _answer(m, eval_id, f"evaluation {eval_id} of job {job.job_id} accepted ({names})")


def _replay(m: JobHost, eval_id: str) -> coordinator_pb2.SubmitEvaluationResponse:
    return _answer(m, eval_id, f"evaluation {eval_id} already submitted with this idempotency key")


def _answer(m: JobHost, eval_id: str, message: str) -> coordinator_pb2.SubmitEvaluationResponse:
    """SubmitEvaluation's answer with the evaluation job's stored status."""
    row = m.store.get_job(eval_id)
    assert row is not None
    return coordinator_pb2.SubmitEvaluationResponse(
        evaluation_id=eval_id, status=as_status(row.status), message=message
    )


def get_evaluation(
    m: JobHost, caller: CallerContext, evaluation_id: str
) -> coordinator_pb2.Evaluation:
    """The tenant's evaluation with its benchmark results; NOT_FOUND otherwise."""
    if not evaluation_id:
        raise invalid("evaluation_id: is required")
    ev = m.ops.evaluation(evaluation_id, caller.tenant_id)
    row = m.store.get_job(evaluation_id, caller.tenant_id)
    if ev is None or row is None:
        raise not_found(f"evaluation {evaluation_id} not found")
    req = coordinator_pb2.SubmitEvaluationRequest.FromString(ev.request)
    out = coordinator_pb2.Evaluation(
        evaluation_id=evaluation_id,
        job_id=ev.job_id,
        model_uri=m.shown(caller.tenant_id, ev.model_path),
        checkpoint_id=req.checkpoint_id,
        status=as_status(row.status),
        tenant_id=ev.tenant_id,
        status_message=row.status_message,
    )
    results = {r.position: r for r in m.ops.benchmark_results(evaluation_id)}
    for i, b in enumerate(req.benchmarks):
        r = results.get(i)
        res = out.benchmarks.add(
            name=b.name, dataset=b.dataset, num_samples=b.num_samples, parameters=b.parameters
        )
        if r is not None:
            res.status = B.ValueType(r.status)
            res.score = r.score
            res.metrics.update(json.loads(r.metrics))
            res.error = r.error
    set_time(out.created_at, ev.created_at)
    if row.completed_at:
        set_time(out.completed_at, row.completed_at)
    return out


# ---- the workload ---------------------------------------------------------------------------


class EvaluationWorkload:
    """Evaluation jobs (job_type "evaluation"): the evaluator process on one slot."""

    preparing = "fetching the evaluation data"

    async def prepare(
        self, m: JobHost, rt: JobRuntime, row: JobRecord, attempt: int
    ) -> ProcessSpec:
        """Write the evaluator's spec (datasets read through the dataset cache)."""
        ev = m.ops.evaluation(rt.job_id)
        if ev is None:
            raise FileNotFoundError(f"evaluation {rt.job_id} has no definition")
        req = coordinator_pb2.SubmitEvaluationRequest.FromString(ev.request)
        model = Path(ev.model_path)
        files = m.files.for_job(row)
        # Checked again: the roots may have changed since submit, a checkpoint may be gone.
        if not m.files.readable_dir(rt.tenant_id, model):
            raise invalid(f"the model to evaluate ({m.shown(rt.tenant_id, str(model))}) is gone")
        sandboxed = m.files.sandboxed(custom=False)
        owner = m.files.owner if sandboxed else None
        plan = MountPlan(sandboxed)
        work = private_dir(m.files.layout.work_dir(rt.job_id), owner)
        job_dir = plan.add(work, JOB, writable=True)
        m.files.check_visible(model, "the model to evaluate", owner)
        model_seen = m.files.mount_stable(model, MODEL, plan)
        benchmarks: list[dict[str, Any]] = []
        for i, b in enumerate(req.benchmarks):
            dataset = ""
            if b.dataset:
                src = resolve_source(
                    common_pb2.DataSource(path=b.dataset), f"benchmarks[{i}].dataset", files
                )
                dataset = plan.add_input((await self._cached(m, rt, [src], files))[0].path)
            benchmarks.append(
                {
                    "name": b.name,
                    "dataset": dataset,
                    "num_samples": b.num_samples,
                    "parameters": dict(b.parameters),
                }
            )
        fallback: list[dict[str, Any]] = []
        split, seed = 0.0, 0
        parent = m.store.get_job(ev.job_id)
        if parent is not None and any(not b["dataset"] for b in benchmarks):
            preq = m.request_of(parent)
            split, seed = preq.data_config.validation_split, preq.data_config.seed
            cached = await self._cached(
                m,
                rt,
                [
                    resolve_source(s, f"data_config.sources[{i}] of job {parent.job_id}", files)
                    for i, s in enumerate(preq.data_config.sources)
                ],
                files,
            )
            fallback = [{**c.as_spec(), "path": plan.add_input(c.path)} for c in cached]
        spec_file = work / f"spec-{attempt}.json"
        metrics = work / f"metrics-{attempt}.jsonl"
        spec = {
            "evaluation_id": rt.job_id,
            "model_path": model_seen,
            "benchmarks": benchmarks,
            "fallback_data_files": fallback,
            "validation_split": split,
            "seed": seed,
        }
        write_new(spec_file, json.dumps(spec, indent=2).encode())
        env = process_env(
            {
                "SCAIMIND_JOB_ID": rt.job_id,
                "SCAIMIND_SPEC_FILE": f"{job_dir}/{spec_file.name}",
                "SCAIMIND_METRICS_FILE": f"{job_dir}/{metrics.name}",
            },
            home="/tmp" if sandboxed else str(work),
        )
        return ProcessSpec(
            argv=[sys.executable, "-m", "scaimind.coordinator.worker.evaluator"],
            env=env,
            cwd=work,
            metrics_file=metrics,
            mounts=plan.mounts,
            inside_cwd=job_dir,
            sandbox=m.sandbox if sandboxed else None,
            limits=m.config.sandbox.limits,
            owner=owner,
        )

    @staticmethod
    async def _cached(
        m: JobHost, rt: JobRuntime, sources: list[LocalSource], files: TenantFiles
    ) -> list[LocalSource]:
        return await m.data_cache.fetch(rt.tenant_id, rt.node_id, rt.job_id, sources, files)

    def describe(self, m: JobHost, row: JobRecord) -> str:
        """The built-in evaluator."""
        return "the built-in evaluator"

    def sink(self, m: JobHost, rt: JobRuntime, row: JobRecord) -> OutputSink:
        """Benchmark results, logs."""
        return EvaluationSink(m, rt)

    def max_runtime_seconds(self, row: JobRecord) -> int:
        """No limit of its own (the operator's maximum applies)."""
        return 0

    def completed(self, m: JobHost, rt: JobRuntime, row: JobRecord) -> tuple[dict[str, Any], str]:
        """Summarise the scores."""
        ev = m.ops.evaluation(rt.job_id)
        names = (
            [
                b.name
                for b in coordinator_pb2.SubmitEvaluationRequest.FromString(ev.request).benchmarks
            ]
            if ev is not None
            else []
        )
        parts = []
        for r in m.ops.benchmark_results(rt.job_id):
            name = names[r.position] if r.position < len(names) else "?"
            if r.status == B.BENCHMARK_STATUS_COMPLETED:
                parts.append(f"{name}={r.score:.4g}")
            else:
                state = B.Name(B.ValueType(r.status)).removeprefix("BENCHMARK_STATUS_")
                parts.append(f"{name} {state}")
        return {}, "evaluation finished: " + ", ".join(parts)


class EvaluationSink:
    """Turns `benchmark` lines into results, everything else into log entries."""

    def __init__(self, manager: JobHost, rt: JobRuntime) -> None:
        self.m = manager
        self.rt = rt
        ev = manager.ops.evaluation(rt.job_id)
        req = (
            coordinator_pb2.SubmitEvaluationRequest.FromString(ev.request)
            if ev is not None
            else coordinator_pb2.SubmitEvaluationRequest()
        )
        self.names = [b.name for b in req.benchmarks]
        self.cursor = 0
        self.current: int | None = None

    def on_output(self, source: str, lines: Sequence[str]) -> None:
        level = L.LOG_LEVEL_INFO if source == "stdout" else L.LOG_LEVEL_WARNING
        self.m.store.append_logs(
            self.rt.job_id, [PendingLog(level, line, source, self.rt.node_id) for line in lines]
        )
        self.m.notifier.notify(self.rt.job_id)

    def on_bad_event(self, line: str, error: str) -> None:
        self.m.log(
            self.rt.job_id,
            f"ignored malformed result line ({error}): {line[:200]}",
            L.LOG_LEVEL_WARNING,
        )

    def on_events(self, events: Sequence[dict[str, Any]]) -> None:
        for ev in events:
            kind = ev.get("type")
            if kind == "benchmark":
                self._benchmark(ev)
            elif kind == "log":
                level = LOG_LEVELS.get(str(ev.get("level", "INFO")).upper(), L.LOG_LEVEL_INFO)
                self.m.log(self.rt.job_id, str(ev.get("message", "")), level)

    def _benchmark(self, ev: dict[str, Any]) -> None:
        name = str(ev.get("name", ""))
        status = _EVENT_STATUS.get(str(ev.get("status", "")))
        if status is None:
            return
        if status == B.BENCHMARK_STATUS_RUNNING or self.current is None:
            # Benchmarks run in order; a repeated name is the next one of that name.
            nxt = next(
                (i for i in range(self.cursor, len(self.names)) if self.names[i] == name), None
            )
            if nxt is None:
                return
            self.current, self.cursor = nxt, nxt + 1
            if status == B.BENCHMARK_STATUS_RUNNING:
                self.m.phase(self.rt, "EVALUATING")
        position = self.current
        assert position is not None
        score = ev.get("score")
        metrics = ev.get("metrics") if isinstance(ev.get("metrics"), dict) else {}
        self.m.ops.set_benchmark_result(
            self.rt.job_id,
            position,
            status,
            float(score) if isinstance(score, int | float) and score == score else 0.0,
            to_numbers(metrics),
            str(ev.get("error") or ""),
        )
        if status == B.BENCHMARK_STATUS_COMPLETED:
            self.m.log(self.rt.job_id, f"benchmark {name} completed: score {score}")
        elif status == B.BENCHMARK_STATUS_FAILED:
            self.m.log(
                self.rt.job_id, f"benchmark {name} failed: {ev.get('error')}", L.LOG_LEVEL_ERROR
            )
        if status != B.BENCHMARK_STATUS_RUNNING:
            self.current = None
