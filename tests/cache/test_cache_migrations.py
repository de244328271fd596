"""The alembic migration: round trip, drift against the models, URL resolution of env.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from scaimind.gateway.db import migrate
from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.db.models import VERSION_TABLE, Base
from tests.cache.cache_support import DIALECTS, DatabaseFactory

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_TABLES = {"mod_scaimind_jobs", "mod_scaimind_idempotency", "mod_scaimind_api_keys"}
HEAD = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_upgrade_downgrade_upgrade_round_trip(
    dialect: str, database_factory: DatabaseFactory
) -> None:
    url = database_factory.create(dialect)
    await migrate.upgrade(url)
    assert await _tables(url) >= CACHE_TABLES
    assert await migrate.current(url) == HEAD

    await migrate.downgrade(url)
    assert not CACHE_TABLES & await _tables(url)
    assert await migrate.current(url) is None

    await migrate.upgrade(url)
    tables = await _tables(url)
    assert tables >= CACHE_TABLES
    # Our version table must not collide with ScaiGrid's own `alembic_version`.
    assert VERSION_TABLE in tables
    assert "alembic_version" not in tables


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "version_table": VERSION_TABLE,
            "include_name": lambda name, type_, _parent: (
                type_ != "table"
                or bool(name and name.startswith("mod_scaimind_") and name != VERSION_TABLE)
            ),
        },
    )
    return list(compare_metadata(context, Base.metadata))


async def test_models_match_migration(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diffs = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diffs == []


async def test_upgrade_is_idempotent(database_url: str) -> None:
    # `scaimind serve` upgrades on every start; a second run on a current schema is a no-op.
    await migrate.upgrade(database_url)
    assert await migrate.current(database_url) == HEAD


def _alembic(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_alembic_cli_takes_url_from_x_argument_then_environment(tmp_path: Path) -> None:
    from_x = tmp_path / "from_x.db"
    from_env = tmp_path / "from_env.db"
    env = {"SCAIMIND_DATABASE_URL": f"sqlite:///{from_env}"}

    result = _alembic(["-x", f"url=sqlite:///{from_x}", "upgrade", "head"], env)
    assert result.returncode == 0, result.stderr
    assert await _tables(f"sqlite:///{from_x}") >= CACHE_TABLES
    assert not from_env.exists()

    result = _alembic(["upgrade", "head"], env)
    assert result.returncode == 0, result.stderr
    assert await _tables(f"sqlite:///{from_env}") >= CACHE_TABLES

    result = _alembic(["upgrade", "head"], {"SCAIMIND_DATABASE_URL": ""})
    assert result.returncode != 0
    assert "no database URL" in result.stderr
