"""Real uvicorn servers on loopback, SSE reading helpers and a scripted streaming coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
import uvicorn
import uvloop
from fastapi import FastAPI
from google.protobuf.timestamp_pb2 import Timestamp

from scaimind.cli.sse import SSEEvent, SSEParser
from scaimind.v1 import (
    cluster_pb2_grpc,
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
)
from tests.conftest import wait_for
from tests.gateway.conftest import Failure, ScriptedCoordinator

if TYPE_CHECKING:
    from tests.streams.live import Live

PREFIX = "/v1/modules/scaimind"
TERMINAL = (
    common_pb2.JOB_STATUS_COMPLETED,
    common_pb2.JOB_STATUS_FAILED,
    common_pb2.JOB_STATUS_CANCELLED,
)


# --- the event loop -----------------------------------------------------------------------------


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop for tests marked `uvloop` (pytest-asyncio's hook), asyncio's loop for the rest.

    `scaimind serve` runs on uvloop, whose transports differ where it matters to streams: a
    write to a closed one raises, where asyncio's logs and drops it.
    """
    if item.get_closest_marker("uvloop") is None:
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


# --- a real server ----------------------------------------------------------------------------


@dataclass
class Served:
    """A uvicorn server running an app in this event loop."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def url(self) -> str:
        """Base URL of the module."""
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    async def stop(self) -> None:
        """Shut down (open streams are dropped, as a restart would)."""
        self.server.should_exit = True
        await self.task


async def serve(app: FastAPI, port: int = 0, *, send_buffer: int | None = None) -> Served:
    """Start uvicorn on 127.0.0.1:port (0 = any) and wait until it listens.

    `send_buffer` fixes SO_SNDBUF of the listening socket, which accepted connections inherit:
    a client that stops reading then blocks the server's writes after a few KiB whatever the
    machine's TCP autotuning limits are.
    """
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        log_level="warning",
        ws="none",
        # Open SSE streams would otherwise hold a shutdown until the client leaves.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    sockets = None
    if send_buffer is not None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        sock.bind(("127.0.0.1", port))
        sockets = [sock]
    task = asyncio.create_task(server.serve(sockets=sockets))
    await wait_for(_started(server, task), within=30)
    if task.done():
        task.result()
        raise AssertionError("uvicorn exited during start-up")
    sock_port = server.servers[0].sockets[0].getsockname()[1]
    return Served(server=server, task=task, port=sock_port)


def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> Callable[[], Any]:
    async def check() -> bool:
        return server.started or task.done()

    return check


@contextlib.asynccontextmanager
async def served(app: FastAPI, port: int = 0) -> AsyncIterator[Served]:
    """`serve` as a context manager."""
    s = await serve(app, port)
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    """Reference coordinator and gateway (tests/streams/live.py), stopped at the end."""
    from tests.streams.live import Live

    lv = Live(tmp_path)
    try:
        await lv.start_coordinator()
        await lv.start_gateway()
        yield lv
    finally:
        await lv.stop()


# --- reading a stream -------------------------------------------------------------------------


class EventReader:
    """Reads SSE events (comments included) from an open httpx streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self._parser = SSEParser()

    async def next(self, within: float = 15.0) -> SSEEvent:
        """The next event or comment; fails if none arrives in time or the stream ends."""
        async with asyncio.timeout(within):
            async for line in self._lines:
                event = self._parser.feed(line)
                if event is not None:
                    return event
        raise AssertionError("stream ended")

    async def rest(self, within: float = 15.0) -> list[SSEEvent]:
        """Every remaining event until the server closes the stream."""
        out: list[SSEEvent] = []
        async with asyncio.timeout(within):
            async for line in self._lines:
                event = self._parser.feed(line)
                if event is not None:
                    out.append(event)
        return out

    async def until(
        self, predicate: Callable[[SSEEvent], bool], within: float = 15.0
    ) -> list[SSEEvent]:
        """Events up to and including the first that matches."""
        out: list[SSEEvent] = []
        async with asyncio.timeout(within):
            while True:
                event = await self.next(within)
                out.append(event)
                if predicate(event):
                    return out


def data_events(events: list[SSEEvent]) -> list[SSEEvent]:
    """Events without the heartbeat comments."""
    return [e for e in events if not e.is_comment]


# --- a scripted streaming coordinator ---------------------------------------------------------


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


@dataclass
class FakeJob:
    """A job whose log and metrics the test writes and the scripted streams follow."""

    job_id: str
    status: int = common_pb2.JOB_STATUS_TRAINING
    entries: list[coordinator_pb2.LogEntry] = field(default_factory=list)
    snapshots: list[coordinator_pb2.MetricsSnapshot] = field(default_factory=list)
    # When set, streams abort with it once they have sent what exists.
    failure: Failure | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def log(self, message: str, level: int = common_pb2.LOG_LEVEL_INFO) -> None:
        """Append a log line."""
        self.entries.append(
            coordinator_pb2.LogEntry(
                seq=len(self.entries) + 1,
                level=level,  # type: ignore[arg-type]
                message=message,
                timestamp=_now(),
                source="trainer",
                node_id="node-1",
                job_id=self.job_id,
            )
        )
        self._wake()

    def snapshot(self, step: int, **metrics: float) -> None:
        """Append a metrics snapshot."""
        self.snapshots.append(
            coordinator_pb2.MetricsSnapshot(
                job_id=self.job_id,
                step=step,
                epoch=0,
                timestamp=_now(),
                metrics=metrics,
                system={"cpu_percent": 12.5},
            )
        )
        self._wake()

    def finish(self, status: int = common_pb2.JOB_STATUS_COMPLETED) -> None:
        """Move to a (terminal) status."""
        self.status = status
        self._wake()

    def fail_streams(self, failure: Failure) -> None:
        """Make every open stream abort."""
        self.failure = failure
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


def _passes(entry: coordinator_pb2.LogEntry, min_level: int) -> bool:
    floor = min_level or common_pb2.LOG_LEVEL_INFO
    return entry.level >= floor or entry.level == common_pb2.LOG_LEVEL_ERROR


@dataclass
class StreamingCoordinator(ScriptedCoordinator):
    """Scripted coordinator with follow-able log and metric streams; counts cancellations."""

    jobs: dict[str, FakeJob] = field(default_factory=dict)
    open_streams: int = 0
    cancelled_streams: int = 0

    def job(self, job_id: str, **kwargs: Any) -> FakeJob:
        """Create a job."""
        self.jobs[job_id] = FakeJob(job_id, **kwargs)
        return self.jobs[job_id]

    async def GetJob(self, request: Any, context: Any) -> Any:
        self.record("GetJob", request, context)
        failure = self.responses.get("GetJob")
        if isinstance(failure, Failure):
            await context.abort(failure.code, failure.detail)
        job = self.jobs.get(request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")
        assert job is not None
        return common_pb2.Job(job_id=job.job_id, status=job.status)  # type: ignore[arg-type]

    async def GetJobMetrics(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "GetJobMetrics",
            request,
            context,
            coordinator_pb2.GetJobMetricsResponse(job_id=request.job_id),
        )

    async def _follow(
        self, job: FakeJob, items: Callable[[], list[Any]], follow: bool
    ) -> AsyncIterator[Any]:
        """Yield items not yet sent; with follow, wait for more until the job is terminal."""
        self.open_streams += 1
        try:
            while True:
                changed = job.changed
                for item in items():
                    yield item
                if job.failure is not None:
                    return
                if not follow or job.status in TERMINAL:
                    return
                await changed.wait()
        except asyncio.CancelledError:
            self.cancelled_streams += 1
            raise
        finally:
            self.open_streams -= 1

    async def StreamJobLogs(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.record("StreamJobLogs", request, context)
        job = self.jobs.get(request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such job")
        assert job is not None
        matching = [e for e in job.entries if _passes(e, request.min_level)]
        if request.HasField("after_seq"):
            sent = request.after_seq
        elif request.tail and matching[-request.tail :]:
            sent = matching[-request.tail :][0].seq - 1
        else:
            sent = job.entries[-1].seq if job.entries else 0

        def new_entries() -> list[Any]:
            nonlocal sent
            out = [e for e in job.entries if e.seq > sent and _passes(e, request.min_level)]
            if job.entries:
                sent = max(sent, job.entries[-1].seq)
            return out

        async for entry in self._follow(job, new_entries, request.follow):
            yield coordinator_pb2.StreamJobLogsResponse(entry=entry)
        if job.failure is not None:
            await context.abort(job.failure.code, job.failure.detail)
        yield coordinator_pb2.StreamJobLogsResponse(
            end=coordinator_pb2.StreamEnd(job_id=job.job_id, status=job.status)  # type: ignore[arg-type]
        )

    async def StreamJobMetrics(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.record("StreamJobMetrics", request, context)
        job = self.jobs.get(request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such job")
        assert job is not None
        sent = request.after_step if request.HasField("after_step") else -1

        def new_snapshots() -> list[Any]:
            nonlocal sent
            out = [s for s in job.snapshots if s.step > sent]
            if out:
                sent = out[-1].step
            return out

        async for snap in self._follow(job, new_snapshots, follow=True):
            yield coordinator_pb2.StreamJobMetricsResponse(snapshot=snap)
        if job.failure is not None:
            await context.abort(job.failure.code, job.failure.detail)
        yield coordinator_pb2.StreamJobMetricsResponse(
            end=coordinator_pb2.StreamEnd(job_id=job.job_id, status=job.status)  # type: ignore[arg-type]
        )


@dataclass
class ScriptedGrpc:
    """The scripted coordinator's grpc.aio server."""

    servicer: StreamingCoordinator
    server: grpc.aio.Server
    port: int


@pytest.fixture
async def streaming_coordinator() -> AsyncIterator[ScriptedGrpc]:
    """A StreamingCoordinator listening on 127.0.0.1:<port>."""
    servicer = StreamingCoordinator()
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(servicer, server)
    cluster_pb2_grpc.add_ClusterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield ScriptedGrpc(servicer, server, port)
    finally:
        # Wake followers so their handlers end with the server.
        for job in servicer.jobs.values():
            job.finish(job.status)
        await server.stop(None)
