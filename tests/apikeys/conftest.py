"""Fresh PostgreSQL, SQLite and MariaDB databases (the cache fixtures) and a keyed gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.gateway.security.apikeys import ApiKeyStore
from scaimind.settings import Settings
from tests.cache import conftest as cache_fixtures
from tests.conftest import gateway_settings
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import ScriptedCoordinator, running_gateway

# The cache package's fresh databases (one per dialect, built by alembic) and the scripted
# coordinator, made available to this package.
database_factory = cache_fixtures.database_factory
migrated_urls = cache_fixtures.migrated_urls
database_url = cache_fixtures.database_url
engine = cache_fixtures.engine
scripted = gateway_fixtures.scripted


@dataclass
class KeyedGateway:
    """A gateway on one of the test databases, its coordinator, and a store on that database."""

    http: httpx.AsyncClient
    coordinator: ScriptedCoordinator
    store: ApiKeyStore
    engine: AsyncEngine
    settings: Settings


@pytest.fixture
async def gw(
    scripted: tuple[ScriptedCoordinator, int],
    database_url: str,
    engine: AsyncEngine,
    tmp_path: Path,
) -> AsyncIterator[KeyedGateway]:
    """The standalone gateway on `database_url` (emptied), in front of a scripted coordinator."""
    servicer, port = scripted
    settings = gateway_settings(tmp_path, port, database_url=database_url)
    async with running_gateway(settings) as client:
        yield KeyedGateway(client, servicer, ApiKeyStore(engine), engine, settings)
