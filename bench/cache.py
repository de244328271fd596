"""Benchmark of the job cache.

Prints:
- GET /jobs (a page of 100 jobs) latency p50/p99 through the app, with the background cache
  sync on and off, in the same run (interleaved blocks), for the embedded SQLite cache and for
  PostgreSQL; the coordinator is a scripted grpc.aio server on loopback;
- (`--sections served`) the same request against the real `scaimind serve` in a process of its
  own, the scripted coordinator in another, from this process as the client: back to back and at
  a dashboard-like fixed rate (`--served-rate`, default 10 req/s), sync off (the same gateway with
  `JobCache.schedule_sync` patched out) and on, 100 unchanged or 100 changed jobs per request;
- upsert throughput for 10,000 jobs on PostgreSQL (batches of 100, as the gateway writes them,
  and one call of 10,000), plus SQLite and MariaDB for comparison;
- JobRepository.list_jobs p50/p99 with 1,000,000 cached jobs of one tenant on PostgreSQL
  (bulk-loaded with COPY): first page, deep cursor pages, status filter, label filter.

Databases: fresh `scaimind_bench_<hex>` databases on the local servers (SCAIMIND_TEST_PG_URL /
SCAIMIND_TEST_MYSQL_URL admin URLs, as in the tests), dropped at the end.

Usage: .venv/bin/python bench/cache.py [--jobs-total 1000000] [--sections list,served,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
from prometheus_client import CollectorRegistry

from scaimind.gateway.app import create_app, lifespan
from scaimind.gateway.db import migrate
from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.db.jobs import JobCache
from scaimind.gateway.db.repository import JobRepository, encode_cursor
from scaimind.gateway.db.resources import CacheResources
from scaimind.gateway.security.auth import mint_token
from scaimind.gateway.state import State
from scaimind.settings import Settings
from scaimind.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cache.cache_support import DatabaseFactory

PREFIX = "/v1/modules/scaimind"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef-0123456789abcdef"
STATUSES = ["QUEUED", "TRAINING", "COMPLETED", "FAILED", "CANCELLED", "PAUSED"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pct(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def summary(samples: Sequence[float]) -> str:
    """p50/p99 in ms."""
    return f"p50 {pct(samples, 50):7.2f} ms   p99 {pct(samples, 99):7.2f} ms   (n={len(samples)})"


# ---- GET /jobs with and without sync ---------------------------------------------------------


def proto_job(i: int, version: int) -> common_pb2.Job:
    """A realistic Job message."""
    job = common_pb2.Job(
        job_id=f"job_{i:06d}",
        name=f"fine-tune {i}",
        tenant_id="tenant-bench",
        user_id="user-1",
        status=common_pb2.JOB_STATUS_TRAINING,
        labels={"team": "nlp", "run": f"r{i % 7}"},
        queue_name="default",
        retry_count=0,
        assigned_nodes=["node-1"],
    )
    tc = job.training_config
    tc.training_type = common_pb2.TRAINING_TYPE_SFT
    tc.base_model.model_id = "meta-llama/Llama-3-8B"
    tc.hyperparameters.update({"learning_rate": "0.0001", "max_steps": "1000", "packing": "true"})
    tc.priority = 5
    job.data_config.sources.add(path=f"scaidrive://datasets/{i}.jsonl")
    job.resource_config.gpu_count = 1
    job.progress.current_step = version
    job.progress.total_steps = 1000
    job.latest_metrics.update({"loss": 1.0 / (version + 1), "accuracy": 0.5})
    job.created_at.FromDatetime(T0 + timedelta(minutes=i))
    job.updated_at.FromDatetime(T0 + timedelta(minutes=i, seconds=version))
    return job


class PageServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """ListJobs answers 100 jobs; with `changing`, all of them advance on every call."""

    def __init__(self) -> None:
        self.version = 0
        self.changing = False

    async def ListJobs(self, request: Any, context: Any) -> Any:
        self.version += self.changing
        jobs = [proto_job(i, self.version) for i in range(100)]
        return coordinator_pb2.ListJobsResponse(jobs=jobs, total_count=100)

    async def GetClusterStatus(self, request: Any, context: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


class NoSync(JobCache):
    """The cache with its background sync switched off (the baseline)."""

    def schedule_sync(self, tenant_id: str, jobs: Any) -> None:  # type: ignore[override]
        return None


async def bench_list_endpoint(database_url: str | None, label: str, rounds: int) -> None:
    """GET /jobs?page_size=100 latencies with and without the background sync."""
    servicer = PageServicer()
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            jwt_secret=JWT_SECRET,
            api_secret="bench-api-secret",
            grpc_host="127.0.0.1",
            grpc_port=port,
            database_url=database_url,
        )
        if database_url is not None:
            # Server databases are migrated by `scaimind migrate`, not by the lifespan.
            await migrate.upgrade(database_url)
        app = create_app(settings)
        token = mint_token(JWT_SECRET, tenant_id="tenant-bench", user_id="u", role="tenant_admin")
        headers = {"Authorization": f"Bearer {token}"}
        async with lifespan(app):
            state: State = app.state.scaimind
            resources: CacheResources = state.cache
            with_sync = resources.jobs
            without_sync = NoSync(resources.engine, registry=CollectorRegistry())
            transport = httpx.ASGITransport(app=app)
            modes = ("without sync", "sync, unchanged jobs", "sync, 100 changed jobs")
            samples: dict[str, list[float]] = {mode: [] for mode in modes}
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

                async def one() -> float:
                    started = time.perf_counter()
                    r = await client.get(f"{PREFIX}/jobs?page_size=100", headers=headers)
                    elapsed = time.perf_counter() - started
                    assert r.status_code == 200
                    assert len(r.json()["data"]["jobs"]) == 100
                    return elapsed

                for _ in range(20):  # warm-up: connections, statement caches, the first sync
                    await one()
                await with_sync.drain()
                for block in range(rounds * len(modes)):
                    mode = modes[block % len(modes)]
                    resources.jobs = without_sync if mode == "without sync" else with_sync
                    servicer.changing = mode == "sync, 100 changed jobs"
                    for _ in range(25):
                        samples[mode].append(await one())
                    # This block's syncs finish before the next block starts.
                    await with_sync.drain()
            resources.jobs = with_sync
            repo = JobRepository(resources.engine)
            cached = await repo.count_by_status("tenant-bench")
    await server.stop(None)
    for mode, values in samples.items():
        print(f"  GET /jobs (100 jobs), {label:10s} {mode:22s} {summary(values)}")
    print(f"  cache rows after the run: {cached}")


# ---- GET /jobs against `scaimind serve` in its own process ------------------------------------
#
# In-process (above), client, server and the background sync share one loop, and requests go back
# to back: every millisecond of sync CPU delays the next request. Here the gateway is the real
# `scaimind serve` (uvicorn, its own process), the scripted coordinator another process, and this
# process only sends requests: back to back, and at a dashboard-like fixed rate.


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_coordinator(port: int, changing: bool) -> None:
    """The scripted coordinator as a process of its own (hidden --run-coordinator)."""
    servicer = PageServicer()
    servicer.changing = changing
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_without_sync(argv: list[str]) -> int:
    """`scaimind serve` with the background cache sync switched off (hidden --serve-without-sync).

    The baseline is the very same gateway minus `JobCache.schedule_sync`; no production setting
    exists for this on purpose (the sync is part of the contract), so only the bench patches it.
    """
    from scaimind.cli.main import main

    def no_sync(self: JobCache, tenant_id: str, jobs: Any) -> None:
        return None

    JobCache.schedule_sync = no_sync  # type: ignore[method-assign]
    return main(["serve", *argv])


async def wait_for_port(port: int, proc: subprocess.Popen[bytes], within: float = 30.0) -> None:
    """Poll until something accepts connections on ``port`` (or the process died)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise TimeoutError(f"nothing listens on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure_served(
    port: int, headers: dict[str, str], requests: int, rate: float | None
) -> list[float]:
    """Latencies of GET /jobs?page_size=100; ``rate`` None means back to back."""
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

        async def one() -> float:
            started = time.perf_counter()
            r = await client.get(f"{PREFIX}/jobs?page_size=100", headers=headers)
            elapsed = time.perf_counter() - started
            assert r.status_code == 200, r.text
            assert len(r.json()["data"]["jobs"]) == 100
            return elapsed

        for _ in range(30):  # warm-up: connection, first (inserting) sync, statement caches
            await one()
        await asyncio.sleep(1.0)  # the warm-up's syncs finish before measuring
        start = time.perf_counter()
        for i in range(requests):
            if rate is not None:
                # Open loop: request i is due at start + i/rate, however long earlier ones took.
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            samples.append(await one())
    return samples


async def bench_served(
    database_url: str | None, label: str, requests: int, rate: float, rounds: int
) -> None:
    """GET /jobs latency against separate gateway processes, sync off/on, jobs unchanged/changed."""
    script = str(Path(__file__).resolve())  # noqa: ASYNC240 (set-up, not on a measured path)
    serve = str(Path(sys.executable).with_name("scaimind"))
    modes = (
        ("without sync", False, False),
        ("sync, unchanged jobs", True, False),
        ("sync, 100 changed jobs", True, True),
    )
    loads: tuple[tuple[str, float | None], ...] = (
        ("back to back", None),
        (f"{rate:g} req/s", rate),
    )
    samples: dict[tuple[str, str], list[float]] = {(m, n): [] for m, *_ in modes for n, _ in loads}
    token = mint_token(JWT_SECRET, tenant_id="tenant-bench", user_id="u", role="tenant_admin")
    headers = {"Authorization": f"Bearer {token}"}
    coordinators: dict[bool, int] = {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for changing in (False, True):
            port = free_port()
            args = [sys.executable, script, "--run-coordinator", str(port)]
            proc = subprocess.Popen([*args, *(["--changing"] if changing else [])])  # noqa: ASYNC220
            procs.append(proc)
            await wait_for_port(port, proc)
            coordinators[changing] = port
        if database_url is not None:
            await migrate.upgrade(database_url)
        # Interleaved rounds spread slow drifts of the machine over every mode.
        for _ in range(rounds):
            for mode, sync, changing in modes:
                with tempfile.TemporaryDirectory() as tmp:
                    port = free_port()
                    env = {
                        **os.environ,
                        "SCAIMIND_GRPC_HOST": "127.0.0.1",
                        "SCAIMIND_GRPC_PORT": str(coordinators[changing]),
                        "SCAIMIND_JWT_SECRET": JWT_SECRET,
                        "SCAIMIND_API_SECRET": "bench-api-secret",
                        "SCAIMIND_DATA_DIR": tmp,
                    }
                    if database_url is not None:
                        env["SCAIMIND_DATABASE_URL"] = database_url
                    argv = ["--port", str(port)]
                    cmd = [serve, "serve", *argv] if sync else [sys.executable, script]
                    if not sync:
                        cmd += ["--serve-without-sync", *argv]
                    with open(Path(tmp) / "gateway.log", "wb") as log:  # noqa: ASYNC230
                        gateway = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)  # noqa: ASYNC220
                    try:
                        await wait_for_port(port, gateway)
                        for load, load_rate in loads:
                            samples[(mode, load)] += await measure_served(
                                port, headers, requests, load_rate
                            )
                    finally:
                        stop(gateway)
    finally:
        for proc in procs:
            stop(proc)
    for load, _ in loads:
        for mode, *_ in modes:
            values = samples[(mode, load)]
            print(f"  GET /jobs (100 jobs), {label:10s} {load:12s} {mode:22s} {summary(values)}")


# ---- upsert throughput ------------------------------------------------------------------------


def job_dict(i: int, version: int, tenant: str = "tenant-bench") -> dict[str, Any]:
    """A gateway-shaped Job dict."""
    created = T0 + timedelta(seconds=i)
    return {
        "job_id": f"job_{i:07d}",
        "name": f"fine-tune {i}",
        "tenant_id": tenant,
        "user_id": "user-1",
        "status": STATUSES[(i + version) % len(STATUSES)],
        "training_config": {
            "training_type": "SFT",
            "base_model": {"model_id": "meta-llama/Llama-3-8B"},
            "framework": {"type": "HF_TRAINER"},
            "hyperparameters": {"learning_rate": "0.0001", "max_steps": "1000"},
            "priority": 5,
        },
        "scheduling_config": {"queue_name": "default"},
        "labels": {"team": "nlp", "run": f"r{i % 7}"},
        "parent_job_id": "",
        "progress": {"current_step": version, "total_steps": 1000},
        "latest_metrics": {"loss": 1.0 / (version + 1)},
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "started_at": None,
        "completed_at": None,
        "updated_at": (created + timedelta(seconds=version)).isoformat().replace("+00:00", "Z"),
    }


async def bench_upserts(url: str, label: str, total: int = 10_000) -> None:
    """Insert then update ``total`` jobs, in batches of 100 and in one call."""
    await migrate.upgrade(url)
    engine = create_engine(url)
    cache = JobCache(engine, registry=CollectorRegistry())
    try:
        for version, batch in ((1, 100), (2, 100), (3, total)):
            jobs = [job_dict(i, version) for i in range(total)]
            started = time.perf_counter()
            for start in range(0, total, batch):
                await cache.upsert("tenant-bench", jobs[start : start + batch])
            elapsed = time.perf_counter() - started
            kind = "insert" if version == 1 else "update"
            print(
                f"  upsert {total} jobs on {label:10s} ({kind}, batches of {batch:5d}): "
                f"{elapsed:6.2f} s = {total / elapsed:8.0f} jobs/s"
            )
    finally:
        await engine.dispose()


# ---- repository at 1,000,000 jobs ---------------------------------------------------------------


async def bulk_load(url: str, total: int) -> float:
    """COPY ``total`` jobs of one tenant (plus a little of another) into mod_scaimind_jobs."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        rng = random.Random(1)
        synced = datetime.now(UTC)
        columns = [
            "job_id", "tenant_id", "name", "status", "user_id", "training_type",
            "framework_type", "base_model_id", "priority", "queue_name", "parent_job_id",
            "job_type", "labels", "created_at", "started_at", "completed_at", "updated_at",
            "raw", "synced_at",
        ]  # fmt: skip

        def rows(start: int, stop: int, tenant: str) -> list[tuple[Any, ...]]:
            out = []
            for i in range(start, stop):
                created = T0 + timedelta(seconds=i // 2)  # pairs share created_at: ties
                status = STATUSES[rng.randrange(len(STATUSES))]
                labels = {"team": "nlp" if i % 3 else "vision", "run": f"r{i % 1000}"}
                job_type = "evaluation" if i % 10 == 0 else "training"
                raw = {"job_id": f"job_{i:08d}", "name": f"job {i}", "status": status}
                out.append(
                    (
                        f"{tenant}-job_{i:08d}", tenant, f"job {i}", status, "user-1", "SFT",
                        "HF_TRAINER", "tiny", 5, "default", None, job_type, json.dumps(labels),
                        created, None, None, created, json.dumps(raw), synced,
                    )
                )  # fmt: skip
            return out

        chunk = 50_000
        for start in range(0, total, chunk):
            await conn.copy_records_to_table(
                "mod_scaimind_jobs",
                records=rows(start, min(total, start + chunk), "tenant-bench"),
                columns=columns,
            )
        await conn.copy_records_to_table(
            "mod_scaimind_jobs", records=rows(0, 10_000, "tenant-other"), columns=columns
        )
        # Steady state as autovacuum leaves it: statistics and a set visibility map.
        await conn.execute("VACUUM ANALYZE mod_scaimind_jobs")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    """Latencies of ``n`` sequential calls."""
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


async def bench_repository(url: str, total: int) -> None:
    """list_jobs latencies over ``total`` cached jobs of one tenant."""
    await migrate.upgrade(url)
    load_s = await bulk_load(url, total)
    print(f"  bulk-loaded {total:,} jobs (+10,000 of another tenant) with COPY in {load_s:.1f} s")
    engine = create_engine(url)
    repo = JobRepository(engine)
    try:
        for _ in range(20):
            await repo.list_jobs("tenant-bench", limit=50)
        # Cursors at several depths: page 1, ~10 %, ~50 %, ~99 % of the tenant's jobs.
        cursors: list[str | None] = [None]
        for depth in (total // 10, total // 2, total * 99 // 100):
            created = T0 + timedelta(seconds=(total - depth) // 2)
            page = await repo.list_jobs("tenant-bench", limit=1, created_to=created)
            cursors.append(encode_cursor(page.items[0].created_at, page.items[0].job_id))
        rng = random.Random(2)

        async def first_page() -> None:
            page = await repo.list_jobs("tenant-bench", limit=50)
            assert len(page.items) == 50

        async def deep_page() -> None:
            page = await repo.list_jobs("tenant-bench", limit=50, cursor=rng.choice(cursors[1:]))
            assert len(page.items) == 50

        async def walk_pages() -> None:
            page = await repo.list_jobs("tenant-bench", limit=50, cursor=rng.choice(cursors))
            assert page.next_cursor is not None
            await repo.list_jobs("tenant-bench", limit=50, cursor=page.next_cursor)

        async def status_filter() -> None:
            page = await repo.list_jobs("tenant-bench", limit=50, statuses=["FAILED", "PAUSED"])
            assert len(page.items) == 50

        async def common_label() -> None:
            page = await repo.list_jobs("tenant-bench", limit=50, labels={"team": "vision"})
            assert len(page.items) == 50

        async def rare_label() -> None:
            await repo.list_jobs("tenant-bench", limit=50, labels={"run": "r999"})

        async def evaluations() -> None:
            page = await repo.list_jobs("tenant-bench", limit=50, job_type="evaluation")
            assert len(page.items) == 50

        async def counts() -> None:
            await repo.count_by_status("tenant-bench")

        for name, fn, n in (
            ("first page (50)", first_page, 200),
            ("deep cursor page (10-99 %)", deep_page, 200),
            ("two consecutive pages", walk_pages, 100),
            ("status IN (2 of 6)", status_filter, 200),
            ("label team=vision (1/3)", common_label, 200),
            ("label run=r999 (1/1000)", rare_label, 20),
            ("job_type=evaluation (1/10)", evaluations, 200),
            ("count_by_status", counts, 10),
        ):
            print(f"  list_jobs @ {total:,}: {name:28s} {summary(await timed(fn, n))}")
    finally:
        await engine.dispose()


async def main() -> None:
    """Run every section and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs-total", type=int, default=1_000_000)
    parser.add_argument("--list-rounds", type=int, default=8, help="blocks of 25 requests")
    parser.add_argument(
        "--sections",
        default="list,served,upsert,repository",
        help="comma-separated subset of: list, served, upsert, repository",
    )
    parser.add_argument("--served-requests", type=int, default=200, help="per mode and load")
    parser.add_argument("--served-rate", type=float, default=10.0, help="dashboard-like req/s")
    parser.add_argument("--served-rounds", type=int, default=1, help="interleaved rounds")
    parser.add_argument(
        "--served-databases", default="sqlite", help="comma-separated: sqlite, postgresql"
    )
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        factory = DatabaseFactory(Path(tmp))
        try:
            if "list" in sections:
                print("GET /jobs?page_size=100 through the app (scripted coordinator on loopback)")
                await bench_list_endpoint(None, "SQLite", args.list_rounds)
                pg = factory.create("postgresql")
                await bench_list_endpoint(pg, "PostgreSQL", args.list_rounds)
            if "served" in sections:
                print("GET /jobs?page_size=100 against `scaimind serve` in its own process")
                for db in args.served_databases.split(","):
                    url = None if db == "sqlite" else factory.create(db)
                    await bench_served(
                        url,
                        "SQLite" if db == "sqlite" else "PostgreSQL",
                        args.served_requests,
                        args.served_rate,
                        args.served_rounds,
                    )
            if "upsert" in sections:
                print("Upsert throughput")
                await bench_upserts(factory.create("postgresql"), "PostgreSQL")
                await bench_upserts(factory.create("sqlite"), "SQLite")
                await bench_upserts(factory.create("mariadb"), "MariaDB")
            if "repository" in sections:
                print("Repository reads (PostgreSQL)")
                await bench_repository(factory.create("postgresql"), args.jobs_total)
        finally:
            factory.drop_all()
    print(f"total bench time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    # Hidden helper modes: the processes bench_served starts.
    if sys.argv[1:2] == ["--run-coordinator"]:
        asyncio.run(run_coordinator(int(sys.argv[2]), "--changing" in sys.argv[3:]))
    elif sys.argv[1:2] == ["--serve-without-sync"]:
        sys.exit(serve_without_sync(sys.argv[2:]))
    else:
        asyncio.run(main())
