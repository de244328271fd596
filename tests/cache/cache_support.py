"""Database servers and Job fixtures for the cache tests (see conftest.py for the fixtures).

Servers: PostgreSQL and MariaDB on 127.0.0.1 (override the admin URLs with
SCAIMIND_TEST_PG_URL / SCAIMIND_TEST_MYSQL_URL). Each session creates `scaimind_test_<hex>`
databases and drops them at the end; SQLite lives in a temporary directory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiomysql
import asyncpg
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "SCAIMIND_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URL = os.environ.get("SCAIMIND_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
DIALECTS = ("postgresql", "sqlite", "mariadb")

T = TypeVar("T")


def run_sync(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a private loop, even when called under a running one."""

    async def _main() -> T:
        return await coro_fn()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _main()).result()


class DatabaseFactory:
    """Creates uniquely named empty databases and drops them all at the end of the session."""

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp_dir = tmp_dir
        self._created: list[tuple[str, str]] = []

    def create(self, dialect: str) -> str:
        """A new empty database of ``dialect``; returns its async SQLAlchemy URL."""
        name = f"scaimind_test_{uuid.uuid4().hex[:12]}"
        if dialect == "sqlite":
            return f"sqlite+aiosqlite:///{self._tmp_dir / name}.db"
        if dialect == "postgresql":
            run_sync(lambda: _pg_admin(f'CREATE DATABASE "{name}"'))
            self._created.append((dialect, name))
            url = make_url(PG_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
        elif dialect == "mariadb":
            run_sync(lambda: _mysql_admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            self._created.append((dialect, name))
            url = make_url(MYSQL_ADMIN_URL).set(drivername="mysql+aiomysql", database=name)
        else:
            raise ValueError(dialect)
        return url.render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop every server database this factory created."""
        for dialect, name in self._created:
            if dialect == "postgresql":
                run_sync(lambda n=name: _pg_admin(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))
            else:
                run_sync(lambda n=name: _mysql_admin(f"DROP DATABASE IF EXISTS `{n}`"))
        self._created.clear()


async def _pg_admin(sql: str) -> None:
    url = make_url(PG_ADMIN_URL)
    try:
        conn = await asyncpg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password,
            database=url.database or "postgres",
            timeout=10,
        )
    except OSError as exc:
        raise RuntimeError(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} (SCAIMIND_TEST_PG_URL); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        ) from exc
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _mysql_admin(sql: str) -> None:
    url = make_url(MYSQL_ADMIN_URL)
    try:
        conn = await aiomysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
            connect_timeout=10,
        )
    except OSError as exc:
        raise RuntimeError(
            f"MariaDB is not reachable at {MYSQL_ADMIN_URL} (SCAIMIND_TEST_MYSQL_URL); start it "
            "with `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`"
        ) from exc
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql)
    finally:
        conn.close()


def job_dict(
    job_id: str,
    *,
    tenant_id: str = "tenant-a",
    status: str = "QUEUED",
    updated_at: datetime | None = None,
    created_at: datetime | None = None,
    labels: dict[str, str] | None = None,
    name: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Job in the gateway's JSON shape (docs/API.md, "Jobs")."""
    created = created_at or datetime(2026, 1, 1, tzinfo=UTC)
    updated = updated_at or created
    job: dict[str, Any] = {
        "job_id": job_id,
        "name": name or f"name of {job_id}",
        "tenant_id": tenant_id,
        "user_id": "user-1",
        "status": status,
        "status_message": "",
        "training_config": {
            "training_type": "SFT",
            "base_model": {"model_id": "tiny-llama"},
            "framework": {"type": "HF_TRAINER"},
            "priority": 5,
        },
        "scheduling_config": {"queue_name": "default"},
        "labels": labels or {},
        "parent_job_id": "",
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "started_at": None,
        "completed_at": None,
        "updated_at": updated.isoformat().replace("+00:00", "Z"),
    }
    job.update(extra)
    return job
