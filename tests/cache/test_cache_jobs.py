"""JobCache: dialect-native monotonic upserts, tenant isolation and best-effort sync."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.db.jobs import BASIC, FULL, SYNC_FAILED_EVENT, SYNC_FAILURES_METRIC, JobCache
from scaimind.gateway.db.repository import JobRepository
from tests.conftest import closed_port

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
MakeJob = Callable[..., dict[str, Any]]


def _cache(engine: AsyncEngine, **kwargs: Any) -> JobCache:
    return JobCache(engine, registry=CollectorRegistry(), **kwargs)


async def test_insert_flattens_the_job(engine: AsyncEngine, make_job: MakeJob) -> None:
    job = make_job(
        "job_1",
        status="TRAINING",
        created_at=T0,
        updated_at=T0 + timedelta(seconds=5),
        labels={"team": "nlp", "type": "evaluation"},
        parent_job_id="job_0",
        started_at="2026-03-01T12:00:01.5Z",
    )
    await _cache(engine).upsert("tenant-a", [job])

    row = await JobRepository(engine).get("tenant-a", "job_1")
    assert row is not None
    assert (row.name, row.status, row.user_id) == ("name of job_1", "TRAINING", "user-1")
    assert (row.training_type, row.framework_type, row.base_model_id) == (
        "SFT",
        "HF_TRAINER",
        "tiny-llama",
    )
    assert (row.priority, row.queue_name, row.parent_job_id) == (5, "default", "job_0")
    assert row.job_type == "evaluation"
    assert row.labels == {"team": "nlp", "type": "evaluation"}
    # Timestamps come back aware and exact to the microsecond on every dialect.
    assert row.created_at == T0
    assert row.created_at.tzinfo is not None
    assert row.updated_at == T0 + timedelta(seconds=5)
    assert row.started_at == datetime(2026, 3, 1, 12, 0, 1, 500000, tzinfo=UTC)
    assert row.completed_at is None
    assert row.raw == job
    assert row.synced_at.tzinfo is not None


async def test_newer_snapshot_updates_older_is_ignored(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    cache = _cache(engine)
    repo = JobRepository(engine)
    await cache.upsert("tenant-a", [make_job("job_1", status="QUEUED", updated_at=T0)])

    newer = make_job("job_1", status="TRAINING", updated_at=T0 + timedelta(microseconds=1))
    await cache.upsert("tenant-a", [newer])
    row = await repo.get("tenant-a", "job_1")
    assert row is not None
    assert row.status == "TRAINING"
    assert row.raw["status"] == "TRAINING"

    stale = make_job("job_1", status="QUEUED", updated_at=T0, name="stale")
    await cache.upsert("tenant-a", [stale])
    row = await repo.get("tenant-a", "job_1")
    assert row is not None
    assert (row.status, row.name) == ("TRAINING", "name of job_1")
    assert row.updated_at == T0 + timedelta(microseconds=1)


def _checkpoint(step: int) -> dict[str, Any]:
    return {"checkpoint_id": f"job_1-step-{step:06d}", "step": step, "path": "p", "metrics": {}}


def _views(make_job: MakeJob, updated_at: datetime, steps: list[int]) -> tuple[Any, Any]:
    """The FULL and the BASIC view of one job state with checkpoints at `steps`."""
    checkpoints = [_checkpoint(s) for s in steps]
    summary = {"latest_checkpoint": checkpoints[-1], "checkpoint_count": len(checkpoints)}
    full = make_job("job_1", status="TRAINING", updated_at=updated_at, checkpoints=checkpoints)
    basic = make_job("job_1", status="TRAINING", updated_at=updated_at, checkpoints=[])
    return {**full, **summary}, {**basic, **summary}


async def test_a_listing_never_replaces_the_full_job_of_the_same_state(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    repo = JobRepository(engine)
    full, basic = _views(make_job, T0, [10, 20])
    await _cache(engine).upsert("tenant-a", [full], FULL)
    # A summary of the same state (same updated_at), from another gateway process too.
    await _cache(engine).upsert("tenant-a", [basic], BASIC)
    row = await repo.get("tenant-a", "job_1")
    assert row is not None
    assert (row.raw, row.raw_view) == (full, FULL)

    # A newer state replaces it, as a summary: the older checkpoint list is out of date.
    newer_full, newer_basic = _views(make_job, T0 + timedelta(microseconds=1), [10, 20, 30])
    await _cache(engine).upsert("tenant-a", [newer_basic], BASIC)
    row = await repo.get("tenant-a", "job_1")
    assert row is not None
    assert (row.raw, row.raw_view) == (newer_basic, BASIC)
    assert row.raw["latest_checkpoint"]["step"] == 30
    # The full job of that state replaces the summary of the same state.
    await _cache(engine).upsert("tenant-a", [newer_full], FULL)
    row = await repo.get("tenant-a", "job_1")
    assert row is not None
    assert (row.raw, row.raw_view) == (newer_full, FULL)


async def test_a_summary_without_checkpoints_is_the_full_job(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    job = make_job("job_1", updated_at=T0, checkpoints=[], checkpoint_count=0)
    await _cache(engine).upsert("tenant-a", [job], BASIC)
    row = await JobRepository(engine).get("tenant-a", "job_1")
    assert row is not None
    assert (row.raw, row.raw_view) == (job, FULL)


async def test_duplicates_in_one_batch_keep_the_newest(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    batch = [
        make_job("job_1", status="TRAINING", updated_at=T0 + timedelta(seconds=2)),
        make_job("job_1", status="COMPLETED", updated_at=T0 + timedelta(seconds=3)),
        make_job("job_1", status="QUEUED", updated_at=T0 + timedelta(seconds=1)),
    ]
    await _cache(engine).upsert("tenant-a", batch)
    row = await JobRepository(engine).get("tenant-a", "job_1")
    assert row is not None
    assert row.status == "COMPLETED"


async def test_large_batch_spans_several_statements(engine: AsyncEngine, make_job: MakeJob) -> None:
    jobs = [make_job(f"job_{i:05d}", created_at=T0 + timedelta(seconds=i)) for i in range(1234)]
    await _cache(engine).upsert("tenant-a", jobs)
    counts = await JobRepository(engine).count_by_status("tenant-a")
    assert counts == {"QUEUED": 1234}


async def test_concurrent_writers_with_shuffled_snapshots_end_with_the_newest(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    statuses = ["PENDING", "QUEUED", "SCHEDULING", "PREPARING", "TRAINING", "COMPLETED"]
    job_ids = [f"job_{i:02d}" for i in range(12)]
    snapshots = [
        make_job(job_id, status=status, updated_at=T0 + timedelta(milliseconds=version))
        for job_id in job_ids
        for version, status in enumerate(statuses)
    ]
    rng = random.Random(6)
    cache = _cache(engine)

    async def writer() -> None:
        mine = snapshots[:]
        rng.shuffle(mine)
        for start in range(0, len(mine), 9):
            await cache.upsert("tenant-a", mine[start : start + 9])

    await asyncio.gather(*(writer() for _ in range(6)))

    page = await JobRepository(engine).list_jobs("tenant-a", limit=100)
    assert sorted(job.job_id for job in page.items) == job_ids
    for job in page.items:
        assert job.status == "COMPLETED", job.job_id
        assert job.updated_at == T0 + timedelta(milliseconds=len(statuses) - 1)


async def test_another_tenant_never_overwrites_a_row(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    cache = _cache(engine)
    repo = JobRepository(engine)
    await cache.upsert("tenant-a", [make_job("job_1", status="QUEUED", updated_at=T0)])

    later = T0 + timedelta(hours=1)
    # Same job_id under another tenant (a coordinator bug or a forged dict) is not applied...
    await cache.upsert("tenant-b", [make_job("job_1", tenant_id="tenant-b", updated_at=later)])
    # ...nor is a dict claiming another tenant in this tenant's sync.
    await cache.upsert("tenant-a", [make_job("job_2", tenant_id="tenant-b", updated_at=later)])

    row = await repo.get("tenant-a", "job_1")
    assert row is not None
    assert (row.tenant_id, row.status, row.updated_at) == ("tenant-a", "QUEUED", T0)
    assert await repo.get("tenant-b", "job_1") is None
    assert await repo.get("tenant-a", "job_2") is None
    assert await repo.get("tenant-b", "job_2") is None


async def test_schedule_sync_runs_in_background_and_drains(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    registry = CollectorRegistry()
    cache = JobCache(engine, registry=registry)
    tasks = [cache.schedule_sync("tenant-a", [make_job(f"job_{i}")]) for i in range(5)]
    assert all(task is not None for task in tasks)
    await cache.drain()
    assert cache.pending == 0
    assert all(task is not None and task.result() is True for task in tasks)
    assert await JobRepository(engine).count_by_status("tenant-a") == {"QUEUED": 5}
    assert registry.get_sample_value(SYNC_FAILURES_METRIC) == 0

    await cache.close()
    assert cache.schedule_sync("tenant-a", [make_job("job_late")]) is None


def _dead_urls(tmp_path: Path, port: int) -> dict[str, str]:
    return {
        "postgresql": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nothing",
        "mariadb": f"mysql+aiomysql://root@127.0.0.1:{port}/nothing",
        # An unmigrated file: an unopenable path would leave aiosqlite's worker thread
        # reporting to a closed loop after the test.
        "sqlite": f"sqlite+aiosqlite:///{tmp_path / 'unmigrated.db'}",
    }


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb", "sqlite"])
async def test_sync_against_a_dead_database_logs_counts_and_returns(
    dialect: str,
    tmp_path: Path,
    make_job: MakeJob,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine(_dead_urls(tmp_path, closed_port())[dialect])
    registry = CollectorRegistry()
    cache = JobCache(engine, registry=registry, sync_timeout=2.0)
    loop = asyncio.get_running_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="scaimind.gateway.db"):
            started = loop.time()
            assert await cache.sync("tenant-a", [make_job("job_1")]) is False
            assert loop.time() - started < 4.0
            task = cache.schedule_sync("tenant-a", [make_job("job_2")])
            assert task is not None
            await cache.drain()
            assert task.result() is False
    finally:
        await cache.close()
        await engine.dispose()
    assert registry.get_sample_value(SYNC_FAILURES_METRIC) == 2
    events = [r for r in caplog.records if getattr(r, "event", None) == SYNC_FAILED_EVENT]
    assert len(events) == 2
    assert all(getattr(r, "tenant_id", None) == "tenant-a" for r in events)


async def test_sync_against_a_hanging_database_times_out(make_job: MakeJob) -> None:
    # Accepts TCP connections and never answers: only the sync deadline can end the wait.
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")
    registry = CollectorRegistry()
    cache = JobCache(engine, registry=registry, sync_timeout=0.3)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        assert await cache.sync("tenant-a", [make_job("job_1")]) is False
        assert loop.time() - started < 3.0  # well below the 5 s connect timeout
        assert accepted, "the engine never reached the server"
    finally:
        await engine.dispose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert registry.get_sample_value(SYNC_FAILURES_METRIC) == 1


async def test_backlog_cap_drops_and_counts(engine: AsyncEngine, make_job: MakeJob) -> None:
    registry = CollectorRegistry()
    cache = JobCache(engine, registry=registry, max_pending=2)
    first = cache.schedule_sync("tenant-a", [make_job("job_1")])
    second = cache.schedule_sync("tenant-a", [make_job("job_2")])
    dropped = cache.schedule_sync("tenant-a", [make_job("job_3")])
    assert first is not None
    assert second is not None
    assert dropped is None
    await cache.close()
    assert registry.get_sample_value(SYNC_FAILURES_METRIC) == 1


async def test_non_finite_metrics_are_stored_as_null(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    job = make_job("job_1", latest_metrics={"loss": float("nan"), "ppl": float("inf"), "acc": 0.5})
    await _cache(engine).upsert("tenant-a", [job])
    row = await JobRepository(engine).get("tenant-a", "job_1")
    assert row is not None
    assert row.raw["latest_metrics"] == {"loss": None, "ppl": None, "acc": 0.5}


async def test_unchanged_snapshots_are_not_rewritten(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    cache = _cache(engine)
    repo = JobRepository(engine)
    job = make_job("job_1", updated_at=T0, progress={"current_step": 1})
    await cache.upsert("tenant-a", [job])
    first = await repo.get("tenant-a", "job_1")
    assert first is not None

    await cache.upsert("tenant-a", [dict(job)])
    same = await repo.get("tenant-a", "job_1")
    assert same is not None
    assert same.synced_at == first.synced_at

    # Progress moves without a state change (same updated_at): the row still follows.
    moved = make_job("job_1", updated_at=T0, progress={"current_step": 2})
    await cache.upsert("tenant-a", [moved])
    after = await repo.get("tenant-a", "job_1")
    assert after is not None
    assert after.raw["progress"] == {"current_step": 2}
    assert after.synced_at > first.synced_at


@pytest.mark.parametrize(
    "change",
    [
        {"latest_metrics": {"loss": 0.25}},  # metrics only: same updated_at, step and status
        {"latest_metrics": {"loss": 1}},  # 1 vs 1.0: equal in Python, different JSON
        {"labels": {"team": "vision"}},
        {"name": "renamed"},
    ],
)
async def test_fingerprint_never_hides_a_change(
    engine: AsyncEngine, make_job: MakeJob, change: dict[str, Any]
) -> None:
    cache = _cache(engine)
    repo = JobRepository(engine)
    base = {"updated_at": T0, "progress": {"current_step": 3}, "status": "TRAINING"}
    job = make_job("job_1", latest_metrics={"loss": 1.0}, labels={"team": "nlp"}, **base)
    await cache.upsert("tenant-a", [job])
    changed = {**job, **change}
    await cache.upsert("tenant-a", [changed])
    row = await repo.get("tenant-a", "job_1")
    assert row is not None
    for key, value in change.items():
        # JSON text, not ==: 1 == 1.0 in Python, but the stored snapshot must be the new one.
        assert json.dumps(row.raw[key]) == json.dumps(value)


async def test_non_finite_values_deep_in_the_job_are_nulled_also_on_a_change(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    cache = _cache(engine)
    job = make_job("job_1", updated_at=T0, latest_metrics={"loss": 0.5})
    await cache.upsert("tenant-a", [job])
    diverged = make_job(
        "job_1",
        updated_at=T0,
        latest_metrics={"loss": float("-inf")},
        progress={"history": [1.0, float("nan")]},
    )
    await cache.upsert("tenant-a", [diverged])
    row = await JobRepository(engine).get("tenant-a", "job_1")
    assert row is not None
    assert row.raw["latest_metrics"] == {"loss": None}
    assert row.raw["progress"] == {"history": [1.0, None]}


async def test_sync_does_no_work_before_the_caller_yields(
    engine: AsyncEngine, make_job: MakeJob
) -> None:
    cache = _cache(engine)
    # A job dict that records when the sync first reads it.
    touched: list[str] = []

    class Probe(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            touched.append(key)
            return super().get(key, default)

    task = cache.schedule_sync("tenant-a", [Probe(make_job("job_1", updated_at=T0))])
    assert task is not None
    # One loop iteration is what a response needs to be handed to the transport.
    await asyncio.sleep(0)
    assert touched == []
    assert await task
    assert touched
