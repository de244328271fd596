"""StreamJobLogs and StreamJobMetrics: tail, follow, resume after seq/step, level filter, end."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from scaimind.v1 import common_pb2, coordinator_pb2
from tests.conftest import wait_for

from .conftest import Client, Env, S


async def _follow(
    client: Client, job_id: str, **kwargs: object
) -> list[coordinator_pb2.StreamJobLogsResponse]:
    req = coordinator_pb2.StreamJobLogsRequest(job_id=job_id, follow=True, **kwargs)  # type: ignore[arg-type]
    return [m async for m in client.jobs.StreamJobLogs(req, metadata=client.md(), timeout=60)]


async def test_follow_until_end_and_resume_after_seq(env: Env, client: Client) -> None:
    gate = env.tmp / "go"
    job_id = await client.submit(
        env.custom(
            "streamed",
            env={"GATE": str(gate), "GATE_STEP": "2", "TOTAL_STEPS": "6", "STEP_SECONDS": "0"},
        )
    )
    await client.wait(job_id, S.JOB_STATUS_TRAINING)
    followers = [asyncio.create_task(_follow(client, job_id, after_seq=0)) for _ in range(50)]
    tail_follower = asyncio.create_task(_follow(client, job_id, tail=2))
    await client.wait(job_id, check=lambda j: j.progress.current_step == 2)
    snapshot = await client.logs(job_id, tail=10000, follow=False)
    assert snapshot[-1].HasField("end")
    assert (
        snapshot[-1].end.status == S.JOB_STATUS_TRAINING
    )  # follow=false ends with the current status
    assert not any(f.done() for f in followers)
    gate.write_text("")

    results = await asyncio.gather(*followers)
    everything = await client.entries(job_id, tail=10000, min_level=common_pb2.LOG_LEVEL_DEBUG)
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    full = await client.entries(job_id, tail=10000)  # INFO and above, like the followers
    assert len(full) < len(everything)
    for messages in results:
        assert messages[-1].HasField("end")
        assert messages[-1].end.status == S.JOB_STATUS_COMPLETED
        assert messages[-1].end.job_id == job_id
        assert [m.entry.seq for m in messages[:-1]] == [e.seq for e in full]
    tailed = await tail_follower
    seqs = [m.entry.seq for m in tailed[:-1]]
    assert seqs == sorted(set(seqs))
    assert seqs[-1] == full[-1].seq
    assert any("custom script finished" in m.entry.message for m in tailed)

    # Resume after any seq: exactly the rest, then the end.
    k = full[len(full) // 2].seq
    resumed = await _follow(client, job_id, after_seq=k)
    assert [m.entry.seq for m in resumed[:-1]] == [e.seq for e in full if e.seq > k]
    assert resumed[-1].end.status == S.JOB_STATUS_COMPLETED
    last3 = await client.entries(job_id, tail=3)
    assert [e.seq for e in last3] == [e.seq for e in full[-3:]]


async def test_level_filter_lets_errors_through(env: Env, client: Client) -> None:
    job_id = await client.submit(
        env.custom("noisy", env={"TOTAL_STEPS": "6", "FAIL_AT": "3", "STEP_SECONDS": "0"})
    )
    await client.wait(job_id, S.JOB_STATUS_FAILED)
    everything = await client.entries(job_id, tail=10000, min_level=common_pb2.LOG_LEVEL_DEBUG)
    default = await client.entries(job_id, tail=10000)
    warnings = await client.entries(job_id, tail=10000, min_level=common_pb2.LOG_LEVEL_WARNING)
    assert any(e.level == common_pb2.LOG_LEVEL_DEBUG for e in everything)
    assert all(e.level >= common_pb2.LOG_LEVEL_INFO for e in default)
    assert len(default) < len(everything)
    assert {e.level for e in warnings} == {common_pb2.LOG_LEVEL_WARNING, common_pb2.LOG_LEVEL_ERROR}
    errors = await client.entries(job_id, tail=10000, min_level=common_pb2.LOG_LEVEL_ERROR)
    assert errors
    assert all(e.level == common_pb2.LOG_LEVEL_ERROR for e in errors)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.logs(job_id, tail=10001)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_metrics_stream_interval_resume_and_end(env: Env, client: Client) -> None:
    gate = env.tmp / "go"
    job_id = await client.submit(
        env.custom(
            "metrics",
            env={"GATE": str(gate), "GATE_STEP": "3", "TOTAL_STEPS": "40", "STEP_SECONDS": "0.03"},
        )
    )
    await client.wait(job_id, check=lambda j: j.progress.current_step == 3)
    req = coordinator_pb2.StreamJobMetricsRequest(job_id=job_id, interval_seconds=1)
    received: list[tuple[float, coordinator_pb2.StreamJobMetricsResponse]] = []

    async def consume() -> None:
        async for m in client.jobs.StreamJobMetrics(req, metadata=client.md(), timeout=60):
            received.append((time.monotonic(), m))

    task = asyncio.create_task(consume())
    await wait_for(lambda: received)
    first = received[0][1].snapshot
    assert first.step == 3
    assert first.metrics["loss"] == pytest.approx(10.0 / 3)
    gate.write_text("")
    await task
    assert received[-1][1].end.status == S.JOB_STATUS_COMPLETED
    snaps = [(t, m.snapshot) for t, m in received[:-1]]
    steps = [s.step for _, s in snaps]
    assert steps == sorted(set(steps))
    assert steps[-1] == 40
    # At most one snapshot per interval (the final one may come early, at the end).
    span = snaps[-1][0] - snaps[0][0]
    assert len(snaps) <= span / 1.0 + 2, (len(snaps), span)

    resumed = [
        m
        async for m in client.jobs.StreamJobMetrics(
            coordinator_pb2.StreamJobMetricsRequest(
                job_id=job_id, interval_seconds=1, after_step=40
            ),
            metadata=client.md(),
            timeout=10,
        )
    ]
    assert len(resumed) == 1
    assert resumed[0].end.status == S.JOB_STATUS_COMPLETED
    replay = [
        m
        async for m in client.jobs.StreamJobMetrics(
            coordinator_pb2.StreamJobMetricsRequest(job_id=job_id, after_step=10),
            metadata=client.md(),
            timeout=10,
        )
    ]
    assert [m.snapshot.step for m in replay[:-1]] == [40]
    assert replay[-1].HasField("end")
