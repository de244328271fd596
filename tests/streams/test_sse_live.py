"""SSE endpoints end to end: real uvicorn, real reference coordinator, real CUSTOM jobs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from scaimind.cli.sse import SSEEvent, SSEParser
from scaimind.v1 import common_pb2
from tests.conftest import auth
from tests.streams.conftest import EventReader, data_events
from tests.streams.live import Live

DEBUG, INFO, WARNING, ERROR = (
    common_pb2.LOG_LEVEL_DEBUG,
    common_pb2.LOG_LEVEL_INFO,
    common_pb2.LOG_LEVEL_WARNING,
    common_pb2.LOG_LEVEL_ERROR,
)


def log_events(events: list[SSEEvent]) -> list[dict[str, Any]]:
    """The data of the `log` events."""
    return [e.json() for e in events if e.event == "log"]


async def test_tail_and_level_filters_match_the_coordinator(live: Live) -> None:
    job_id = await live.submit(lines=9)
    await live.wait_status(job_id, "COMPLETED")
    cases = [
        ({"level": "INFO"}, INFO, 100),
        ({"level": "DEBUG", "tail": "5"}, DEBUG, 5),
        ({"level": "WARNING"}, WARNING, 100),
        ({"level": "DEBUG", "tail": "10000"}, DEBUG, 10_000),
    ]
    async with httpx.AsyncClient() as http:
        for query, level, tail in cases:
            r = await http.get(
                f"{live.url}/jobs/{job_id}/logs",
                params={"follow": "false", **query},
                headers=auth(),
            )
            assert r.status_code == 200
            expected = await live.direct_logs(job_id, level=level, tail=tail)
            events = [e for e in _parse(r.text) if not e.is_comment]
            got = log_events(events)
            assert [g["seq"] for g in got] == [e.seq for e in expected], query
            assert [g["message"] for g in got] == [e.message for e in expected]
            assert [(e.event, e.id) for e in events[:-2]] == [("log", str(g["seq"])) for g in got]
            assert events[-2].event == "end"
            assert events[-2].json() == {"job_id": job_id, "status": "COMPLETED"}
            assert events[-1].data == "[DONE]"
        r = await http.get(
            f"{live.url}/jobs/{job_id}/logs",
            params={"follow": "false", "level": "DEBUG", "tail": "0"},
            headers=auth(),
        )
        assert log_events(_parse(r.text)) == []
    everything = await live.direct_logs(job_id, level=DEBUG)
    levels = {e.level for e in everything}
    assert {DEBUG, INFO, WARNING} <= levels
    warnings = await live.direct_logs(job_id, level=WARNING)
    assert warnings
    assert {e.level for e in warnings} <= {WARNING, ERROR}
    assert [e.message for e in everything if e.level == DEBUG][-1] == "debug 9"


async def test_follow_streams_live_lines_and_ends_when_the_job_completes(live: Live) -> None:
    job_id = await live.submit(lines=6, gate="go", gate_at=2)
    await live.wait_log(job_id, "line 2")
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream(
            "GET", f"{live.url}/jobs/{job_id}/logs", params={"level": "DEBUG"}, headers=auth()
        ) as r,
    ):
        reader = EventReader(r)
        seen = await reader.until(lambda e: e.event == "log" and e.json()["message"] == "line 2")
        live.gate("go").touch()
        rest = await reader.rest(within=30)
    events = data_events(seen + rest)
    got = log_events(events)
    full = await live.direct_logs(job_id, level=DEBUG)
    assert [g["seq"] for g in got] == [e.seq for e in full]
    assert [g["seq"] for g in got] == list(range(1, len(got) + 1))
    assert "line 6" in [g["message"] for g in got]
    assert events[-2].event == "end"
    assert events[-2].json()["status"] == "COMPLETED"
    assert events[-1].data == "[DONE]"


async def test_follow_ends_when_the_job_is_cancelled(live: Live) -> None:
    job_id = await live.submit(lines=5, gate="never", gate_at=1)
    await live.wait_log(job_id, "line 1")
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("GET", f"{live.url}/jobs/{job_id}/logs", headers=auth()) as r,
    ):
        reader = EventReader(r)
        await reader.until(lambda e: e.event == "log" and e.json()["message"] == "line 1")
        c = await http.post(f"{live.url}/jobs/{job_id}/cancel", json={}, headers=auth())
        assert c.status_code == 200, c.text
        rest = data_events(await reader.rest(within=30))
    assert rest[-2].event == "end"
    assert rest[-2].json() == {"job_id": job_id, "status": "CANCELLED"}
    assert rest[-1].data == "[DONE]"


async def test_resume_after_a_forced_disconnect_has_no_gap_and_no_duplicate(live: Live) -> None:
    job_id = await live.submit(lines=8, gate="more", gate_at=3)
    await live.wait_log(job_id, "line 3")
    url = f"{live.url}/jobs/{job_id}/logs"
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("GET", url, params={"level": "DEBUG"}, headers=auth()) as r:
            reader = EventReader(r)
            first = await reader.until(lambda e: e.event == "log" and e.json()["seq"] >= 4)
        # The connection is gone; the job goes on without a listener.
        live.gate("more").touch()
        await live.wait_status(job_id, "COMPLETED")
        last_id = [e.id for e in first if e.id is not None][-1]
        r2 = await http.get(
            url, params={"level": "DEBUG"}, headers={**auth(), "Last-Event-ID": last_id}
        )
    second = data_events(_parse(r2.text))
    seqs = [g["seq"] for g in log_events(first) + log_events(second)]
    full = await live.direct_logs(job_id, level=DEBUG)
    assert seqs == [e.seq for e in full]
    assert seqs == list(range(1, len(full) + 1))
    assert second[-2].event == "end"
    assert second[-1].data == "[DONE]"


async def test_coordinator_stopped_mid_stream_gives_error_then_done(live: Live) -> None:
    job_id = await live.submit(lines=3, gate="never", gate_at=1)
    await live.wait_log(job_id, "line 1")
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("GET", f"{live.url}/jobs/{job_id}/logs", headers=auth()) as r,
    ):
        reader = EventReader(r)
        await reader.until(lambda e: e.event == "log" and e.json()["message"] == "line 1")
        assert live.coordinator is not None
        await live.coordinator.stop()
        live.coordinator = None
        rest = data_events(await reader.rest(within=30))
    assert [e.event for e in rest[-2:]] == ["error", "message"]
    assert rest[-2].json() == {
        "error": "stream ended",
        "code": "BACKEND_UNAVAILABLE",
        "retryable": True,
    }
    assert rest[-1].data == "[DONE]"
    # With the coordinator gone, a new stream is refused before the 200.
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(f"{live.url}/jobs/{job_id}/logs", headers=auth())
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "BACKEND_UNAVAILABLE"


async def test_other_tenants_job_is_not_found(live: Live) -> None:
    job_id = await live.submit(lines=1)
    async with httpx.AsyncClient(timeout=30) as http:
        for path in ("logs", "metrics", "metrics/stream"):
            r = await http.get(f"{live.url}/jobs/{job_id}/{path}", headers=auth("tenant-b"))
            assert r.status_code == 404, path
            assert r.json()["error"]["code"] == "NOT_FOUND"


async def test_metrics_series_and_stream(live: Live) -> None:
    job_id = await live.submit(lines=6)
    await live.wait_status(job_id, "COMPLETED")
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(f"{live.url}/jobs/{job_id}/metrics", headers=auth())
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["job_id"] == job_id
        assert data["step"] == 6
        assert data["latest"]["loss"] == pytest.approx(10.0 / 6)
        loss = next(s for s in data["series"] if s["name"] == "loss")
        assert [p["step"] for p in loss["points"]] == [1, 2, 3, 4, 5, 6]
        r = await http.get(f"{live.url}/jobs/{job_id}/metrics?max_points=2", headers=auth())
        loss = next(s for s in r.json()["data"]["series"] if s["name"] == "loss")
        assert [p["step"] for p in loss["points"]] == [1, 6]
        r = await http.get(f"{live.url}/jobs/{job_id}/metrics/stream?interval=1", headers=auth())
        events = data_events(_parse(r.text))
        assert [e.event for e in events] == ["metrics", "end", "message"]
        assert events[0].id == "6"
        assert events[0].json()["metrics"]["loss"] == pytest.approx(10.0 / 6)
        assert events[1].json() == {"job_id": job_id, "status": "COMPLETED"}
        r = await http.get(
            f"{live.url}/jobs/{job_id}/metrics/stream",
            headers={**auth(), "Last-Event-ID": "6"},
        )
        assert [e.event for e in data_events(_parse(r.text))] == ["end", "message"]


def _parse(text: str) -> list[SSEEvent]:
    """Every event of a whole response body."""
    parser = SSEParser()
    out = []
    for line in text.split("\n"):
        event = parser.feed(line)
        if event is not None:
            out.append(event)
    return out
