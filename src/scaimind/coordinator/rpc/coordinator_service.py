"""CoordinatorService: jobs, logs, metrics, evaluations and data; metadata checks, then manager
calls and reads (`JobManager.reads`), never the store."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator

import grpc

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.data.validation import validate_data
from scaimind.coordinator.jobs.manager import JobManager
from scaimind.coordinator.jobs.notifier import LOGS, METRICS, wait_event
from scaimind.coordinator.messages import (
    as_status,
    in_view,
    log_proto,
    set_time,
    status_name,
    timestamp,
)
from scaimind.coordinator.rpc.auth import Auth, Ctx, stream, unary
from scaimind.coordinator.rpc.paging import (
    check_view,
    page_size,
    page_token,
    parse_order,
    parse_page_token,
)
from scaimind.coordinator.status import StatusError, invalid, precondition
from scaimind.coordinator.workloads.evaluation import (
    EVALUATION,
    get_evaluation,
    remember_token,
    submit_evaluation,
)
from scaimind.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_POINTS = 500
MAX_TAIL = 10_000
_LOG_BATCH = 500
# Followers re-check the job even without a notification this often (a safety net only).
_FOLLOW_RECHECK_SECONDS = 15.0
# The order of ListEvaluations pages, also what their tokens are issued for (a ListJobs token is
# not one of them).
_EVALUATION_ORDER = "evaluations created_at desc"


def downsample(
    points: list[tuple[int, float, float]], max_points: int
) -> list[tuple[int, float, float]]:
    """At most max_points points: first, last, and each bucket's min and max (spikes survive)."""
    if len(points) <= max_points:
        return points
    if max_points < 3:
        return [points[0], points[-1]][: max(max_points, 1)]
    inner = points[1:-1]
    buckets = max((max_points - 2) // 2, 1)
    out = [points[0]]
    size = len(inner) / buckets
    for b in range(buckets):
        chunk = inner[int(b * size) : int((b + 1) * size)]
        if not chunk:
            continue
        lo = min(chunk, key=lambda p: p[1])
        hi = max(chunk, key=lambda p: p[1])
        out.extend(sorted({lo, hi}, key=lambda p: p[0]))
    out.append(points[-1])
    return out


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """Jobs, logs, metrics, evaluations and data."""

    def __init__(self, manager: JobManager, config: CoordinatorConfig) -> None:
        self.m = manager
        self.auth = Auth(config)

    @unary
    async def SubmitJob(
        self, request: coordinator_pb2.SubmitJobRequest, context: Ctx
    ) -> coordinator_pb2.SubmitJobResponse:
        caller = self.auth.caller(context)
        resp = self.m.submit(caller, request)
        remember_token(self.m, resp.job_id, caller.scaidrive_token)
        return resp

    @unary
    async def ListJobs(
        self, request: coordinator_pb2.ListJobsRequest, context: Ctx
    ) -> coordinator_pb2.ListJobsResponse:
        caller = self.auth.caller(context)
        size = page_size(request.page_size)
        for s in request.status_filter:
            if s not in common_pb2.JobStatus.values() or s == common_pb2.JOB_STATUS_UNSPECIFIED:
                raise invalid(f"status_filter: unknown status {s}")
        check_view(request.view)
        column, desc = parse_order(request.order_by)
        order_key = f"{column} {'desc' if desc else 'asc'}"
        after = parse_page_token(request.page_token, order_key)
        rows, total = self.m.reads.list_jobs(
            caller.tenant_id,
            list(request.status_filter),
            dict(request.label_filter),
            column,
            desc,
            after,
            size + 1,
        )
        more = len(rows) > size
        rows = rows[:size]
        resp = coordinator_pb2.ListJobsResponse(total_count=total)
        resp.jobs.extend(
            in_view(self.m.job_message(r), request.view, coordinator_pb2.JOB_VIEW_BASIC)
            for r in rows
        )
        if more:
            last = rows[-1]
            resp.next_page_token = page_token(order_key, last.value(column), last.job_id)
        return resp

    @unary
    async def GetJob(self, request: coordinator_pb2.GetJobRequest, context: Ctx) -> common_pb2.Job:
        check_view(request.view)
        job = self.m.job_message(self.m.caller_job(self.auth.caller(context), request.job_id))
        return in_view(job, request.view, coordinator_pb2.JOB_VIEW_FULL)

    @unary
    async def CancelJob(
        self, request: coordinator_pb2.CancelJobRequest, context: Ctx
    ) -> coordinator_pb2.JobActionResponse:
        return self.m.cancel(self.auth.caller(context), request.job_id, request.reason)

    @unary
    async def PauseJob(
        self, request: coordinator_pb2.PauseJobRequest, context: Ctx
    ) -> coordinator_pb2.JobActionResponse:
        save = request.save_checkpoint if request.HasField("save_checkpoint") else True
        remaining = context.time_remaining()
        # Answer just before the caller's deadline rather than let its call fail.
        wait = None if remaining is None else remaining - 0.5
        return await self.m.pause(self.auth.caller(context), request.job_id, save, wait)

    @unary
    async def ResumeJob(
        self, request: coordinator_pb2.ResumeJobRequest, context: Ctx
    ) -> coordinator_pb2.JobActionResponse:
        caller = self.auth.caller(context)
        resp = self.m.resume(caller, request.job_id, request.checkpoint_id)
        remember_token(self.m, resp.job_id, caller.scaidrive_token)
        return resp

    @unary
    async def RetryJob(
        self, request: coordinator_pb2.RetryJobRequest, context: Ctx
    ) -> coordinator_pb2.RetryJobResponse:
        caller = self.auth.caller(context)
        row = self.m.reads.get_job(request.job_id, caller.tenant_id)
        if row is not None and row.job_type == EVALUATION:
            # An evaluation has no checkpoint to continue from; it is simply submitted again.
            raise precondition(
                f"job {request.job_id} is an evaluation ({status_name(row.status)}); "
                "evaluations are not retried, submit a new evaluation instead"
            )
        resp = self.m.retry(caller, request)
        remember_token(self.m, resp.job_id, caller.scaidrive_token)
        return resp

    @unary
    async def GetJobMetrics(
        self, request: coordinator_pb2.GetJobMetricsRequest, context: Ctx
    ) -> coordinator_pb2.GetJobMetricsResponse:
        row = self.m.caller_job(self.auth.caller(context), request.job_id)
        if request.max_points < 0:
            raise invalid("max_points: must be >= 0")
        max_points = request.max_points or DEFAULT_MAX_POINTS
        resp = coordinator_pb2.GetJobMetricsResponse(
            job_id=row.job_id,
            step=row.current_step,
            total_steps=row.total_steps,
            epoch=row.current_epoch,
            latest=json.loads(row.latest_metrics),
            system=self.m.process_stats(row.job_id),
        )
        for name, points in sorted(self.m.reads.metric_series(row.job_id).items()):
            series = resp.series.add(name=name)
            for step, value, ts in downsample(points, max_points):
                p = series.points.add(step=step, value=value)
                set_time(p.timestamp, ts)
        return resp

    @stream
    async def StreamJobLogs(
        self, request: coordinator_pb2.StreamJobLogsRequest, context: Ctx
    ) -> AsyncGenerator[coordinator_pb2.StreamJobLogsResponse, None]:
        row = self.m.caller_job(self.auth.caller(context), request.job_id)
        job_id = row.job_id
        if not 0 <= request.tail <= MAX_TAIL:
            raise invalid(f"tail: must be between 0 and {MAX_TAIL}")
        if request.min_level not in common_pb2.LogLevel.values():
            raise invalid(f"min_level: unknown level {request.min_level}")
        # ERROR is the highest level, so "at least min_level" always lets ERROR through.
        min_level = request.min_level or common_pb2.LOG_LEVEL_INFO
        store, notifier = self.m.reads, self.m.notifier
        if request.HasField("after_seq"):
            last = max(request.after_seq, 0)
        else:
            last = store.last_seq(job_id)
            for entry in store.logs_tail(job_id, request.tail, min_level) if request.tail else []:
                yield coordinator_pb2.StreamJobLogsResponse(entry=log_proto(entry))
        while True:
            ev = notifier.event(job_id, LOGS)
            final = self.m.final_status(job_id)
            batch = store.logs_after(job_id, last, min_level, _LOG_BATCH)
            for entry in batch:
                yield coordinator_pb2.StreamJobLogsResponse(entry=log_proto(entry))
            if batch:
                last = batch[-1].seq
                continue
            if final is not None or not request.follow:
                status = final if final is not None else store.job_status(job_id) or 0
                yield coordinator_pb2.StreamJobLogsResponse(
                    end=coordinator_pb2.StreamEnd(job_id=job_id, status=as_status(status))
                )
                return
            if notifier.closed:
                raise StatusError(grpc.StatusCode.UNAVAILABLE, "coordinator is shutting down")
            await wait_event(ev, _FOLLOW_RECHECK_SECONDS)

    @stream
    async def StreamJobMetrics(
        self, request: coordinator_pb2.StreamJobMetricsRequest, context: Ctx
    ) -> AsyncGenerator[coordinator_pb2.StreamJobMetricsResponse, None]:
        row = self.m.caller_job(self.auth.caller(context), request.job_id)
        job_id = row.job_id
        interval = request.interval_seconds or 5
        if not 1 <= interval <= 60:
            raise invalid("interval_seconds: must be between 1 and 60")
        last_step = request.after_step if request.HasField("after_step") else -1
        last_sent = float("-inf")
        store, notifier = self.m.reads, self.m.notifier
        while True:
            ev = notifier.event(job_id, METRICS)
            final = self.m.final_status(job_id)
            latest = store.latest_metric_step(job_id)
            if latest is not None and latest > last_step:
                delay = last_sent + interval - time.monotonic()
                if delay > 0 and final is None:
                    await asyncio.sleep(delay)
                    continue
                epoch, ts, values = store.metrics_at(job_id, latest)
                snap = coordinator_pb2.MetricsSnapshot(
                    job_id=job_id,
                    step=latest,
                    epoch=epoch,
                    metrics=values,
                    system=self.m.process_stats(job_id),
                )
                snap.timestamp.CopyFrom(timestamp(ts))
                yield coordinator_pb2.StreamJobMetricsResponse(snapshot=snap)
                last_step, last_sent = latest, time.monotonic()
                continue
            if final is not None:
                yield coordinator_pb2.StreamJobMetricsResponse(
                    end=coordinator_pb2.StreamEnd(job_id=job_id, status=as_status(final))
                )
                return
            if notifier.closed:
                raise StatusError(grpc.StatusCode.UNAVAILABLE, "coordinator is shutting down")
            await wait_event(ev, _FOLLOW_RECHECK_SECONDS)

    @unary
    async def SubmitEvaluation(
        self, request: coordinator_pb2.SubmitEvaluationRequest, context: Ctx
    ) -> coordinator_pb2.SubmitEvaluationResponse:
        return submit_evaluation(self.m, self.auth.caller(context), request)

    @unary
    async def GetEvaluation(
        self, request: coordinator_pb2.GetEvaluationRequest, context: Ctx
    ) -> coordinator_pb2.Evaluation:
        return get_evaluation(self.m, self.auth.caller(context), request.evaluation_id)

    @unary
    async def ListEvaluations(
        self, request: coordinator_pb2.ListEvaluationsRequest, context: Ctx
    ) -> coordinator_pb2.ListEvaluationsResponse:
        caller = self.auth.caller(context)
        size = page_size(request.page_size)
        after = parse_page_token(request.page_token, _EVALUATION_ORDER)
        rows, total = self.m.reads.list_jobs(
            caller.tenant_id,
            [],
            {},
            "created_at",
            True,
            after,
            size + 1,
            job_type=EVALUATION,
            # Another tenant's job id simply matches nothing: an empty page, never a 404 that
            # would tell it exists.
            parent_job_id=request.job_id or None,
        )
        more = len(rows) > size
        rows = rows[:size]
        resp = coordinator_pb2.ListEvaluationsResponse(total_count=total)
        for row in rows:
            try:
                resp.evaluations.append(get_evaluation(self.m, caller, row.job_id))
            except StatusError as e:
                # A job row whose definition is gone (its ops store lost) is left out, rather
                # than making the whole page fail.
                if e.code != grpc.StatusCode.NOT_FOUND:
                    raise
                log.warning("evaluation %s has no definition; not listed", row.job_id)
        if more:
            last = rows[-1]
            resp.next_page_token = page_token(_EVALUATION_ORDER, last.created_at, last.job_id)
        return resp

    @unary
    async def ValidateData(
        self, request: coordinator_pb2.ValidateDataRequest, context: Ctx
    ) -> coordinator_pb2.ValidateDataResponse:
        caller = self.auth.caller(context)
        files = self.m.files.for_tenant(caller.tenant_id, caller.scaidrive_token)
        # Reads the sources (up to the byte limit): in a thread, so jobs and other calls are
        # served meanwhile.
        return await asyncio.to_thread(
            validate_data, request, files, self.m.config.validate_max_bytes
        )

    @unary
    async def GetDataCache(
        self, request: coordinator_pb2.GetDataCacheRequest, context: Ctx
    ) -> coordinator_pb2.GetDataCacheResponse:
        caller = self.auth.caller(context)
        return self.m.data_cache.listing(
            caller.tenant_id, request.node_id, (n.node_id for n in self.m.nodes)
        )
