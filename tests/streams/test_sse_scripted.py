"""SSE endpoints through a real uvicorn against a scripted streaming coordinator."""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from scaimind.gateway.app import create_app
from scaimind.gateway.streaming.feeds import FEED_BACKLOG
from scaimind.v1 import common_pb2, coordinator_pb2
from tests.conftest import auth, gateway_settings, wait_for
from tests.gateway.conftest import Failure
from tests.streams.conftest import (
    EventReader,
    ScriptedGrpc,
    Served,
    StreamingCoordinator,
    data_events,
    serve,
)

StartGateway = Callable[..., Awaitable[Served]]


@pytest.fixture
async def start_gateway(
    streaming_coordinator: ScriptedGrpc, tmp_path: Path
) -> AsyncIterator[StartGateway]:
    """Start the gateway (real uvicorn) in front of the scripted coordinator."""
    running: list[Served] = []

    async def start(*, send_buffer: int | None = None, **overrides: Any) -> Served:
        settings = gateway_settings(
            tmp_path,
            streaming_coordinator.port,
            **overrides,
        )
        s = await serve(create_app(settings), send_buffer=send_buffer)
        running.append(s)
        return s

    yield start
    for s in running:
        await s.stop()


@pytest.fixture
def coordinator(streaming_coordinator: ScriptedGrpc) -> StreamingCoordinator:
    """The scripted servicer."""
    return streaming_coordinator.servicer


async def test_log_stream_framing_headers_and_end(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    job = coordinator.job("job_a")
    for i in range(3):
        job.log(f"line {i + 1}")
    job.finish(common_pb2.JOB_STATUS_COMPLETED)
    gw = await start_gateway()
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", f"{gw.url}/jobs/job_a/logs", headers=auth()) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in r.headers
        raw = (await r.aread()).decode()
    blocks = raw.split("\n\n")
    assert blocks[-1] == ""
    entry = json.loads(blocks[0].split("\n")[2].removeprefix("data: "))
    assert blocks[0].split("\n")[:2] == ["id: 1", "event: log"]
    assert entry["seq"] == 1
    assert entry["level"] == "INFO"
    assert entry["message"] == "line 1"
    assert entry["source"] == "trainer"
    assert entry["node_id"] == "node-1"
    assert entry["timestamp"].endswith("Z")
    assert [b.split("\n")[0] for b in blocks[:3]] == ["id: 1", "id: 2", "id: 3"]
    assert blocks[3] == 'event: end\ndata: {"job_id":"job_a","status":"COMPLETED"}'
    assert blocks[4] == "data: [DONE]"
    assert len(blocks) == 6
    # A following stream: the shared feed is positioned after the newest entry (a tail=1
    # probe), follows from there, and this client's own catch-up fetched its tail.
    calls = [
        (r.follow, r.min_level, r.tail, r.after_seq if r.HasField("after_seq") else None)
        for r in (c.request for c in coordinator.calls if c.rpc == "StreamJobLogs")
        if isinstance(r, coordinator_pb2.StreamJobLogsRequest)
    ]
    assert calls[0] == (False, common_pb2.LOG_LEVEL_DEBUG, 1, None)
    assert sorted(calls[1:]) == [
        (False, common_pb2.LOG_LEVEL_INFO, 100, None),
        (True, common_pb2.LOG_LEVEL_INFO, 0, 3),
    ]
    assert coordinator.last("StreamJobLogs").metadata["x-tenant-id"] == "tenant-a"
    # The pre-flight GetJob came first.
    rpcs = [c.rpc for c in coordinator.calls]
    assert rpcs.index("GetJob") < rpcs.index("StreamJobLogs")


async def test_query_parameters_reach_the_coordinator(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    job = coordinator.job("job_q")
    job.log("debug detail", common_pb2.LOG_LEVEL_DEBUG)
    job.log("careful", common_pb2.LOG_LEVEL_WARNING)
    job.log("broken", common_pb2.LOG_LEVEL_ERROR)
    gw = await start_gateway()
    async with httpx.AsyncClient() as http:
        r = await http.get(
            f"{gw.url}/jobs/job_q/logs",
            params={"follow": "false", "level": "WARNING", "tail": 7},
            headers={**auth(), "Last-Event-ID": "1"},
        )
    assert r.status_code == 200
    req = coordinator.last("StreamJobLogs").request
    assert isinstance(req, coordinator_pb2.StreamJobLogsRequest)
    assert (req.follow, req.min_level, req.tail, req.after_seq) == (
        False,
        common_pb2.LOG_LEVEL_WARNING,
        7,
        1,
    )
    assert "event: end" in r.text
    assert [json.loads(line[6:])["message"] for line in r.text.split("\n") if '"seq"' in line] == [
        "careful",
        "broken",
    ]


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ({"level": "TRACE"}, {}, "level"),
        ({"tail": "10001"}, {}, "tail"),
        ({"tail": "-1"}, {}, "tail"),
        ({"follow": "maybe"}, {}, "follow"),
        ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
    ],
)
async def test_invalid_stream_parameters_are_422(
    start_gateway: StartGateway,
    coordinator: StreamingCoordinator,
    query: dict[str, str],
    headers: dict[str, str],
    field: str,
) -> None:
    coordinator.job("job_v")
    gw = await start_gateway()
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{gw.url}/jobs/job_v/logs", params=query, headers={**auth(), **headers})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["details"][0]["field"].lower() == field.lower()
    assert not any(c.rpc == "StreamJobLogs" for c in coordinator.calls)


async def test_preflight_errors_are_enveloped_not_streams(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    coordinator.job("job_p")
    gw = await start_gateway(grpc_timeout_s=0.5)
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{gw.url}/jobs/job_missing/logs", headers=auth())
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == "NOT_FOUND"
        r = await http.get(f"{gw.url}/jobs/job_p/metrics/stream", headers=auth(role="tenant_user"))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "AUTHZ_PERMISSION_DENIED"
        r = await http.get(f"{gw.url}/jobs/job_p/logs")
        assert r.status_code == 401
        coordinator.responses["GetJob"] = Failure(grpc.StatusCode.UNAVAILABLE, "down")
        r = await http.get(f"{gw.url}/jobs/job_p/logs", headers=auth())
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "BACKEND_UNAVAILABLE"
        assert r.headers["retry-after"] == "5"
    assert not any(c.rpc == "StreamJobLogs" for c in coordinator.calls)
    # Failed pre-flights gave their stream slots back.
    assert gw.server.config.app.state.scaimind.streams.limiter.open_streams() == 0


@pytest.mark.parametrize(
    ("failure", "code", "retryable"),
    [
        (
            Failure(
                grpc.StatusCode.INTERNAL,
                'Traceback (most recent call last):\n  File "/srv/x.py", line 3',
            ),
            "INTERNAL_ERROR",
            False,
        ),
        (Failure(grpc.StatusCode.UNAVAILABLE, "node gone"), "BACKEND_UNAVAILABLE", True),
        (Failure(grpc.StatusCode.NOT_FOUND, "job vanished"), "NOT_FOUND", False),
    ],
)
async def test_upstream_failure_after_200_is_an_error_event(
    start_gateway: StartGateway,
    coordinator: StreamingCoordinator,
    failure: Failure,
    code: str,
    retryable: bool,
) -> None:
    job = coordinator.job("job_f")
    job.log("first")
    gw = await start_gateway()
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", f"{gw.url}/jobs/job_f/logs", headers=auth()) as r,
    ):
        assert r.status_code == 200
        reader = EventReader(r)
        first = await reader.next()
        assert (first.event, first.id) == ("log", "1")
        job.fail_streams(failure)
        rest = data_events(await reader.rest())
    assert [e.event for e in rest] == ["error", "message"]
    assert rest[0].json() == {"error": "stream ended", "code": code, "retryable": retryable}
    assert rest[0].id is None
    assert rest[1].data == "[DONE]"
    assert "Traceback" not in rest[0].data


async def test_coordinator_stopped_mid_stream(
    start_gateway: StartGateway, streaming_coordinator: ScriptedGrpc
) -> None:
    job = streaming_coordinator.servicer.job("job_k")
    job.log("before the crash")
    gw = await start_gateway()
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", f"{gw.url}/jobs/job_k/logs", headers=auth()) as r,
    ):
        reader = EventReader(r)
        assert (await reader.next()).event == "log"
        await streaming_coordinator.server.stop(None)
        rest = data_events(await reader.rest())
    assert [e.event for e in rest] == ["error", "message"]
    assert rest[0].json()["retryable"] is True
    assert rest[0].json()["code"] in ("BACKEND_UNAVAILABLE", "CANCELLED")
    assert rest[1].data == "[DONE]"


async def test_client_disconnect_cancels_the_upstream_call(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    job = coordinator.job("job_d")
    job.log("hello")
    gw = await start_gateway()
    limiter_state = gw.server.config.app.state.scaimind
    async with httpx.AsyncClient() as http:
        async with http.stream("GET", f"{gw.url}/jobs/job_d/logs", headers=auth()) as r:
            reader = EventReader(r)
            assert (await reader.next()).data.startswith('{"seq":1')

            async def upstream_open() -> bool:
                return coordinator.open_streams == 1

            await wait_for(upstream_open, within=5)
        # Leaving the block closed the connection mid-stream.

        async def upstream_cancelled() -> bool:
            return coordinator.cancelled_streams == 1 and coordinator.open_streams == 0

        await wait_for(upstream_cancelled, within=5)

        async def slot_freed() -> bool:
            return limiter_state.streams.limiter.open_streams() == 0

        await wait_for(slot_freed, within=5)


@pytest.mark.uvloop
async def test_a_dead_connection_ends_its_stream_even_when_a_pipelined_request_hides_it(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    coordinator.job("job_p")  # a quiet job: the stream carries nothing but heartbeats
    gw = await start_gateway(sse_heartbeat_s=0.1)
    limiter = gw.server.config.app.state.scaimind.streams.limiter
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    token = auth()["Authorization"]
    # A second request behind the stream on the same connection: uvicorn tells only that one
    # of the disconnect, so the stream's own listener never hears of it.
    writer.write(
        "".join(
            f"GET {httpx.URL(f'{gw.url}{path}').raw_path.decode()} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {token}\r\n\r\n"
            for path in ("/jobs/job_p/metrics/stream", "/jobs/job_p")
        ).encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")

    async def upstream_open() -> bool:
        return coordinator.open_streams == 1

    await wait_for(upstream_open, within=5)
    writer.transport.abort()

    async def released() -> bool:
        return limiter.open_streams() == 0 and coordinator.open_streams == 0

    await wait_for(released, within=10)


async def test_server_shutdown_ends_open_streams_with_a_retryable_error(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    # uvicorn's graceful shutdown waits for every response to complete; the streams end
    # themselves when the server is told to exit. (Cut by timeout_graceful_shutdown instead,
    # they would end without these frames.)
    coordinator.job("job_s").log("running")
    gw = await start_gateway(sse_heartbeat_s=300)
    limiter = gw.server.config.app.state.scaimind.streams.limiter
    async with httpx.AsyncClient() as http:
        async with (
            http.stream("GET", f"{gw.url}/jobs/job_s/logs", headers=auth()) as logs,
            http.stream("GET", f"{gw.url}/jobs/job_s/metrics/stream", headers=auth()) as metrics,
        ):
            log_reader, metric_reader = EventReader(logs), EventReader(metrics)
            assert (await log_reader.next()).event == "log"
            stopping = asyncio.create_task(gw.stop())
            log_rest = data_events(await log_reader.rest(within=10))
            metric_rest = data_events(await metric_reader.rest(within=10))
        await stopping
    for rest in (log_rest, metric_rest):
        assert [e.event for e in rest][-2:] == ["error", "message"], rest
        assert rest[-2].json() == {
            "error": "stream ended",
            "code": "BACKEND_UNAVAILABLE",
            "retryable": True,
        }
        assert rest[-1].data == "[DONE]"
    assert limiter.open_streams() == 0


async def test_heartbeat_on_an_idle_stream(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    coordinator.job("job_h")
    gw = await start_gateway(sse_heartbeat_s=0.2)
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", f"{gw.url}/jobs/job_h/logs", headers=auth()) as r,
    ):
        reader = EventReader(r)
        first = await reader.next(within=5)
        second = await reader.next(within=5)
    assert first.is_comment
    assert first.comment == "ping"
    assert second.is_comment
    assert second.id is None


async def test_stream_cap_per_tenant(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    coordinator.job("job_c")
    gw = await start_gateway(stream_cap_per_tenant=2, sse_heartbeat_s=0.2)
    limiter = gw.server.config.app.state.scaimind.streams.limiter
    url = f"{gw.url}/jobs/job_c/logs"
    async with httpx.AsyncClient() as http, http.stream("GET", url, headers=auth()) as r1:
        assert r1.status_code == 200
        async with http.stream("GET", url, headers=auth()) as r2:
            assert r2.status_code == 200
            r3 = await http.get(url, headers=auth())
            assert r3.status_code == 429
            assert r3.json()["error"]["code"] == "RATE_LIMITED"
            assert r3.headers["retry-after"] == "5"
            assert r3.json()["error"]["retry_after"] == 5
            # The metrics stream counts against the same cap; other tenants do not.
            r4 = await http.get(f"{gw.url}/jobs/job_c/metrics/stream", headers=auth())
            assert r4.status_code == 429
            async with http.stream("GET", url, headers=auth("tenant-b")) as r5:
                assert r5.status_code == 200
        # r2 closed: its slot comes back.

        async def one_open() -> bool:
            return bool(limiter.open_streams("tenant-a") == 1)

        await wait_for(one_open, within=5)
        async with http.stream("GET", url, headers=auth()) as r6:
            assert r6.status_code == 200
            assert (await EventReader(r6).next(within=5)).is_comment


async def test_metrics_endpoint(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    coordinator.job("job_m")
    resp = coordinator_pb2.GetJobMetricsResponse(
        job_id="job_m",
        step=20,
        total_steps=100,
        epoch=1,
        latest={"loss": 1.5, "grad_norm": math.inf},
        series=[
            coordinator_pb2.MetricSeries(
                name="loss",
                points=[
                    coordinator_pb2.MetricPoint(step=10, value=2.0),
                    coordinator_pb2.MetricPoint(step=20, value=math.nan),
                ],
            )
        ],
        system={"cpu_percent": 50.0},
    )
    coordinator.responses["GetJobMetrics"] = resp
    gw = await start_gateway()
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{gw.url}/jobs/job_m/metrics?max_points=50", headers=auth())
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["job_id"] == "job_m"
        assert (data["step"], data["total_steps"], data["epoch"]) == (20, 100, 1)
        # JSON cannot carry NaN/inf: they are null.
        assert data["latest"] == {"loss": 1.5, "grad_norm": None}
        assert data["series"][0]["name"] == "loss"
        assert [(p["step"], p["value"]) for p in data["series"][0]["points"]] == [
            (10, 2.0),
            (20, None),
        ]
        assert set(data["series"][0]["points"][0]) == {"step", "value", "timestamp"}
        assert data["system"] == {"cpu_percent": 50.0}
        req = coordinator.last("GetJobMetrics").request
        assert isinstance(req, coordinator_pb2.GetJobMetricsRequest)
        assert req.max_points == 50
        r = await http.get(f"{gw.url}/jobs/job_m/metrics?max_points=-1", headers=auth())
        assert r.status_code == 422
        coordinator.responses["GetJobMetrics"] = Failure(grpc.StatusCode.NOT_FOUND, "no job")
        r = await http.get(f"{gw.url}/jobs/job_m/metrics", headers=auth())
        assert r.status_code == 404


async def test_metrics_stream_framing_and_resume(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    job = coordinator.job("job_s")
    job.snapshot(10, loss=2.0, learning_rate=0.001)
    job.snapshot(20, loss=1.0, learning_rate=0.001)
    gw = await start_gateway()
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", f"{gw.url}/jobs/job_s/metrics/stream?interval=2", headers=auth()) as r,
    ):
        reader = EventReader(r)
        first = data_events([await reader.next()])[0]
        assert (first.event, first.id) == ("metrics", "10")
        snap = first.json()
        assert snap["metrics"] == {"loss": 2.0, "learning_rate": 0.001}
        assert (snap["job_id"], snap["step"], snap["epoch"]) == ("job_s", 10, 0)
        assert snap["system"] == {"cpu_percent": 12.5}
        assert snap["timestamp"].endswith("Z")
        assert (await reader.next()).id == "20"
        job.snapshot(30, loss=math.nan)
        third = await reader.next()
        assert third.id == "30"
        assert third.json()["metrics"] == {"loss": None}
        job.finish(common_pb2.JOB_STATUS_CANCELLED)
        rest = data_events(await reader.rest())
    assert [e.event for e in rest] == ["end", "message"]
    assert rest[0].json() == {"job_id": "job_s", "status": "CANCELLED"}
    req = coordinator.last("StreamJobMetrics").request
    assert isinstance(req, coordinator_pb2.StreamJobMetricsRequest)
    assert (req.interval_seconds, req.HasField("after_step")) == (2, False)
    async with httpx.AsyncClient() as http:
        r = await http.get(
            f"{gw.url}/jobs/job_s/metrics/stream", headers={**auth(), "Last-Event-ID": "20"}
        )
    assert [line for line in r.text.split("\n") if line.startswith("id:")] == ["id: 30"]
    req = coordinator.last("StreamJobMetrics").request
    assert isinstance(req, coordinator_pb2.StreamJobMetricsRequest)
    assert (req.interval_seconds, req.after_step) == (5, 20)
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{gw.url}/jobs/job_s/metrics/stream?interval=61", headers=auth())
    assert r.status_code == 422


def follow_calls(coordinator: StreamingCoordinator) -> int:
    """How many following StreamJobLogs calls the coordinator received."""
    return sum(
        1
        for c in coordinator.calls
        if c.rpc == "StreamJobLogs" and getattr(c.request, "follow", False)
    )


async def test_followers_share_one_upstream_and_ordinary_requests_flow(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    job = coordinator.job("job_many")
    gw = await start_gateway()
    hub = gw.server.config.app.state.scaimind.streams.feeds
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=10) as http:
        opened: list[Any] = []

        async def open_one() -> None:
            ctx = http.stream("GET", f"{gw.url}/jobs/job_many/logs?tail=0", headers=auth())
            r = await ctx.__aenter__()
            assert r.status_code == 200
            opened.append((ctx, EventReader(r)))

        await asyncio.gather(*(open_one() for _ in range(50)))

        async def all_following() -> bool:
            return bool(hub.followers() == 50 and coordinator.open_streams == 1)

        await wait_for(all_following, within=10)
        stream_calls = [c.request for c in coordinator.calls if c.rpc == "StreamJobLogs"]
        # tail=0 needs no catch-up: the feed's position probe and the feed are all.
        assert len(stream_calls) == 2
        assert follow_calls(coordinator) == 1
        assert hub.feeds() == 1
        r = await http.get(f"{gw.url}/jobs/job_many", headers=auth())
        assert r.status_code == 200
        job.log("to everyone")
        got = await asyncio.gather(*(reader.next() for _, reader in opened))
        assert {(e.id, e.json()["message"]) for e in got} == {("1", "to everyone")}
        for ctx, _ in opened[:-1]:
            await ctx.__aexit__(None, None, None)
        # The feed lives while anyone follows it, and goes with the last follower.
        job.log("to the last one")
        assert (await opened[-1][1].next()).json()["message"] == "to the last one"
        assert coordinator.cancelled_streams == 0
        await opened[-1][0].__aexit__(None, None, None)

        async def upstream_cancelled() -> bool:
            return coordinator.open_streams == 0 and coordinator.cancelled_streams == 1

        await wait_for(upstream_cancelled, within=10)
        assert hub.feeds() == 0


async def test_late_followers_get_their_own_tail_or_resume_then_the_shared_feed(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    job = coordinator.job("job_late")
    for i in range(1, 4):
        job.log(f"line {i}")
    gw = await start_gateway()
    url = f"{gw.url}/jobs/job_late/logs"
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", url, headers=auth()) as ra,
    ):
        a = EventReader(ra)
        assert [(await a.next()).id for _ in range(3)] == ["1", "2", "3"]
        job.log("line 4")
        job.log("line 5")
        assert [(await a.next()).id for _ in range(2)] == ["4", "5"]
        async with (
            http.stream("GET", url, params={"tail": 2}, headers=auth()) as rb,
            http.stream("GET", url, headers={**auth(), "Last-Event-ID": "1"}) as rc,
            http.stream("GET", url, params={"level": "WARNING"}, headers=auth()) as rd,
        ):
            b, c, d = EventReader(rb), EventReader(rc), EventReader(rd)
            assert [(await b.next()).id for _ in range(2)] == ["4", "5"]
            assert [(await c.next()).id for _ in range(4)] == ["2", "3", "4", "5"]
            job.log("line 6")
            job.log("careful", common_pb2.LOG_LEVEL_WARNING)
            for reader in (a, b, c):
                assert [(await reader.next()).id for _ in range(2)] == ["6", "7"]
            assert (await d.next()).json()["message"] == "careful"
            job.finish()
            for reader in (a, b, c, d):
                rest = data_events(await reader.rest())
                assert [e.event for e in rest] == ["end", "message"]
    # INFO followers shared one feed, the WARNING follower had its own.
    assert follow_calls(coordinator) == 2


# SO_SNDBUF of the gateway's socket in the slow-client tests (the kernel doubles it).
SMALL_SEND_BUFFER = 16384


async def scrape(gw: Served) -> dict[str, float]:
    """The gateway's Prometheus samples (name → value)."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"http://127.0.0.1:{gw.port}/metrics")
    r.raise_for_status()
    return {
        name: float(value)
        for name, _, value in (
            line.rpartition(" ") for line in r.text.splitlines() if not line.startswith("#")
        )
        if name
    }


def event_ids(raw: bytes) -> list[int]:
    """The event ids in a raw chunked SSE body (framing sits between whole events)."""
    return [int(m) for m in re.findall(rb"(?:^|\n)id: (\d+)\n", raw)]


async def wait_subscribed(hub: Any, n: int) -> None:
    """Wait until n followers are positioned on the feed: every line logged later is theirs."""

    async def subscribed() -> bool:
        return bool(hub.subscribed() == n)

    await wait_for(subscribed, within=10)


class StalledClient:
    """A raw follow=true stream whose reader stops reading (tiny receive buffer)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> StalledClient:
        """Connect with a 4 KiB receive buffer, send the request, read only the head."""
        parsed = httpx.URL(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parsed.host, parsed.port))
        # A small limit: the StreamReader stops reading the socket once 128 KiB are buffered.
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        token = auth()["Authorization"]
        writer.write(
            f"GET {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {parsed.host}\r\n"
            f"Authorization: {token}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return cls(reader, writer)

    async def rest(self, within: float = 30) -> bytes:
        """Everything until the server closes the stream."""
        raw = bytearray()
        async with asyncio.timeout(within):
            while chunk := await self.reader.read(1 << 16):
                raw += chunk
        return bytes(raw)

    async def ids_until(self, last_id: int, within: float = 30) -> list[int]:
        """Read on until event `last_id` has arrived; every event id in order."""
        raw = bytearray()
        marker = f"\nid: {last_id}\n".encode()
        async with asyncio.timeout(within):
            while marker not in raw[-(1 << 16) - len(marker) :]:
                chunk = await self.reader.read(1 << 16)
                assert chunk, "stream ended"
                raw += chunk
        return event_ids(bytes(raw))

    def close(self) -> None:
        """Drop the connection."""
        self.writer.close()


async def test_a_stalled_follower_holds_up_nobody_and_then_catches_up_in_order(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    job = coordinator.job("job_stall")
    gw = await start_gateway(send_buffer=SMALL_SEND_BUFFER)
    hub = gw.server.config.app.state.scaimind.streams.feeds
    url = f"{gw.url}/jobs/job_stall/logs?tail=0"
    stalled = await StalledClient.open(url)
    dropped = await StalledClient.open(url)
    try:
        async with (
            httpx.AsyncClient(timeout=30) as http,
            http.stream("GET", url, headers=auth()) as r,
        ):
            healthy = EventReader(r)

            await wait_subscribed(hub, 3)
            lines = 100  # 800 KiB, far more than the stalled clients' sockets and buffers hold
            for i in range(1, lines + 1):
                job.log(f"{i:04d} " + "x" * 8192)
            # The reading client gets every line while the two others' sockets are full.
            got = [int((await healthy.next()).id or 0) for _ in range(lines)]
            assert got == list(range(1, lines + 1))
            (feed,) = hub._feeds.values()

            async def both_blocked() -> bool:
                return sum(sub.blocked is not None for sub in feed.subscribers) == 2

            await wait_for(both_blocked, within=10)
            metrics = await scrape(gw)
            assert metrics["scaimind_sse_streams_open"] == 3
            assert metrics["scaimind_log_feeds"] == 1
            assert metrics["scaimind_log_followers"] == 3
            assert metrics["scaimind_log_followers_blocked"] == 2
            # One stalled client leaves: its pending write is abandoned, the feed goes on.
            dropped.close()

            async def two_followers() -> bool:
                return bool(hub.followers() == 2)

            await wait_for(two_followers, within=10)
            job.log("after the drop")
            assert (await healthy.next()).json()["message"] == "after the drop"
            # The other reads again and receives everything, in order, once.
            assert await stalled.ids_until(lines + 1) == list(range(1, lines + 2))
            job.finish()
            assert [e.event for e in data_events(await healthy.rest())] == ["end", "message"]
    finally:
        # Closed however the test ends: a leaked socket's warning breaks a later test.
        stalled.close()
        dropped.close()


@pytest.mark.parametrize("quiet", [False, True], ids=["while-logging", "then-quiet"])
async def test_a_client_that_stops_reading_loses_its_stream_after_the_send_timeout(
    start_gateway: StartGateway, coordinator: StreamingCoordinator, quiet: bool
) -> None:
    job = coordinator.job("job_gone")
    # While logging, the heartbeat stays out of the way: only a blocked log write can end the
    # stream. Then quiet: one line larger than every buffer, whose write completes at once (the
    # server's transport takes it all), and nothing more but heartbeats, which find the socket
    # full: only a heartbeat's bounded wait can end it.
    gw = await start_gateway(
        send_buffer=SMALL_SEND_BUFFER,
        sse_send_timeout_s=0.5,
        sse_heartbeat_s=0.1 if quiet else 300,
    )
    streams = gw.server.config.app.state.scaimind.streams
    hub, limiter = streams.feeds, streams.limiter
    stalled = await StalledClient.open(f"{gw.url}/jobs/job_gone/logs?tail=0")
    try:
        await wait_subscribed(hub, 1)
        for line in ["x" * (1 << 20)] if quiet else [f"{i:04d} " + "x" * 8192 for i in range(100)]:
            job.log(line)

        async def closed() -> bool:
            if hub.followers() == 0 and limiter.open_streams() == 0:
                return True
            if not quiet:
                # Logging goes on: lines that all arrived before the dispatcher's first pass
                # go out in one write, which the server's transport may take whole; only a
                # later write finds the socket full.
                job.log("x" * 8192)
            return False

        # Its slot, its task and the upstream call go with it.
        await wait_for(closed, within=10)
        assert hub.feeds() == 0
        metrics = await scrape(gw)
        assert metrics["scaimind_sse_send_timeouts_total"] == 1
        assert metrics["scaimind_sse_streams_open"] == 0
    finally:
        stalled.close()


async def test_a_stream_open_for_its_maximum_time_ends_with_a_retryable_error(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    job = coordinator.job("job_long")
    job.log("first")
    gw = await start_gateway(sse_max_stream_s=1, sse_heartbeat_s=300)
    limiter = gw.server.config.app.state.scaimind.streams.limiter
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", f"{gw.url}/jobs/job_long/logs", headers=auth()) as r,
    ):
        reader = EventReader(r)
        assert (await reader.next()).json()["message"] == "first"
        rest = data_events(await reader.rest(within=10))
    assert [e.event for e in rest] == ["error", "message"], rest
    assert rest[0].json() == {
        "error": "stream ended",
        "code": "BACKEND_UNAVAILABLE",
        "retryable": True,
    }
    assert rest[1].data == "[DONE]"
    assert limiter.open_streams() == 0


async def test_an_expiring_stream_whose_client_reads_slowly_still_gets_the_retryable_end(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    job = coordinator.job("job_slow")
    gw = await start_gateway(send_buffer=4096, sse_heartbeat_s=300, sse_max_stream_s=0.5)
    hub = gw.server.config.app.state.scaimind.streams.feeds
    slow = await StalledClient.open(f"{gw.url}/jobs/job_slow/logs?tail=0")
    await wait_subscribed(hub, 1)
    # One 1.5 MB line is in the server's transport at once; the stream expires while the client
    # is still working through it, at ≈ 600 KB/s (2 s more): a farewell cut after 1 s would
    # leave it with an unfinished body and no word to resume.
    job.log("x" * 1_500_000)
    raw = bytearray()
    async with asyncio.timeout(30):
        while chunk := await slow.reader.read(30_000):
            raw += chunk
            await asyncio.sleep(0.05)  # the client's pace, not synchronisation
    slow.close()
    body = bytes(raw)
    assert body.endswith(b"0\r\n\r\n"), body[-200:]
    assert body.index(b'"code":"BACKEND_UNAVAILABLE","retryable":true') < body.index(b"[DONE]")


async def test_a_follower_left_behind_by_the_feed_is_told_to_resume_and_can(
    start_gateway: StartGateway, coordinator: StreamingCoordinator
) -> None:
    job = coordinator.job("job_behind")
    gw = await start_gateway(send_buffer=SMALL_SEND_BUFFER)
    hub = gw.server.config.app.state.scaimind.streams.feeds
    url = f"{gw.url}/jobs/job_behind/logs?tail=0"
    stalled = await StalledClient.open(url)
    await wait_subscribed(hub, 1)
    # The stalled client's socket fills after a few hundred lines, and the feed keeps only
    # 5,000-10,000, so by the time it reads again its next line is gone.
    lines = 2 * FEED_BACKLOG + 2000
    for i in range(1, lines + 1):
        job.log(f"line {i:05d}")

    async def fed() -> bool:
        feeds = list(hub._feeds.values())
        return bool(feeds and feeds[0].end_index == lines)

    await wait_for(fed, within=30)
    body = await stalled.rest()
    stalled.close()
    ids, raw = event_ids(body), body.decode()
    assert ids == list(range(1, len(ids) + 1))
    assert 0 < len(ids) < lines
    # After its last line: the retryable error, then [DONE].
    error_at = raw.index('"code":"RESOURCE_EXHAUSTED","retryable":true')
    assert raw.rindex("\nid: ") < error_at < raw.index("data: [DONE]")
    assert (await scrape(gw))["scaimind_log_followers_lagging_total"] == 1
    # Resuming from the last id it got continues exactly where it stopped.
    headers = {**auth(), "Last-Event-ID": str(ids[-1])}
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("GET", url, params={"tail": 100}, headers=headers) as r,
    ):
        reader = EventReader(r)
        assert (await reader.next()).id == str(ids[-1] + 1)


async def test_a_body_over_the_limit_on_an_open_stream_ends_it_with_an_error_event(
    start_gateway: StartGateway, coordinator: StreamingCoordinator, caplog: pytest.LogCaptureFixture
) -> None:
    # Once the 200 is out the 413 cannot be sent; the stream ends in-band instead, whole.
    coordinator.job("job_b").log("running")
    gw = await start_gateway(sse_heartbeat_s=300, max_body_bytes=1024)
    limiter = gw.server.config.app.state.scaimind.streams.limiter
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    path = httpx.URL(f"{gw.url}/jobs/job_b/logs").raw_path.decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth()['Authorization']}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"event: log" in await reader.readuntil(b"\n\n")
    chunk = b"x" * 512
    for _ in range(3):  # 1,536 bytes: over the limit
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
    writer.close()
    assert b'"code":"PAYLOAD_TOO_LARGE"' in rest.replace(b" ", b""), rest
    assert b"data: [DONE]" in rest, rest

    async def released() -> bool:
        return limiter.open_streams() == 0 and coordinator.open_streams == 0

    await wait_for(released, within=10)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.records
