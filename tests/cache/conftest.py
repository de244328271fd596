"""Fresh PostgreSQL, SQLite and MariaDB databases per test session, built by the alembic migration.

Servers: PostgreSQL and MariaDB on 127.0.0.1 (override the admin URLs with
SCAIMIND_TEST_PG_URL / SCAIMIND_TEST_MYSQL_URL). Each session creates `scaimind_test_<hex>`
databases and drops them at the end; SQLite lives in a temporary directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.gateway.db import migrate
from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.db.models import Base
from tests.cache.cache_support import DIALECTS, DatabaseFactory, job_dict, run_sync


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    """Session-wide factory of fresh databases."""
    factory = DatabaseFactory(tmp_path_factory.mktemp("cache-db"))
    try:
        yield factory
    finally:
        factory.drop_all()


@pytest.fixture(scope="session")
def migrated_urls(database_factory: DatabaseFactory) -> dict[str, str]:
    """One migrated database per dialect, created on first use and shared by the session."""
    return {}


@pytest.fixture(params=DIALECTS)
def database_url(
    request: pytest.FixtureRequest,
    database_factory: DatabaseFactory,
    migrated_urls: dict[str, str],
) -> str:
    """URL of the session's migrated database for each dialect in turn."""
    dialect: str = request.param
    if dialect not in migrated_urls:
        url = database_factory.create(dialect)
        run_sync(lambda: migrate.upgrade(url))
        migrated_urls[dialect] = url
    return migrated_urls[dialect]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the migrated database, with every cache table emptied first."""
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            await conn.execute(delete(table))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def make_job() -> Callable[..., dict[str, Any]]:
    """Factory of Job dicts in the gateway's JSON shape."""
    return job_dict
