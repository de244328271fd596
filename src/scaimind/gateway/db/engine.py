"""Async engine factory for the job cache (PostgreSQL, SQLite, MariaDB/MySQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Plain URLs (as operators tend to write them) are mapped onto the async drivers we ship.
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
}

# PostgreSQL deadlock / serialization failure, MySQL deadlock / lock wait timeout.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
_TRANSIENT_MYSQL_CODES = frozenset({1213, 1205})

SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 5


def async_url(url: str | URL) -> URL:
    """Return ``url`` with its async driver filled in when none was given."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def _is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or bool(url.query.get("mode") == "memory")


def is_transient(exc: DBAPIError) -> bool:
    """True for deadlocks and serialization failures, which succeed when simply retried."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _TRANSIENT_MYSQL_CODES


def ensure_sqlite_directory(url: str | URL) -> None:
    """Create the parent directory of a SQLite database file (the embedded default)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not _is_memory_sqlite(parsed):
        assert parsed.database is not None
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str | URL, **overrides: Any) -> AsyncEngine:
    """Create an ``AsyncEngine`` with per-dialect pool and connection settings."""
    parsed = async_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        if not _is_memory_sqlite(parsed):
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    elif backend == "postgresql":
        # pre_ping: the cache must survive a database restart without a gateway restart.
        kwargs.update(
            pool_size=5,
            max_overflow=10,
            pool_pre_ping=True,
            pool_timeout=CONNECT_TIMEOUT_S,
            connect_args={"timeout": CONNECT_TIMEOUT_S},
        )
    elif backend in ("mysql", "mariadb"):
        # MySQL closes idle connections after wait_timeout (8 h default); recycle well before.
        connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
        if "charset" not in parsed.query:
            connect_args["charset"] = "utf8mb4"
        kwargs.update(
            pool_size=5,
            max_overflow=10,
            pool_pre_ping=True,
            pool_recycle=1800,
            pool_timeout=CONNECT_TIMEOUT_S,
            connect_args=connect_args,
        )
    if "poolclass" in overrides:
        # NullPool/StaticPool (migrations, tests) reject queue-pool sizing arguments.
        for name in ("pool_size", "max_overflow", "pool_timeout"):
            kwargs.pop(name, None)
    kwargs.update(overrides)
    engine = create_async_engine(parsed, **kwargs)
    if backend == "sqlite":
        _configure_sqlite(engine, memory=_is_memory_sqlite(parsed))
    return engine


def _configure_sqlite(engine: AsyncEngine, *, memory: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # WAL lets dashboard reads proceed while the gateway writes; busy_timeout makes
            # concurrent writers queue instead of failing with "database is locked".
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()
