"""The cache database and what is built on it (job cache, idempotency ledger), opened once."""

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.contract.private_files import private_database
from scaimind.gateway.db import migrate
from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.db.idempotency import IdempotencyStore
from scaimind.gateway.db.jobs import JobCache
from scaimind.settings import Settings

logger = logging.getLogger("scaimind.gateway.db")

PURGE_INTERVAL_S: Final = 3600.0


@dataclass(eq=False)
class CacheResources:
    """The cache engine and what is built on it, owned by the lifespan."""

    engine: AsyncEngine
    jobs: JobCache
    idempotency: IdempotencyStore
    # How long a duplicate waits for the request that holds its key.
    wait_timeout_s: float
    ledger_timeout_s: float

    async def ping(self) -> bool:
        """Readiness: the database answers a trivial query within the ledger timeout."""
        return await ping(self.engine, self.ledger_timeout_s)


async def open_cache(settings: Settings, stack: AsyncExitStack) -> CacheResources:
    """Engine, embedded-SQLite migration, job cache, ledger and its purger; closed by `stack`."""
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
    return CacheResources(
        engine=engine,
        jobs=jobs,
        idempotency=store,
        wait_timeout_s=settings.grpc_timeout_s + settings.token_exchange_timeout_s + 2.0,
        ledger_timeout_s=settings.cache_sync_timeout_s,
    )


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
