"""Tenant isolation of real jobs, and Idempotency-Key beyond one gateway process.

tests/cache/test_cache_http.py covers one gateway (20 concurrent duplicates, body mismatch,
released keys). Here: several gateway replicas in front of one coordinator, sharing a
PostgreSQL ledger or each with its own, keys scoped per tenant, and replays after the job ran.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.server import start_coordinator
from scaimind.gateway.db import migrate
from tests.cache.cache_support import DatabaseFactory
from tests.conftest import API_SECRET, auth, gateway_settings

from .conftest import (
    E2E_GRPC_TIMEOUT_S,
    PREFIX,
    Stack,
    inventory,
    job_files,
    open_gateway,
)

REPLAYED = "Idempotent-Replayed"


async def test_another_tenant_cannot_see_or_touch_a_job(two_slots: Stack) -> None:
    s = two_slots
    job_id = await s.submit(
        s.body("secret", env={"GATE": str(s.gate("go")), "GATE_STEP": "2"}, labels={"k": "v"})
    )
    await s.wait(job_id, "TRAINING", step=2)
    missing = "job_doesnotexist0000"

    def envelope(r: httpx.Response, asked: str) -> tuple[int, str, str]:
        err = r.json()["error"]
        return r.status_code, err["code"], err["message"].replace(asked, "<id>")

    b = auth("tenant-b")
    for method, suffix, body in (
        ("GET", "", None),
        ("GET", "/metrics", None),
        ("GET", "/logs?follow=false", None),
        ("POST", "/cancel", {"reason": "mine now"}),
        ("POST", "/pause", {}),
        ("POST", "/resume", {}),
        ("POST", "/retry", {}),
    ):
        theirs = await s.http.request(
            method, f"{PREFIX}/jobs/{job_id}{suffix}", json=body, headers=b
        )
        nothing = await s.http.request(
            method, f"{PREFIX}/jobs/{missing}{suffix}", json=body, headers=b
        )
        # Another tenant's job is indistinguishable from one that does not exist.
        assert theirs.status_code == 404, (suffix, theirs.text)
        assert envelope(theirs, job_id) == envelope(nothing, missing), suffix

    assert (await s.list_jobs("tenant-b"))["total_count"] == 0
    assert (await s.list_jobs("tenant-b", label="k=v"))["jobs"] == []
    assert (await s.list_jobs("tenant-b", status="TRAINING"))["jobs"] == []
    # Untouched by tenant B's attempts; tenant A still sees and controls it.
    assert (await s.job(job_id))["status"] == "TRAINING"
    b_job = await s.submit(s.body("secret", env={"TOTAL_STEPS": "2"}), tenant="tenant-b")
    assert [j["job_id"] for j in (await s.list_jobs())["jobs"]] == [job_id]
    assert [j["job_id"] for j in (await s.list_jobs("tenant-b"))["jobs"]] == [b_job]
    r = await s.http.get(f"{PREFIX}/jobs/{b_job}", headers=auth("tenant-a"))
    assert r.status_code == 404
    assert (await s.ok(job_id, "cancel"))["status"] == "CANCELLED"


async def test_another_tenants_checkpoint_cannot_seed_a_job(two_slots: Stack) -> None:
    s = two_slots
    a_job = await s.submit(s.body("a", env={"TOTAL_STEPS": "10", "CKPT_EVERY": "5"}))
    checkpoint = (await s.wait(a_job, "COMPLETED"))["checkpoints"][0]
    for reference in (checkpoint["checkpoint_id"], checkpoint["path"]):
        body = s.body("b", env={"TOTAL_STEPS": "10"})
        body["training_config"]["resume_from_checkpoint"] = reference
        r = await s.http.post(f"{PREFIX}/jobs", json=body, headers=auth("tenant-b"))
        # A checkpoint id of another tenant is unknown; its scaidrive:// path is refused.
        assert r.status_code in (400, 403, 404), (reference, r.text)


async def test_another_tenants_model_cannot_be_evaluated(two_slots: Stack) -> None:
    s = two_slots
    a_job = await s.wait(
        await s.submit(s.body("a", custom=False, hyperparameters={"max_steps": 10})), "COMPLETED"
    )
    b_job = await s.submit(s.body("b", env={"TOTAL_STEPS": "2"}), tenant="tenant-b")
    for uri in (a_job["final_model_uri"], a_job["checkpoints"][-1]["path"]):
        r = await s.http.post(
            f"{PREFIX}/evaluations",
            json={"job_id": b_job, "model_uri": uri, "benchmarks": [{"name": "loss"}]},
            headers=auth("tenant-b"),
        )
        assert r.status_code in (400, 403, 404), (uri, r.text)


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[DatabaseFactory]:
    """Fresh server databases, dropped at the end."""
    factory = DatabaseFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.drop_all()


async def replicas(
    stack: AsyncExitStack, root: Path, count: int, database_urls: list[str]
) -> tuple[list[httpx.AsyncClient], Stack]:
    """One coordinator and `count` gateway replicas in front of it (one ledger URL each)."""
    coordinator = await start_coordinator(
        CoordinatorConfig(
            data_dir=root / "coordinator",
            api_secret=API_SECRET,
            inventory_path=inventory(root / "inventory.json", 2),
            local_data_roots=(str(root),),
        )
    )
    stack.push_async_callback(coordinator.stop, 1.0)
    clients = []
    for i in range(count):
        # A generous ledger deadline: a loaded test machine must not make the ledger fail open.
        settings = gateway_settings(
            root / f"gw-{i}",
            coordinator.port,
            database_url=database_urls[i],
            cache_sync_timeout_s=10.0,
            grpc_timeout_s=E2E_GRPC_TIMEOUT_S,
        )
        clients.append(await open_gateway(stack, settings))
    corpus, script = job_files(root)
    return clients, Stack(clients[0], root, corpus, script)


async def burst(
    clients: list[httpx.AsyncClient], body: dict[str, object], key: str, n: int = 20
) -> list[httpx.Response]:
    """`n` concurrent identical POST /jobs spread over the replicas."""
    headers = {**auth(), "Idempotency-Key": key}
    return list(
        await asyncio.gather(
            *(
                clients[i % len(clients)].post(f"{PREFIX}/jobs", json=body, headers=headers)
                for i in range(n)
            )
        )
    )


async def test_replicas_sharing_a_postgres_ledger_create_one_job(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    url = databases.create("postgresql")
    await migrate.upgrade(url)  # what `scaimind migrate` does before replicas start
    async with AsyncExitStack() as stack:
        clients, s = await replicas(stack, tmp_path, 2, [url, url])
        body = s.body("once", env={"TOTAL_STEPS": "2"})
        responses = await burst(clients, body, "shared-ledger")
        assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
        assert len({json.dumps(r.json(), sort_keys=True) for r in responses}) == 1
        flags = [r.headers.get(REPLAYED) for r in responses]
        assert flags.count(None) == 1, flags
        assert flags.count("true") == 19, flags
        job_id = responses[0].json()["data"]["job_id"]
        for client in clients:
            r = await client.get(f"{PREFIX}/jobs", headers=auth())
            assert [j["job_id"] for j in r.json()["data"]["jobs"]] == [job_id]

        # After the job ran to completion the key still replays the original answer.
        await s.wait(job_id, "COMPLETED")
        again = await burst(clients, body, "shared-ledger", n=2)
        for r in again:
            assert r.status_code == 201
            assert r.headers[REPLAYED] == "true"
            assert r.json() == responses[0].json()
        assert (await s.list_jobs())["total_count"] == 1


async def test_replicas_with_separate_ledgers_still_create_one_job(tmp_path: Path) -> None:
    urls = [f"sqlite+aiosqlite:///{tmp_path / f'ledger-{i}.db'}" for i in range(2)]
    async with AsyncExitStack() as stack:
        clients, s = await replicas(stack, tmp_path, 2, urls)
        body = s.body("once", start_after="2099-01-01T00:00:00Z")
        responses = await burst(clients, body, "own-ledgers")
        assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
        # Each replica lets one request through; the coordinator deduplicates on the
        # forwarded x-idempotency-key, so both reach the same job.
        assert len({r.json()["data"]["job_id"] for r in responses}) == 1
        flags = [r.headers.get(REPLAYED) for r in responses]
        assert flags.count(None) == 2, flags
        assert flags.count("true") == 18, flags
        assert (await s.list_jobs())["total_count"] == 1


async def test_the_same_key_in_two_tenants_makes_two_jobs(two_slots: Stack) -> None:
    s = two_slots
    body = s.body("mine", start_after="2099-01-01T00:00:00Z")
    ids: dict[str, str] = {}
    for tenant in ("tenant-a", "tenant-b"):
        headers = {**auth(tenant), "Idempotency-Key": "same-key"}
        responses = await asyncio.gather(
            *(s.http.post(f"{PREFIX}/jobs", json=body, headers=headers) for _ in range(5))
        )
        assert {r.status_code for r in responses} == {201}
        assert len({r.json()["data"]["job_id"] for r in responses}) == 1
        ids[tenant] = responses[0].json()["data"]["job_id"]
    assert ids["tenant-a"] != ids["tenant-b"]
    for tenant, job_id in ids.items():
        assert [j["job_id"] for j in (await s.list_jobs(tenant))["jobs"]] == [job_id]
