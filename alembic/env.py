"""Alembic environment for the ScaiMind job cache (async engines, URL from the caller)."""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection

from scaimind.gateway.db.engine import async_url, create_engine
from scaimind.gateway.db.models import VERSION_TABLE, Base

TABLE_PREFIX = "mod_scaimind_"

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or os.environ.get("SCAIMIND_DATABASE_URL")
    if not url:
        raise RuntimeError(
            "no database URL: pass -x url=..., set SCAIMIND_DATABASE_URL, "
            "or config.attributes['url']"
        )
    return str(url)


def _include_name(name: str | None, type_: str, _parent: Any) -> bool:
    # Autogenerate must ignore the host application's tables in a shared database.
    if type_ == "table":
        return bool(name and name.startswith(TABLE_PREFIX))
    return True


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=_include_name,
        compare_type=True,
        render_as_batch=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit the migration SQL for the given URL without connecting."""
    _configure(url=async_url(_database_url()), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on a synchronous connection."""
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    """Open an async engine for the URL and run the migrations through it."""
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
elif isinstance(connection := config.attributes.get("connection"), Connection):
    # scaimind.gateway.db.migrate hands us a connection from inside a running event loop.
    do_run_migrations(connection)
else:
    asyncio.run(run_async_migrations())
