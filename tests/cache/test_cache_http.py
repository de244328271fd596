"""Idempotency-Key and cache sync through the HTTP API: the real reference coordinator (embedded)
and, where a coordinator failure must be scripted, a scripted grpc.aio servicer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.responses import Response

from scaimind.gateway.db import migrate
from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.db.idempotency import Claimed, IdempotencyStore, fingerprint
from scaimind.gateway.db.jobs import SYNC_FAILURES_METRIC, JobCache
from scaimind.gateway.db.repository import CachedJob, JobRepository
from scaimind.gateway.db.resources import CacheResources
from scaimind.gateway.errors import IdempotencyKeyInProgress
from scaimind.gateway.web.idempotency import Idempotency
from scaimind.settings import Settings
from scaimind.v1 import (
    common_pb2,
    coordinator_pb2,
)
from tests.conftest import auth, gateway_settings, settings_for, wait_for
from tests.gateway.conftest import Failure, ScriptedCoordinator, running_gateway, serving
from tests.ops.conftest import OpsCoordinator

PREFIX = "/v1/modules/scaimind"
REPLAYED = "Idempotent-Replayed"


def submit_body(corpus: Path, name: str = "idem") -> dict[str, Any]:
    """A valid job that stays QUEUED (start_after far ahead), so nothing trains."""
    return {
        "name": name,
        "training_config": {"training_type": "SFT", "base_model": {"model_id": "tiny"}},
        "data_config": {"sources": [{"path": f"file://{corpus}", "format": "jsonl"}]},
        "resource_config": {"gpu_count": 1},
        "scheduling_config": {"start_after": "2099-01-01T00:00:00Z"},
    }


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A tiny jsonl training file."""
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(5)))
    return path


@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """The gateway with the embedded reference coordinator and the default SQLite cache."""
    settings = settings_for(tmp_path)
    async with running_gateway(settings) as client:
        yield client, settings


@pytest.fixture
async def scripted_gateway(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, ScriptedCoordinator, Settings]]:
    """The gateway in front of a scripted coordinator on a real grpc.aio server."""
    servicer = OpsCoordinator()
    async with serving(servicer) as port:
        settings = gateway_settings(tmp_path, port)
        async with running_gateway(settings) as client:
            yield client, servicer, settings


async def cached(settings: Settings, tenant: str, job_id: str) -> CachedJob | None:
    """Read the gateway's cache database directly."""
    engine = create_engine(settings.effective_database_url)
    try:
        return await JobRepository(engine).get(tenant, job_id)
    finally:
        await engine.dispose()


async def test_same_key_and_body_replays_without_a_second_job(
    real: tuple[httpx.AsyncClient, Settings], corpus: Path
) -> None:
    client, _ = real
    headers = {**auth(), "Idempotency-Key": "submit-1"}
    first = await client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    again = await client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
    assert again.status_code == 201, again.text
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()

    listed = await client.get(f"{PREFIX}/jobs", headers=auth())
    assert listed.json()["data"]["total_count"] == 1
    # The key is per tenant: another tenant's identical request is a new job.
    other = await client.post(
        f"{PREFIX}/jobs",
        json=submit_body(corpus),
        headers={**auth("tenant-b"), "Idempotency-Key": "submit-1"},
    )
    assert other.status_code == 201
    assert REPLAYED not in other.headers
    assert other.json()["data"]["job_id"] != first.json()["data"]["job_id"]


async def test_same_key_other_body_is_422(
    real: tuple[httpx.AsyncClient, Settings], corpus: Path
) -> None:
    client, _ = real
    headers = {**auth(), "Idempotency-Key": "submit-2"}
    first = await client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
    assert first.status_code == 201, first.text
    reused = await client.post(
        f"{PREFIX}/jobs", json=submit_body(corpus, name="different"), headers=headers
    )
    assert reused.status_code == 422
    body = reused.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    listed = await client.get(f"{PREFIX}/jobs", headers=auth())
    assert listed.json()["data"]["total_count"] == 1


async def test_twenty_concurrent_identical_submits_create_one_job(
    real: tuple[httpx.AsyncClient, Settings], corpus: Path
) -> None:
    client, _ = real
    headers = {**auth(), "Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(
            client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
            for _ in range(20)
        )
    )
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    assert len({json.dumps(r.json(), sort_keys=True) for r in responses}) == 1
    assert sum(REPLAYED not in r.headers for r in responses) == 1
    listed = await client.get(f"{PREFIX}/jobs", headers=auth())
    assert listed.json()["data"]["total_count"] == 1


async def test_rejected_submit_does_not_poison_the_key(
    real: tuple[httpx.AsyncClient, Settings], corpus: Path
) -> None:
    client, _ = real
    headers = {**auth(), "Idempotency-Key": "fix-and-retry"}
    bad = submit_body(corpus)
    bad["training_config"]["framework"] = {
        "type": "CUSTOM",
        "custom_script_path": "/nonexistent/train.py",
    }
    rejected = await client.post(f"{PREFIX}/jobs", json=bad, headers=headers)
    assert rejected.status_code == 400, rejected.text
    fixed = await client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
    assert fixed.status_code == 201, fixed.text
    assert REPLAYED not in fixed.headers


async def test_list_and_get_sync_the_cache(
    real: tuple[httpx.AsyncClient, Settings], corpus: Path
) -> None:
    client, settings = real
    submitted = await client.post(
        f"{PREFIX}/jobs", json={**submit_body(corpus), "labels": {"team": "nlp"}}, headers=auth()
    )
    job_id = submitted.json()["data"]["job_id"]
    assert await cached(settings, "tenant-a", job_id) is None

    listed = await client.get(f"{PREFIX}/jobs", headers=auth())
    assert listed.status_code == 200
    row = await wait_for(lambda: cached(settings, "tenant-a", job_id), within=10)
    assert (row.status, row.name, row.labels) == ("QUEUED", "idem", {"team": "nlp"})
    assert row.raw == listed.json()["data"]["jobs"][0]

    cancelled = await client.post(f"{PREFIX}/jobs/{job_id}/cancel", headers=auth())
    assert cancelled.status_code == 200, cancelled.text
    fresh = await client.get(f"{PREFIX}/jobs/{job_id}", headers=auth())
    assert fresh.json()["data"]["status"] == "CANCELLED"

    async def is_cancelled() -> bool:
        row = await cached(settings, "tenant-a", job_id)
        return row is not None and row.status == "CANCELLED"

    await wait_for(is_cancelled, within=10)
    assert await cached(settings, "tenant-b", job_id) is None


async def test_retryable_failure_releases_the_key(
    scripted_gateway: tuple[httpx.AsyncClient, ScriptedCoordinator, Settings], corpus: Path
) -> None:
    client, servicer, _ = scripted_gateway
    outcomes: list[Any] = [
        Failure(grpc.StatusCode.UNAVAILABLE, "coordinator restarting"),
        coordinator_pb2.SubmitJobResponse(
            job_id="job_42", status=common_pb2.JOB_STATUS_QUEUED, message="queued"
        ),
    ]
    servicer.responses["SubmitJob"] = lambda _req: outcomes.pop(0)
    headers = {**auth(), "Idempotency-Key": "flaky"}
    failed = await client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
    assert failed.status_code == 503
    ok = await client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
    assert ok.status_code == 201, ok.text
    assert ok.json()["data"]["job_id"] == "job_42"
    replay = await client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
    assert replay.headers[REPLAYED] == "true"
    submits = [c for c in servicer.calls if c.rpc == "SubmitJob"]
    assert len(submits) == 2
    # The key also reaches the coordinator, which deduplicates on its side too.
    assert {c.metadata.get("x-idempotency-key") for c in submits} == {"flaky"}


async def test_retry_and_evaluation_honour_the_key(
    scripted_gateway: tuple[httpx.AsyncClient, ScriptedCoordinator, Settings],
) -> None:
    client, servicer, _ = scripted_gateway
    headers = {**auth(), "Idempotency-Key": "same-key-everywhere"}
    retry_body = {"checkpoint_id": "ckpt_1"}
    first = await client.post(f"{PREFIX}/jobs/job_9/retry", json=retry_body, headers=headers)
    assert first.status_code == 200, first.text
    second = await client.post(f"{PREFIX}/jobs/job_9/retry", json=retry_body, headers=headers)
    assert second.status_code == 200
    assert second.headers[REPLAYED] == "true"
    assert second.json() == first.json()
    # The job id is part of what the key stands for.
    other_job = await client.post(f"{PREFIX}/jobs/job_8/retry", json=retry_body, headers=headers)
    assert other_job.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert [c.rpc for c in servicer.calls].count("RetryJob") == 1

    evaluation = {
        "job_id": "job_9",
        "model_uri": "file:///models/job_9",
        "benchmarks": [{"name": "perplexity"}],
    }
    # Keys are per route: the retry's key does not collide with the evaluation's.
    made = await client.post(f"{PREFIX}/evaluations", json=evaluation, headers=headers)
    assert made.status_code == 201, made.text
    again = await client.post(f"{PREFIX}/evaluations", json=evaluation, headers=headers)
    assert again.status_code == 201
    assert again.headers[REPLAYED] == "true"
    assert (
        again.json()
        == made.json()
        == {"data": {"evaluation_id": "eval_1", "status": "QUEUED", "message": "queued"}}
    )
    assert [c.rpc for c in servicer.calls].count("SubmitEvaluation") == 1


async def test_list_evaluations_caches_them_as_evaluations(
    scripted_gateway: tuple[httpx.AsyncClient, ScriptedCoordinator, Settings],
) -> None:
    client, servicer, settings = scripted_gateway
    evaluation_job = common_pb2.Job(
        job_id="eval_7",
        tenant_id="tenant-a",
        name="eval of job_9",
        status=common_pb2.JOB_STATUS_EVALUATING,
        labels={"type": "evaluation"},
        parent_job_id="job_9",
    )
    evaluation_job.created_at.FromSeconds(1_800_000_000)
    evaluation_job.updated_at.FromSeconds(1_800_000_100)

    def answer(_req: Message) -> coordinator_pb2.ListJobsResponse:
        return coordinator_pb2.ListJobsResponse(jobs=[evaluation_job], total_count=1)

    servicer.responses["ListJobs"] = answer
    # Evaluation jobs are listed (and cached) with the jobs; GET /evaluations answers
    # evaluation records, which are not jobs and are not cached.
    listed = await client.get(f"{PREFIX}/jobs", params={"label": "type=evaluation"}, headers=auth())
    assert listed.status_code == 200, listed.text
    row = await wait_for(lambda: cached(settings, "tenant-a", "eval_7"), within=10)
    assert (row.job_type, row.status, row.parent_job_id) == ("evaluation", "EVALUATING", "job_9")


async def test_dead_cache_database_fails_nothing(tmp_path: Path, corpus: Path) -> None:
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    settings = settings_for(
        tmp_path,
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/gone",
        cache_sync_timeout_s=1.0,
    )
    before = REGISTRY.get_sample_value(SYNC_FAILURES_METRIC) or 0.0
    async with running_gateway(settings) as client:
        headers = {**auth(), "Idempotency-Key": "no-ledger"}
        # No ledger: the submit still goes through (the coordinator dedups on the key).
        first = await client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
        assert first.status_code == 201, first.text
        again = await client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
        assert again.status_code == 201
        assert again.json()["data"]["job_id"] == first.json()["data"]["job_id"]

        listed = await client.get(f"{PREFIX}/jobs", headers=auth())
        assert listed.status_code == 200
        assert listed.json()["data"]["total_count"] == 1

        async def counted() -> bool:
            return (REGISTRY.get_sample_value(SYNC_FAILURES_METRIC) or 0.0) > before

        await wait_for(counted, within=10)
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["cache"] == "unavailable"


async def test_duplicate_waiting_on_a_failed_owner_takes_over(tmp_path: Path, corpus: Path) -> None:
    servicer = OpsCoordinator()
    calls = 0

    async def first_hangs_then_ok(_req: Message) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()  # never answers: the gateway's 1 s deadline cancels it
        return coordinator_pb2.SubmitJobResponse(
            job_id="job_7", status=common_pb2.JOB_STATUS_QUEUED, message="queued"
        )

    servicer.responses["SubmitJob"] = first_hangs_then_ok
    async with serving(servicer) as port:
        settings = gateway_settings(tmp_path, port, grpc_timeout_s=1.0)
        async with running_gateway(settings) as client:
            headers = {**auth(), "Idempotency-Key": "owner-dies"}
            owner = asyncio.create_task(
                client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
            )

            await wait_for(lambda: calls >= 1, within=10)
            waiter = await client.post(f"{PREFIX}/jobs", json=submit_body(corpus), headers=headers)
            timed_out = await owner
    assert timed_out.status_code == 504
    # The owner's failure released the key; the waiting duplicate claimed it and ran.
    assert waiter.status_code == 201, waiter.text
    assert REPLAYED not in waiter.headers
    assert waiter.json()["data"]["job_id"] == "job_7"
    assert calls == 2


async def test_duplicate_gives_up_with_409_when_the_owner_is_too_slow(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await migrate.upgrade(engine)
    store = IdempotencyStore(engine)
    resources = CacheResources(
        engine=engine,
        jobs=JobCache(engine, registry=CollectorRegistry()),
        idempotency=store,
        wait_timeout_s=0.3,
        ledger_timeout_s=2.0,
    )
    body = {"name": "slow"}
    try:
        assert await store.begin("tenant-a", "POST /jobs", "k", fingerprint(body)) == Claimed()
        handler = Idempotency(resources, "k", Response())

        async def must_not_run() -> dict[str, Any]:
            raise AssertionError("a duplicate ran while the owner held the key")

        with pytest.raises(IdempotencyKeyInProgress) as caught:
            await handler.run("tenant-a", "POST /jobs", body, must_not_run, status_code=201)
        assert caught.value.status_code == 409
        assert caught.value.response_headers() == {"x-should-retry": "true", "Retry-After": "1"}
    finally:
        await engine.dispose()
