"""JobRepository: tenant-scoped filters, JSON label filters and cursor paging on every dialect."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.gateway.db.jobs import JobCache
from scaimind.gateway.db.repository import InvalidCursorError, JobRepository, encode_cursor

T0 = datetime(2026, 5, 1, tzinfo=UTC)
MakeJob = Callable[..., dict[str, Any]]
STATUSES = ["QUEUED", "TRAINING", "COMPLETED", "FAILED"]


@pytest.fixture
async def seeded(engine: AsyncEngine, make_job: MakeJob) -> list[dict[str, Any]]:
    """30 jobs of tenant-a (pairs share created_at to exercise ties) and 5 of tenant-b."""
    jobs = []
    for i in range(30):
        labels = {"team": "nlp" if i % 2 else "vision", "run": f"r{i % 3}"}
        if i % 5 == 0:
            labels["type"] = "evaluation"
        jobs.append(
            make_job(
                f"job_{i:02d}",
                status=STATUSES[i % 4],
                created_at=T0 + timedelta(minutes=i // 2),
                labels=labels,
            )
        )
    cache = JobCache(engine, registry=CollectorRegistry())
    await cache.upsert("tenant-a", jobs)
    others = [
        make_job(f"other_{i}", tenant_id="tenant-b", labels={"team": "nlp"}) for i in range(5)
    ]
    await cache.upsert("tenant-b", others)
    return jobs


def _newest_first(jobs: list[dict[str, Any]]) -> list[str]:
    return [
        j["job_id"]
        for j in sorted(jobs, key=lambda j: (j["created_at"], j["job_id"]), reverse=True)
    ]


async def test_cursor_paging_walks_everything_newest_first(
    engine: AsyncEngine, seeded: list[dict[str, Any]]
) -> None:
    repo = JobRepository(engine)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await repo.list_jobs("tenant-a", limit=7, cursor=cursor)
        seen += [job.job_id for job in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 5
    assert seen == _newest_first(seeded)


async def test_filters(engine: AsyncEngine, seeded: list[dict[str, Any]]) -> None:
    repo = JobRepository(engine)

    def expect(predicate: Callable[[dict[str, Any]], bool]) -> list[str]:
        return _newest_first([j for j in seeded if predicate(j)])

    async def ids(**filters: Any) -> list[str]:
        page = await repo.list_jobs("tenant-a", limit=100, **filters)
        assert page.next_cursor is None
        return [job.job_id for job in page.items]

    assert await ids(statuses=["FAILED", "QUEUED"]) == expect(
        lambda j: j["status"] in ("FAILED", "QUEUED")
    )
    assert await ids(labels={"team": "nlp"}) == expect(lambda j: j["labels"]["team"] == "nlp")
    assert await ids(labels={"team": "nlp", "run": "r1"}) == expect(
        lambda j: j["labels"]["team"] == "nlp" and j["labels"]["run"] == "r1"
    )
    assert await ids(labels={"team": "nobody"}) == []
    assert await ids(labels={"missing": "x"}) == []
    assert await ids(job_type="evaluation") == expect(
        lambda j: j["labels"].get("type") == "evaluation"
    )
    assert await ids(job_type="training") == expect(lambda j: "type" not in j["labels"])
    start, end = T0 + timedelta(minutes=3), T0 + timedelta(minutes=6)
    assert await ids(created_from=start, created_to=end) == expect(
        lambda j: (
            start.isoformat().replace("+00:00", "Z")
            <= j["created_at"]
            < end.isoformat().replace("+00:00", "Z")
        )
    )
    assert await ids(statuses=["TRAINING"], labels={"team": "nlp"}, job_type="training") == expect(
        lambda j: (
            j["status"] == "TRAINING" and j["labels"]["team"] == "nlp" and "type" not in j["labels"]
        )
    )
    # Empty filter lists mean "no filter", not "match nothing".
    assert len(await ids(statuses=[])) == 30


async def test_filtered_paging_with_ties(engine: AsyncEngine, seeded: list[dict[str, Any]]) -> None:
    repo = JobRepository(engine)
    expected = _newest_first([j for j in seeded if j["labels"]["team"] == "vision"])
    seen: list[str] = []
    cursor = None
    while True:
        page = await repo.list_jobs("tenant-a", labels={"team": "vision"}, limit=2, cursor=cursor)
        seen += [job.job_id for job in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected


async def test_tenant_scoping(engine: AsyncEngine, seeded: list[dict[str, Any]]) -> None:
    repo = JobRepository(engine)
    assert [j.job_id for j in (await repo.list_jobs("tenant-b", limit=100)).items] == [
        f"other_{i}" for i in reversed(range(5))
    ]
    assert await repo.get("tenant-b", "job_01") is None
    own = await repo.get("tenant-a", "job_01")
    assert own is not None
    assert own.tenant_id == "tenant-a"
    assert (await repo.list_jobs("tenant-c")).items == []


async def test_count_by_status(engine: AsyncEngine, seeded: list[dict[str, Any]]) -> None:
    repo = JobRepository(engine)
    assert await repo.count_by_status("tenant-a") == {
        s: 30 // 4 + (STATUSES.index(s) < 30 % 4) for s in STATUSES
    }
    assert await repo.count_by_status("tenant-b") == {"QUEUED": 5}
    assert await repo.count_by_status("tenant-c") == {}


@pytest.mark.parametrize(
    "cursor", ["not base64!", "bm90IGpzb24", encode_cursor(T0, "x")[:-3] + "@@"]
)
async def test_invalid_cursor_is_rejected(engine: AsyncEngine, cursor: str) -> None:
    with pytest.raises(InvalidCursorError):
        await JobRepository(engine).list_jobs("tenant-a", cursor=cursor)
