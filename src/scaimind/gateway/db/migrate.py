"""Programmatic alembic upgrade/downgrade, safe to call from inside a running event loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import pool
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.gateway.db.engine import create_engine, ensure_sqlite_directory
from scaimind.gateway.db.models import VERSION_TABLE

# A wheel carries the scripts inside the package (pyproject's force-include); a source checkout
# or an editable install has them at the repository root, next to src/.
_SCRIPT_LOCATIONS = (
    Path(__file__).resolve().parents[2] / "_alembic",
    Path(__file__).resolve().parents[4] / "alembic",
)


def script_location() -> Path:
    """Directory holding env.py and versions/."""
    for location in _SCRIPT_LOCATIONS:
        if (location / "env.py").is_file():
            return location
    raise FileNotFoundError(
        f"alembic scripts not found in {' or '.join(str(p) for p in _SCRIPT_LOCATIONS)}"
    )


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic config pointing at our scripts, optionally bound to an open connection."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    # Never let alembic reconfigure the host application's logging.
    config.attributes["configure_logger"] = False
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade(url: str | URL | AsyncEngine, revision: str = "head") -> None:
    """Upgrade the cache schema to ``revision``."""
    await _run(url, lambda config: command.upgrade(config, revision))


async def downgrade(url: str | URL | AsyncEngine, revision: str = "base") -> None:
    """Downgrade the cache schema to ``revision``."""
    await _run(url, lambda config: command.downgrade(config, revision))


async def current(url: str | URL | AsyncEngine) -> str | None:
    """The revision the database is at, or None when unversioned."""

    def _read(connection: Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    engine, owned = _engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_read)
    finally:
        if owned:
            await engine.dispose()


def _engine(url: str | URL | AsyncEngine) -> tuple[AsyncEngine, bool]:
    if isinstance(url, AsyncEngine):
        ensure_sqlite_directory(url.url)
        return url, False
    ensure_sqlite_directory(url)
    return create_engine(url, poolclass=pool.NullPool), True


async def _run(url: str | URL | AsyncEngine, operation: Callable[[Config], None]) -> None:
    def _migrate(connection: Connection) -> None:
        operation(alembic_config(connection))

    engine, owned = _engine(url)
    try:
        # run_sync drives alembic's synchronous API on the async driver without a new loop,
        # so this works from the FastAPI lifespan as well as from a plain asyncio.run().
        async with engine.begin() as connection:
            await connection.run_sync(_migrate)
    finally:
        if owned:
            await engine.dispose()
