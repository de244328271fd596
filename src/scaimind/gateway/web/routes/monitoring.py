"""Monitoring endpoints: metric series, live logs and live metrics (docs/API.md, "Monitoring")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated, Final

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response

from scaimind.contract import limits
from scaimind.gateway.state import State
from scaimind.gateway.streaming.feeds import DirectSend, follow_logs
from scaimind.gateway.streaming.framing import relay, render_log, render_snapshot
from scaimind.gateway.streaming.limiter import StreamLimiter, StreamSlot
from scaimind.gateway.streaming.response import EventStream
from scaimind.gateway.web.deps import Caller, ClientDep, Hub, Limiter, StateDep, Viewer
from scaimind.gateway.web.openapi import MODULE, errors, sse_responses
from scaimind.gateway.web.responses import data_response
from scaimind.gateway.web.schemas.views import Data, JobMetrics
from scaimind.v1 import common_pb2, coordinator_pb2

router = APIRouter(prefix="/jobs", tags=["monitoring"], responses=errors(*MODULE))

JobId = Annotated[
    str, Path(min_length=1, max_length=limits.ID_CHARS, description="The job's id (job_…).")
]
# Browsers send back the last `id:` they saw; ours are always seq/step numbers.
LastEventId = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=2**62,
        description="Resume after this event id (a log `seq` or a metrics `step`).",
    ),
]

_INT32_MAX: Final = 2**31 - 1
_LOG_EXAMPLE: Final = (
    'event: log\nid: 42\ndata: {"seq": 42, "level": "INFO", "message": '
    '"step 40 loss 1.93", "timestamp": "2025-01-31T12:00:00.000Z", "source": '
    '"trainer", "node_id": "node-local", "job_id": "job_1"}\n\n: ping\n\n'
    'event: end\ndata: {"job_id": "job_1", "status": "COMPLETED"}\n\n'
    "data: [DONE]\n\n"
)
_METRICS_EXAMPLE: Final = (
    'event: metrics\nid: 40\ndata: {"job_id": "job_1", "step": 40, "epoch": 0, '
    '"timestamp": "2025-01-31T12:00:00.000Z", "metrics": {"loss": 1.93}, '
    '"system": {"cpu_percent": 98.5}}\n\ndata: [DONE]\n\n'
)


class LogLevel(StrEnum):
    """Minimum level of the log entries to send; ERROR entries always pass."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"


_LEVELS: Final = {
    LogLevel.DEBUG: common_pb2.LOG_LEVEL_DEBUG,
    LogLevel.INFO: common_pb2.LOG_LEVEL_INFO,
    LogLevel.WARNING: common_pb2.LOG_LEVEL_WARNING,
}


@router.get("/{job_id}/metrics", response_model=Data[JobMetrics])
async def get_job_metrics(
    job_id: JobId,
    who: Viewer,
    client: ClientDep,
    max_points: Annotated[
        int,
        Query(
            ge=0,
            le=_INT32_MAX,
            description="Points per series (first, last, each bucket's min and max kept); "
            "0 = the coordinator's default (500).",
        ),
    ] = 0,
) -> Response:
    """Every metric series of a job, downsampled without hiding spikes."""
    resp = await client.get_job_metrics(job_id, who.ctx, max_points=max_points)
    # NaN/±inf (a diverged loss) go out as null, as orjson renders them.
    return data_response(resp)


@router.get("/{job_id}/logs", response_class=Response, responses=sse_responses("log", _LOG_EXAMPLE))
async def stream_job_logs(
    job_id: JobId,
    who: Viewer,
    state: StateDep,
    limiter: Limiter,
    hub: Hub,
    follow: Annotated[
        bool, Query(description="Keep streaming until the job ends; false sends the tail.")
    ] = True,
    level: Annotated[
        LogLevel, Query(description="Minimum level; ERROR entries always pass.")
    ] = LogLevel.INFO,
    tail: Annotated[int, Query(ge=0, le=10_000, description="Recent entries sent first.")] = 100,
    last_event_id: LastEventId = None,
) -> Response:
    """Log entries of a job as Server-Sent Events, live until the job ends."""
    slot = await _preflight(limiter, state, who, job_id)
    req = coordinator_pb2.StreamJobLogsRequest(
        job_id=job_id, follow=follow, min_level=_LEVELS[level], tail=tail
    )
    if last_event_id is not None:
        req.after_seq = last_event_id
    if not follow:
        events = relay(state.client.stream_job_logs(req, who.ctx), job_id=job_id, render=render_log)
        return _event_stream(state, events, slot)
    direct = DirectSend()
    return _event_stream(state, follow_logs(hub, state.client, who.ctx, req, direct), slot, direct)


@router.get(
    "/{job_id}/metrics/stream",
    response_class=Response,
    responses=sse_responses("metrics", _METRICS_EXAMPLE),
)
async def stream_job_metrics(
    job_id: JobId,
    who: Viewer,
    state: StateDep,
    limiter: Limiter,
    interval: Annotated[
        int, Query(ge=1, le=60, description="Seconds between snapshots at most.")
    ] = 5,
    last_event_id: LastEventId = None,
) -> Response:
    """Metric snapshots of a job as Server-Sent Events, live until the job ends."""
    slot = await _preflight(limiter, state, who, job_id)
    req = coordinator_pb2.StreamJobMetricsRequest(job_id=job_id, interval_seconds=interval)
    if last_event_id is not None:
        req.after_step = last_event_id
    events = relay(
        state.client.stream_job_metrics(req, who.ctx), job_id=job_id, render=render_snapshot
    )
    return _event_stream(state, events, slot)


async def _preflight(limiter: StreamLimiter, state: State, who: Caller, job_id: str) -> StreamSlot:
    """A stream slot for the caller, once the job is known to exist and be theirs."""
    slot = limiter.acquire(who.user.tenant_id)
    try:
        # Pre-flight: a missing job, a foreign tenant or a down coordinator is an ordinary
        # HTTP error, not a 200 stream that fails at once.
        await state.client.get_job(job_id, who.ctx)
    except BaseException:
        slot.release()
        raise
    return slot


def _event_stream(
    state: State, events: AsyncIterator[bytes], slot: StreamSlot, direct: DirectSend | None = None
) -> EventStream:
    return EventStream(
        events,
        heartbeat_s=state.settings.sse_heartbeat_s,
        send_timeout_s=state.settings.sse_send_timeout_s,
        max_stream_s=state.settings.sse_max_stream_s,
        slot=slot,
        direct=direct,
    )
