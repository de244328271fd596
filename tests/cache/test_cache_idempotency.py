"""IdempotencyStore: claim/replay/mismatch/release/expiry, and one winner among racers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.gateway.db.idempotency import (
    Claimed,
    IdempotencyStore,
    InProgress,
    Mismatch,
    Replay,
    fingerprint,
)
from scaimind.gateway.db.models import IdempotencyRecord
from tests.conftest import wait_for

ROUTE = "POST /jobs"
BODY = {"name": "run", "training_config": {"training_type": "SFT", "priority": 5}}
CREATED = {"data": {"job_id": "job_1", "status": "QUEUED", "message": "queued"}}


class FakeClock:
    """A settable clock so expiry is tested without waiting."""

    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(IdempotencyRecord))).scalar_one()
        )


def test_fingerprint_is_canonical() -> None:
    reordered = {"training_config": {"priority": 5, "training_type": "SFT"}, "name": "run"}
    assert fingerprint(BODY) == fingerprint(reordered)
    assert len(fingerprint(BODY)) == 64
    assert fingerprint(BODY) != fingerprint({**BODY, "name": "other"})
    assert fingerprint({"a": 1}) != fingerprint({"a": "1"})
    assert fingerprint(None) != fingerprint({})


async def test_claim_complete_replay(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    fp = fingerprint(BODY)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Claimed()
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == InProgress()
    assert await store.complete("tenant-a", ROUTE, "k1", 201, CREATED) is True
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Replay(201, CREATED)
    # Completed keys are immutable: neither a second completion nor a release touches them.
    assert await store.complete("tenant-a", ROUTE, "k1", 500, {"other": 1}) is False
    assert await store.release("tenant-a", ROUTE, "k1") is False
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Replay(201, CREATED)


async def test_different_body_is_a_mismatch(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    assert await store.begin("tenant-a", ROUTE, "k1", fingerprint(BODY)) == Claimed()
    other = fingerprint({**BODY, "name": "other"})
    assert await store.begin("tenant-a", ROUTE, "k1", other) == Mismatch()
    await store.complete("tenant-a", ROUTE, "k1", 201, CREATED)
    assert await store.begin("tenant-a", ROUTE, "k1", other) == Mismatch()


async def test_keys_are_scoped_by_tenant_and_route(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    fp = fingerprint(BODY)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Claimed()
    assert await store.begin("tenant-b", ROUTE, "k1", fp) == Claimed()
    assert await store.begin("tenant-a", "POST /evaluations", "k1", fp) == Claimed()


async def test_release_lets_the_same_request_run_again(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    fp = fingerprint(BODY)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Claimed()
    assert await store.release("tenant-a", ROUTE, "k1") is True
    assert await _rows(engine) == 0
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Claimed()
    # A released claim cannot be completed by its former owner.
    await store.release("tenant-a", ROUTE, "k1")
    assert await store.complete("tenant-a", ROUTE, "k1", 201, CREATED) is False


async def test_expired_keys_are_absent_and_purged(engine: AsyncEngine) -> None:
    clock = FakeClock()
    store = IdempotencyStore(engine, ttl=timedelta(hours=24), clock=clock)
    fp = fingerprint(BODY)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Claimed()
    await store.complete("tenant-a", ROUTE, "k1", 201, CREATED)
    assert await store.begin("tenant-a", ROUTE, "k2", fp) == Claimed()
    await store.complete("tenant-a", ROUTE, "k2", 201, CREATED)

    clock.now += timedelta(hours=23, minutes=59)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Replay(201, CREATED)
    assert await store.purge_expired() == 0

    clock.now += timedelta(minutes=1)
    # Expired: the key is free again, even for a different body.
    assert await store.begin("tenant-a", ROUTE, "k1", fingerprint({"x": 1})) == Claimed()
    assert await store.purge_expired() == 1  # k2; k1 was re-claimed with a fresh expiry
    assert await _rows(engine) == 1


async def test_abandoned_claim_times_out(engine: AsyncEngine) -> None:
    clock = FakeClock()
    store = IdempotencyStore(engine, claim_timeout=timedelta(minutes=5), clock=clock)
    fp = fingerprint(BODY)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Claimed()
    clock.now += timedelta(minutes=4)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == InProgress()
    clock.now += timedelta(minutes=1)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Claimed()


async def test_twenty_concurrent_begins_make_exactly_one_claim(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    fp = fingerprint(BODY)
    outcomes = await asyncio.gather(*(store.begin("tenant-a", ROUTE, "k1", fp) for _ in range(20)))
    assert outcomes.count(Claimed()) == 1
    assert outcomes.count(InProgress()) == 19
    assert await _rows(engine) == 1


async def test_racing_expired_reclaim_has_one_winner(engine: AsyncEngine) -> None:
    clock = FakeClock()
    store = IdempotencyStore(engine, clock=clock)
    fp = fingerprint(BODY)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Claimed()
    await store.complete("tenant-a", ROUTE, "k1", 201, CREATED)
    clock.now += timedelta(days=2)
    outcomes = await asyncio.gather(*(store.begin("tenant-a", ROUTE, "k1", fp) for _ in range(10)))
    assert outcomes.count(Claimed()) == 1
    assert outcomes.count(InProgress()) == 9


async def test_concurrent_submits_all_get_the_one_result(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    fp = fingerprint(BODY)
    created: list[str] = []
    waiting = 0

    async def submit() -> tuple[int, Any]:
        nonlocal waiting
        outcome = await store.begin("tenant-a", ROUTE, "k1", fp)
        if isinstance(outcome, InProgress):
            waiting += 1
            outcome = await store.wait_for_result("tenant-a", ROUTE, "k1", fp, timeout=20)
        if isinstance(outcome, Claimed):
            job_id = f"job_{len(created) + 1}"
            created.append(job_id)
            # The "coordinator call" lasts until every other request is waiting for its result.
            await wait_for(lambda: waiting == 19, within=10)
            body = {"data": {"job_id": job_id}}
            await store.complete("tenant-a", ROUTE, "k1", 201, body)
            return 201, body
        assert isinstance(outcome, Replay), outcome
        return outcome.status_code, outcome.body

    results = await asyncio.gather(*(submit() for _ in range(20)))
    assert created == ["job_1"]
    assert results == [(201, {"data": {"job_id": "job_1"}})] * 20


async def test_waiter_takes_over_a_released_key(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    fp = fingerprint(BODY)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Claimed()
    waiter = asyncio.create_task(store.wait_for_result("tenant-a", ROUTE, "k1", fp, timeout=20))
    await store.release("tenant-a", ROUTE, "k1")
    assert await waiter == Claimed()


async def test_wait_for_result_gives_up_at_the_deadline(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    fp = fingerprint(BODY)
    assert await store.begin("tenant-a", ROUTE, "k1", fp) == Claimed()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await store.wait_for_result("tenant-a", ROUTE, "k1", fp, timeout=0.3) == InProgress()
    assert 0.3 <= loop.time() - started < 5


@pytest.mark.parametrize("body", [None, [1, 2], {"nested": {"deep": ["x"]}}, "text"])
async def test_any_json_body_round_trips(engine: AsyncEngine, body: Any) -> None:
    store = IdempotencyStore(engine)
    assert await store.begin("tenant-a", ROUTE, "k", fingerprint(body)) == Claimed()
    await store.complete("tenant-a", ROUTE, "k", 200, body)
    assert await store.begin("tenant-a", ROUTE, "k", fingerprint(body)) == Replay(200, body)
