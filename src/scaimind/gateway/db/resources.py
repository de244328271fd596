"""The job cache and the idempotency ledger as gateway resources: lifespan hook and dependencies.

No `from __future__ import annotations` here: FastAPI must resolve the dependency's annotations.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import Depends, Request, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.gateway.app import register_startup_hook
from scaimind.gateway.db import migrate
from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.db.idempotency import (
    IdempotencyStore,
    InProgress,
    Mismatch,
    Outcome,
    Replay,
    fingerprint,
)
from scaimind.gateway.db.jobs import JobCache
from scaimind.gateway.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from scaimind.gateway.web.deps import IdempotencyKeyHeader, State, state_of
from scaimind.private_files import private_database

logger = logging.getLogger("scaimind.gateway.db")

EXTRAS_KEY: Final = "cache"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
PURGE_INTERVAL_S: Final = 3600.0
# Ledger failures surface as these; anything else is a bug and propagates.
_LEDGER_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


@dataclass(eq=False)
class CacheResources:
    """The cache engine and what is built on it, owned by the lifespan."""

    engine: AsyncEngine
    jobs: JobCache
    idempotency: IdempotencyStore
    # How long a duplicate waits for the request that holds its key.
    wait_timeout_s: float
    ledger_timeout_s: float


@register_startup_hook
async def start_cache(state: State, stack: AsyncExitStack) -> None:
    """Lifespan hook: engine, embedded-SQLite migration, job cache, ledger and its purger."""
    settings = state.settings
    engine = create_engine(settings.effective_database_url)
    stack.push_async_callback(engine.dispose)
    if engine.dialect.name == "sqlite":
        # The embedded database belongs to this process; server databases are migrated by
        # `scaimind migrate` so several gateway replicas never race on DDL.
        try:
            await migrate.upgrade(engine)
            if engine.url.database:
                # Every tenant's jobs live in it: not readable by other local users.
                private_database(Path(engine.url.database))
        except Exception:
            logger.exception(
                "cache migration failed; the gateway runs without a working cache",
                extra={"event": "scaimind_cache_migration_failed"},
            )
    jobs = JobCache(engine, sync_timeout=settings.cache_sync_timeout_s)
    stack.push_async_callback(jobs.close)
    store = IdempotencyStore(engine)
    purger = asyncio.create_task(_purge_periodically(store), name="scaimind-idempotency-purge")
    stack.push_async_callback(_cancel, purger)
    state.extras[EXTRAS_KEY] = CacheResources(
        engine=engine,
        jobs=jobs,
        idempotency=store,
        wait_timeout_s=settings.grpc_timeout_s + settings.token_exchange_timeout_s + 2.0,
        ledger_timeout_s=settings.cache_sync_timeout_s,
    )

    async def probe() -> bool:
        return await ping(engine, settings.cache_sync_timeout_s)

    state.extras["cache_probe"] = probe


async def ping(engine: AsyncEngine, timeout_s: float) -> bool:
    """True when the cache database answers a trivial query within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


async def _purge_periodically(store: IdempotencyStore) -> None:
    while True:
        try:
            purged = await store.purge_expired()
            if purged:
                logger.info("purged %d expired idempotency keys", purged)
        except Exception as exc:
            logger.warning(
                "idempotency purge failed: %s",
                type(exc).__name__,
                extra={"event": "scaimind_idempotency_purge_failed"},
            )
        await asyncio.sleep(PURGE_INTERVAL_S)


async def _cancel(task: "asyncio.Task[None]") -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def get_cache(request: Request) -> CacheResources:
    """The module's cache resources."""
    return state_of(request).extra(EXTRAS_KEY, CacheResources)


async def get_job_cache(resources: Annotated[CacheResources, Depends(get_cache)]) -> JobCache:
    """The job cache (routers schedule best-effort syncs on it)."""
    return resources.jobs


class Idempotency:
    """Runs a create call at most once per (tenant, route, Idempotency-Key) and replays it."""

    def __init__(self, resources: CacheResources, key: str | None, response: Response) -> None:
        self._resources = resources
        self._store = resources.idempotency
        self._response = response
        self.key = key

    async def run(
        self,
        tenant_id: str,
        route: str,
        body: Any,
        call: Callable[[], Awaitable[dict[str, Any]]],
        *,
        status_code: int,
    ) -> dict[str, Any]:
        """``call()`` once per key; a replay returns the stored body and ``status_code``."""
        key = self.key
        if key is None:
            return await call()
        digest = fingerprint(body)
        outcome = await self._claim(tenant_id, route, key, digest)
        if outcome is None:
            # Ledger unreachable: fail open. The coordinator still deduplicates on the
            # forwarded x-idempotency-key, so a retried submit does not create a second job.
            return await call()
        if isinstance(outcome, Mismatch):
            raise IdempotencyKeyReused()
        if isinstance(outcome, InProgress):
            raise IdempotencyKeyInProgress()
        if isinstance(outcome, Replay):
            self._response.status_code = outcome.status_code
            self._response.headers[REPLAYED_HEADER] = "true"
            replayed: dict[str, Any] = outcome.body
            return replayed
        try:
            result = await call()
        except BaseException:
            # Any failure (including a cancelled request) frees the key for a retry.
            await asyncio.shield(self._release(tenant_id, route, key))
            raise
        try:
            await self._store.complete(tenant_id, route, key, status_code, result)
        except _LEDGER_ERRORS as exc:
            self._ledger_failed("complete", tenant_id, exc)
        return result

    async def _claim(self, tenant_id: str, route: str, key: str, digest: str) -> Outcome | None:
        try:
            async with asyncio.timeout(self._resources.ledger_timeout_s):
                outcome = await self._store.begin(tenant_id, route, key, digest)
            if isinstance(outcome, InProgress):
                outcome = await self._store.wait_for_result(
                    tenant_id, route, key, digest, timeout=self._resources.wait_timeout_s
                )
        except _LEDGER_ERRORS as exc:
            self._ledger_failed("begin", tenant_id, exc)
            return None
        return outcome

    async def _release(self, tenant_id: str, route: str, key: str) -> None:
        try:
            await self._store.release(tenant_id, route, key)
        except _LEDGER_ERRORS as exc:
            self._ledger_failed("release", tenant_id, exc)

    @staticmethod
    def _ledger_failed(operation: str, tenant_id: str, exc: BaseException) -> None:
        logger.warning(
            "idempotency ledger %s failed: %s",
            operation,
            type(exc).__name__,
            extra={
                "event": "scaimind_idempotency_unavailable",
                "operation": operation,
                "tenant_id": tenant_id,
                "error": repr(exc)[:500],
            },
        )


async def idempotency(
    response: Response,
    resources: Annotated[CacheResources, Depends(get_cache)],
    idempotency_key: IdempotencyKeyHeader = None,
) -> Idempotency:
    """Dependency: the Idempotency-Key handling of this request."""
    return Idempotency(resources, idempotency_key, response)


JobCacheDep = Annotated[JobCache, Depends(get_job_cache)]
IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
