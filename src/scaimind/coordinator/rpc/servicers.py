"""gRPC servicers of the reference coordinator: metadata checks, then one manager call each."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.data.scaidrive import TOKEN_METADATA
from scaimind.coordinator.data.validation import validate_data
from scaimind.coordinator.executors.inventory import slot_memory_bytes
from scaimind.coordinator.jobs.manager import JobManager
from scaimind.coordinator.jobs.notifier import LOGS, METRICS, wait_event
from scaimind.coordinator.jobs.runtime import CallerContext
from scaimind.coordinator.persistence.store import ORDER_COLUMNS
from scaimind.coordinator.rpc.messages import (
    RUNNING,
    as_status,
    in_view,
    log_proto,
    node_status_name,
    set_time,
    status_name,
    timestamp,
)
from scaimind.coordinator.status import CoordinatorError, invalid, precondition
from scaimind.coordinator.workloads.evaluation import (
    EVALUATION,
    get_evaluation,
    remember_token,
    submit_evaluation,
)
from scaimind.identity import validate_identity
from scaimind.limits import first_violation
from scaimind.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
)

log = logging.getLogger(__name__)

COORDINATOR_VERSION = "scaimind-reference-coordinator/0.1.0"
DEFAULT_MAX_POINTS = 500
MAX_TAIL = 10_000
_LOG_BATCH = 500
# Followers re-check the job even without a notification this often (a safety net only).
_FOLLOW_RECHECK_SECONDS = 15.0
_OTHER_TENANT = "(another tenant)"
# The order of ListEvaluations pages, also what their tokens are issued for (a ListJobs token is
# not one of them).
_EVALUATION_ORDER = "evaluations created_at desc"

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")
Q = TypeVar("Q")


def _metadata(context: Ctx) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key.lower()] = value
    return out


class _Auth:
    """Checks x-api-secret and extracts the caller from metadata."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self._secret = config.api_secret
        self._open = config.allow_unauthenticated and not config.api_secret

    def caller(self, context: Ctx) -> CallerContext:
        """The authenticated caller, or UNAUTHENTICATED."""
        md = _metadata(context)
        if not self._open:
            given = md.get("x-api-secret", "")
            if not given or not hmac.compare_digest(given.encode(), (self._secret or "").encode()):
                raise CoordinatorError(
                    grpc.StatusCode.UNAUTHENTICATED, "invalid or missing x-api-secret"
                )
        tenant = md.get("x-tenant-id", "")
        if not tenant:
            raise CoordinatorError(
                grpc.StatusCode.UNAUTHENTICATED, "x-tenant-id metadata is required"
            )
        user = md.get("x-user-id", "")
        try:
            # Refused, never normalised: the gateway must see the same tenant as we do.
            validate_identity(tenant, "x-tenant-id")
            if user:
                validate_identity(user, "x-user-id")
        except ValueError as e:
            raise CoordinatorError(grpc.StatusCode.UNAUTHENTICATED, str(e)) from None
        return CallerContext(
            tenant_id=tenant,
            user_id=user,
            idempotency_key=md.get("x-idempotency-key", ""),
            scaidrive_token=md.get(TOKEN_METADATA, ""),
        )


def _admit(auth: _Auth, request: Any, context: Ctx) -> None:
    """Authenticate, then hold the request to the caps every caller shares (scaimind.limits)."""
    auth.caller(context)
    violation = first_violation(request)
    if violation is not None:
        raise invalid(f"{violation.field}: {violation.message}", field=violation.field)


def _unary(
    fn: Callable[[Any, Q, Ctx], Awaitable[R]],
) -> Callable[[Any, Q, Ctx], Awaitable[R]]:
    """Translate CoordinatorError (and unexpected errors) into the RPC status."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Q, context: Ctx) -> R:
        try:
            _admit(self.auth, request, context)
            return await fn(self, request, context)
        except CoordinatorError as e:
            await context.abort(e.code, e.message, e.trailing_metadata())
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal coordinator error")
        raise AssertionError("unreachable")  # abort always raises

    return wrapper


def _stream(
    fn: Callable[[Any, Q, Ctx], AsyncGenerator[R, None]],
) -> Callable[[Any, Q, Ctx], AsyncGenerator[R, None]]:
    """Like _unary, for server-streaming handlers."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Q, context: Ctx) -> AsyncGenerator[R, None]:
        try:
            _admit(self.auth, request, context)
            # aclosing: a client that goes away closes the inner generator right away.
            async with contextlib.aclosing(fn(self, request, context)) as items:
                async for item in items:
                    yield item
        except CoordinatorError as e:
            await context.abort(e.code, e.message, e.trailing_metadata())
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
            raise
        except Exception:
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal coordinator error")

    return wrapper


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


def _page_token(order: str, value: Any, job_id: str) -> str:
    raw = json.dumps({"o": order, "v": value, "id": job_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_page_token(token: str, order: str) -> tuple[Any, str] | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["o"] != order:
            raise invalid("page_token: was issued for a different order_by")
        value, job_id = data["v"], data["id"]
    except (binascii.Error, ValueError, KeyError, TypeError) as e:
        raise invalid("page_token: invalid") from e
    # Anyone can send a token: only what we issue (a column value and a job id) goes further.
    if not isinstance(value, str | int | float | None) or not isinstance(job_id, str):
        raise invalid("page_token: invalid")
    return value, job_id


def _check_view(view: int) -> None:
    if view not in coordinator_pb2.JobView.values():
        raise invalid(f"view: unknown view {view}; expected BASIC or FULL")


def _page_size(requested: int) -> int:
    size = requested or 20
    if not 1 <= size <= 100:
        raise invalid("page_size: must be between 1 and 100")
    return size


def _parse_order(order_by: str) -> tuple[str, bool]:
    parts = order_by.strip().lower().split()
    if not parts:
        return "created_at", True
    column = parts[0]
    if (
        column not in ORDER_COLUMNS
        or len(parts) > 2
        or (len(parts) == 2 and parts[1] not in ("asc", "desc"))
    ):
        raise invalid(
            f"order_by: expected '<field> [asc|desc]' with field one of {', '.join(ORDER_COLUMNS)}"
        )
    return column, (parts[1] == "desc") if len(parts) == 2 else column != "name"


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """Jobs, logs, metrics, evaluations and data."""

    def __init__(self, manager: JobManager, config: CoordinatorConfig) -> None:
        self.m = manager
        self.auth = _Auth(config)

    @_unary
    async def SubmitJob(
        self, request: coordinator_pb2.SubmitJobRequest, context: Ctx
    ) -> coordinator_pb2.SubmitJobResponse:
        caller = self.auth.caller(context)
        resp = self.m.submit(caller, request)
        remember_token(self.m, resp.job_id, caller.scaidrive_token)
        return resp

    @_unary
    async def ListJobs(
        self, request: coordinator_pb2.ListJobsRequest, context: Ctx
    ) -> coordinator_pb2.ListJobsResponse:
        caller = self.auth.caller(context)
        size = _page_size(request.page_size)
        for s in request.status_filter:
            if s not in common_pb2.JobStatus.values() or s == common_pb2.JOB_STATUS_UNSPECIFIED:
                raise invalid(f"status_filter: unknown status {s}")
        _check_view(request.view)
        column, desc = _parse_order(request.order_by)
        order_key = f"{column} {'desc' if desc else 'asc'}"
        after = _parse_page_token(request.page_token, order_key)
        rows, total = self.m.store.list_jobs(
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
            resp.next_page_token = _page_token(order_key, last.value(column), last.job_id)
        return resp

    @_unary
    async def GetJob(self, request: coordinator_pb2.GetJobRequest, context: Ctx) -> common_pb2.Job:
        _check_view(request.view)
        job = self.m.job_message(self.m.caller_job(self.auth.caller(context), request.job_id))
        return in_view(job, request.view, coordinator_pb2.JOB_VIEW_FULL)

    @_unary
    async def CancelJob(
        self, request: coordinator_pb2.CancelJobRequest, context: Ctx
    ) -> coordinator_pb2.JobActionResponse:
        return self.m.cancel(self.auth.caller(context), request.job_id, request.reason)

    @_unary
    async def PauseJob(
        self, request: coordinator_pb2.PauseJobRequest, context: Ctx
    ) -> coordinator_pb2.JobActionResponse:
        save = request.save_checkpoint if request.HasField("save_checkpoint") else True
        remaining = context.time_remaining()
        # Answer just before the caller's deadline rather than let its call fail.
        wait = None if remaining is None else remaining - 0.5
        return await self.m.pause(self.auth.caller(context), request.job_id, save, wait)

    @_unary
    async def ResumeJob(
        self, request: coordinator_pb2.ResumeJobRequest, context: Ctx
    ) -> coordinator_pb2.JobActionResponse:
        caller = self.auth.caller(context)
        resp = self.m.resume(caller, request.job_id, request.checkpoint_id)
        remember_token(self.m, resp.job_id, caller.scaidrive_token)
        return resp

    @_unary
    async def RetryJob(
        self, request: coordinator_pb2.RetryJobRequest, context: Ctx
    ) -> coordinator_pb2.RetryJobResponse:
        caller = self.auth.caller(context)
        row = self.m.store.get_job(request.job_id, caller.tenant_id)
        if row is not None and row.job_type == EVALUATION:
            # An evaluation has no checkpoint to continue from; it is simply submitted again.
            raise precondition(
                f"job {request.job_id} is an evaluation ({status_name(row.status)}); "
                "evaluations are not retried, submit a new evaluation instead"
            )
        resp = self.m.retry(caller, request)
        remember_token(self.m, resp.job_id, caller.scaidrive_token)
        return resp

    @_unary
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
        for name, points in sorted(self.m.store.metric_series(row.job_id).items()):
            series = resp.series.add(name=name)
            for step, value, ts in downsample(points, max_points):
                p = series.points.add(step=step, value=value)
                set_time(p.timestamp, ts)
        return resp

    @_stream
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
        store, notifier = self.m.store, self.m.notifier
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
                raise CoordinatorError(grpc.StatusCode.UNAVAILABLE, "coordinator is shutting down")
            await wait_event(ev, _FOLLOW_RECHECK_SECONDS)

    @_stream
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
        store, notifier = self.m.store, self.m.notifier
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
                raise CoordinatorError(grpc.StatusCode.UNAVAILABLE, "coordinator is shutting down")
            await wait_event(ev, _FOLLOW_RECHECK_SECONDS)

    @_unary
    async def SubmitEvaluation(
        self, request: coordinator_pb2.SubmitEvaluationRequest, context: Ctx
    ) -> coordinator_pb2.SubmitEvaluationResponse:
        return submit_evaluation(self.m, self.auth.caller(context), request)

    @_unary
    async def GetEvaluation(
        self, request: coordinator_pb2.GetEvaluationRequest, context: Ctx
    ) -> coordinator_pb2.Evaluation:
        return get_evaluation(self.m, self.auth.caller(context), request.evaluation_id)

    @_unary
    async def ListEvaluations(
        self, request: coordinator_pb2.ListEvaluationsRequest, context: Ctx
    ) -> coordinator_pb2.ListEvaluationsResponse:
        caller = self.auth.caller(context)
        size = _page_size(request.page_size)
        after = _parse_page_token(request.page_token, _EVALUATION_ORDER)
        rows, total = self.m.store.list_jobs(
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
            except CoordinatorError as e:
                # A job row whose definition is gone (its ops store lost) is left out, rather
                # than making the whole page fail.
                if e.code != grpc.StatusCode.NOT_FOUND:
                    raise
                log.warning("evaluation %s has no definition; not listed", row.job_id)
        if more:
            last = rows[-1]
            resp.next_page_token = _page_token(_EVALUATION_ORDER, last.created_at, last.job_id)
        return resp

    @_unary
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

    @_unary
    async def GetDataCache(
        self, request: coordinator_pb2.GetDataCacheRequest, context: Ctx
    ) -> coordinator_pb2.GetDataCacheResponse:
        caller = self.auth.caller(context)
        return self.m.data_cache.listing(
            caller.tenant_id, request.node_id, (n.node_id for n in self.m.nodes)
        )


class ClusterServicer(cluster_pb2_grpc.ClusterServiceServicer):
    """Nodes, drain/enable and queues."""

    def __init__(self, manager: JobManager, config: CoordinatorConfig) -> None:
        self.m = manager
        self.auth = _Auth(config)
        self.cluster_name = config.cluster_name

    def _node(self, node_id: str, tenant_id: str) -> cluster_pb2.Node:
        spec = next((n for n in self.m.nodes if n.node_id == node_id), None)
        if spec is None:
            raise CoordinatorError(grpc.StatusCode.NOT_FOUND, f"node {node_id} not found")
        slots = self.m.slots_of(node_id)
        node = cluster_pb2.Node(
            node_id=spec.node_id,
            hostname=spec.hostname,
            status=self.m.node_status(node_id),  # type: ignore[arg-type]
            gpu_type=spec.gpu_type,
            gpu_count=spec.gpu_count,
            gpus_available=sum(1 for j in slots if j is None),
            labels=spec.labels,
            drain_reason=self.m.drain_reason(node_id),
        )
        node.last_heartbeat.CopyFrom(timestamp(time.time()))
        memory = slot_memory_bytes(spec)
        # Once per job on the node (in slot order), not once per slot.
        share = Counter(j for j in slots if j is not None)
        stats = {job_id: self.m.process_stats(job_id) for job_id in share}
        mine = {j for j in share if self.m.store.get_job(j, tenant_id) is not None}
        for index, job_id in enumerate(slots):
            gpu = node.gpus.add(index=index, memory_total_bytes=memory)
            if job_id is None:
                continue
            job_stats, slots_of_job = stats[job_id], share[job_id]
            gpu.utilization_percent = min(100.0, job_stats.get("cpu_percent", 0.0) / slots_of_job)
            gpu.memory_used_bytes = int(job_stats.get("memory_used_bytes", 0.0) / slots_of_job)
            # Job ids of other tenants are not shown; the slot is still visibly in use.
            gpu.job_id = job_id if job_id in mine else _OTHER_TENANT
        node.running_job_ids.extend(j for j in share if j in mine)
        return node

    def _measured_percent(self) -> float:
        """Sum over all slots of their measured utilisation percent."""
        busy = 0.0
        for spec in self.m.nodes:
            slots = self.m.slots_of(spec.node_id)
            for job_id in {j for j in slots if j is not None}:
                share = sum(1 for j in slots if j == job_id)
                cpu = self.m.process_stats(job_id).get("cpu_percent", 0.0)
                busy += min(100.0 * share, cpu)
        return busy

    @_unary
    async def GetClusterStatus(
        self, request: cluster_pb2.GetClusterStatusRequest, context: Ctx
    ) -> cluster_pb2.ClusterStatus:
        self.auth.caller(context)
        status = cluster_pb2.ClusterStatus(
            cluster_name=self.cluster_name,
            total_nodes=len(self.m.nodes),
            coordinator_version=COORDINATOR_VERSION,
        )
        by_type: dict[str, list[int]] = {}
        total = available = allocated = 0
        for spec in self.m.nodes:
            node_status = self.m.node_status(spec.node_id)
            name = node_status_name(node_status)
            status.nodes_by_status[name] = status.nodes_by_status[name] + 1
            slots = self.m.slots_of(spec.node_id)
            free = sum(1 for j in slots if j is None)
            total += len(slots)
            allocated += len(slots) - free
            # Free slots on a drained node cannot take work, so they are not available.
            usable = free if node_status == cluster_pb2.NODE_STATUS_ONLINE else 0
            available += usable
            t = by_type.setdefault(spec.gpu_type, [0, 0])
            t[0] += len(slots)
            t[1] += usable
        status.total_gpus, status.available_gpus, status.allocated_gpus = (
            total,
            available,
            allocated,
        )
        for gpu_type, (t_total, t_avail) in sorted(by_type.items()):
            status.gpu_types.add(gpu_type=gpu_type, total=t_total, available=t_avail)
        counts = self.m.store.count_by_status()
        for number, count in counts.items():
            status.jobs_by_status[status_name(number)] = count
        status.running_jobs = sum(v for k, v in counts.items() if k in RUNNING)
        status.queued_jobs = counts.get(common_pb2.JOB_STATUS_QUEUED, 0) + counts.get(
            common_pb2.JOB_STATUS_PENDING, 0
        )
        # Measured, not allocated: the mean over every slot of its job process's CPU share
        # (the same figure as each node's gpus[].utilization_percent; free slots count as 0).
        status.utilization.gpu_percent = self._measured_percent() / total if total else 0.0
        status.updated_at.CopyFrom(timestamp(time.time()))
        return status

    @_unary
    async def ListNodes(
        self, request: cluster_pb2.ListNodesRequest, context: Ctx
    ) -> cluster_pb2.ListNodesResponse:
        caller = self.auth.caller(context)
        size = _page_size(request.page_size)
        wanted = request.status_filter.strip().upper().removeprefix("NODE_STATUS_")
        if wanted and "NODE_STATUS_" + wanted not in cluster_pb2.NodeStatus.keys():  # noqa: SIM118
            raise invalid(f"status_filter: unknown node status {request.status_filter!r}")
        ids = [
            n.node_id
            for n in self.m.nodes
            if not wanted or node_status_name(self.m.node_status(n.node_id)) == wanted
        ]
        try:
            start = int(request.page_token or "0")
        except ValueError as e:
            raise invalid("page_token: invalid") from e
        if start < 0:
            raise invalid("page_token: invalid")
        resp = cluster_pb2.ListNodesResponse(total_count=len(ids))
        resp.nodes.extend(self._node(i, caller.tenant_id) for i in ids[start : start + size])
        if start + size < len(ids):
            resp.next_page_token = str(start + size)
        return resp

    @_unary
    async def GetNode(self, request: cluster_pb2.GetNodeRequest, context: Ctx) -> cluster_pb2.Node:
        caller = self.auth.caller(context)
        return self._node(request.node_id, caller.tenant_id)

    @_unary
    async def DrainNode(
        self, request: cluster_pb2.DrainNodeRequest, context: Ctx
    ) -> cluster_pb2.Node:
        caller = self.auth.caller(context)
        self.m.drain(request.node_id, request.force, request.reason or "drained by an operator")
        return self._node(request.node_id, caller.tenant_id)

    @_unary
    async def EnableNode(
        self, request: cluster_pb2.EnableNodeRequest, context: Ctx
    ) -> cluster_pb2.Node:
        caller = self.auth.caller(context)
        self.m.enable(request.node_id)
        return self._node(request.node_id, caller.tenant_id)

    @_unary
    async def GetQueueStatus(
        self, request: cluster_pb2.GetQueueStatusRequest, context: Ctx
    ) -> cluster_pb2.GetQueueStatusResponse:
        caller = self.auth.caller(context)
        self.m.schedule()
        view = self.m.queue_view()
        running = self.m.running_in_queue()
        # Only queues the caller has work in (and the default) are listed: another tenant's
        # queue names are theirs; its load shows only as the numbers of a shared queue.
        mine = set(self.m.running_in_queue(caller.tenant_id))
        mine |= {
            name
            for name, ids in view.items()
            if any(self.m.store.get_job(j, caller.tenant_id) is not None for j in ids)
        }
        names = sorted(mine | {"default"})
        if request.queue_name:
            names = [request.queue_name]
        resp = cluster_pb2.GetQueueStatusResponse()
        now = time.time()
        for name in names:
            ids = view.get(name, [])
            q = resp.queues.add(queue_name=name, depth=len(ids), running=running.get(name, 0))
            oldest = 0.0
            for position, job_id in enumerate(ids, start=1):
                row = self.m.store.get_job(job_id)
                if row is None:
                    continue
                waited = now - row.queued_at
                oldest = max(oldest, waited)
                if row.tenant_id != caller.tenant_id:
                    continue
                q.jobs.add(
                    job_id=job_id,
                    name=row.name,
                    position=position,
                    priority=row.priority,
                    gpu_count=row.gpu_count,
                    gpu_type=row.gpu_type,
                    wait_seconds=int(waited),
                    estimated_start_seconds=self.m.estimate(job_id),
                )
            q.oldest_wait_seconds = int(oldest)
            q.estimated_wait_seconds = self.m.estimate(ids[-1]) if ids else 0
            resp.total_depth += q.depth
        return resp
