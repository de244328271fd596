"""`scaimind apikey create|list|revoke`: API keys in the database `scaimind serve` uses."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")


def _run(args: argparse.Namespace, operation: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `operation` on the gateway's database, migrating the embedded SQLite first."""
    from scaimind.cache import migrate
    from scaimind.cache.db import create_engine
    from scaimind.cli import settings_from_args

    url = settings_from_args(args, database_url=args.database_url).effective_database_url

    async def main() -> T:
        engine = create_engine(url)
        try:
            # Like `scaimind serve`: the embedded SQLite file is ours to migrate; server
            # databases are migrated by `scaimind migrate`.
            if engine.dialect.name == "sqlite":
                await migrate.upgrade(engine)
            return await operation(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _fail(message: str) -> int:
    print(f"scaimind apikey: {message}", file=sys.stderr)
    return 1


def cmd_create(args: argparse.Namespace) -> int:
    """Create a key and print it once."""
    from scaimind.apikeys import ApiKeyStore

    async def create(engine: AsyncEngine) -> tuple[str, str]:
        return await ApiKeyStore(engine).create(
            args.tenant,
            args.user,
            role=args.role,
            scope=args.scope,
            name=args.name,
            ttl_s=args.ttl,
        )

    try:
        key_id, key = _run(args, create)
    except ValueError as exc:
        return _fail(str(exc))
    except (SQLAlchemyError, OSError) as exc:
        return _fail(f"the database refused: {type(exc).__name__} (run `scaimind migrate`?)")
    # stdout carries only the key, so `KEY=$(scaimind apikey create …)` works.
    print(key)
    print(
        f"created API key {key_id} for tenant {args.tenant}, user {args.user}; "
        "it is shown only this once",
        file=sys.stderr,
    )
    return 0


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


def cmd_list(args: argparse.Namespace) -> int:
    """List a tenant's keys (never the secrets)."""
    from scaimind.apikeys import ApiKeyInfo, ApiKeyStore

    async def listing(engine: AsyncEngine) -> list[ApiKeyInfo]:
        return await ApiKeyStore(engine).list(args.tenant)

    try:
        keys = _run(args, listing)
    except (SQLAlchemyError, OSError) as exc:
        return _fail(f"the database refused: {type(exc).__name__} (run `scaimind migrate`?)")
    now = datetime.now(UTC)
    rows = [
        {
            "key_id": k.key_id,
            "status": k.status(now),
            "user_id": k.user_id,
            "role": k.role,
            "scope": k.scope,
            "name": k.name,
            "created_at": _iso(k.created_at),
            "expires_at": _iso(k.expires_at),
            "revoked_at": _iso(k.revoked_at),
            "last_used_at": _iso(k.last_used_at),
        }
        for k in keys
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ["key_id", "status", "user_id", "role", "scope", "name", "created_at"]
    columns += ["expires_at", "last_used_at"]
    table = [columns] + [[row[c] or "-" for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke a key; requests with it fail from then on."""
    from scaimind.apikeys import ApiKeyStore

    async def revoke(engine: AsyncEngine) -> bool:
        return await ApiKeyStore(engine).revoke(args.key_id)

    try:
        found = _run(args, revoke)
    except (SQLAlchemyError, OSError) as exc:
        return _fail(f"the database refused: {type(exc).__name__} (run `scaimind migrate`?)")
    if not found:
        return _fail(f"no API key {args.key_id}")
    print(f"revoked API key {args.key_id}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `apikey create|list|revoke` to the `scaimind` parser."""
    parser = sub.add_parser("apikey", help="create, list and revoke sgk_ API keys")
    commands = parser.add_subparsers(dest="apikey_command", required=True)

    def database(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir", type=Path, default=None, help="data directory (SCAIMIND_DATA_DIR)"
        )
        p.add_argument("--database-url", default=None, help="overrides SCAIMIND_DATABASE_URL")

    p = commands.add_parser("create", help="create a key and print it (shown only once)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--role", default="tenant_admin", help="default permissions (API.md §3)")
    p.add_argument("--scope", default="", help="space-separated extra permission keys")
    p.add_argument("--name", default="", help="what the key is for")
    p.add_argument("--ttl", type=int, default=None, help="lifetime in seconds (default: none)")
    database(p)
    p.set_defaults(handler=cmd_create)

    p = commands.add_parser("list", help="list a tenant's keys")
    p.add_argument("--tenant", required=True)
    p.add_argument("--json", action="store_true", help="print JSON")
    database(p)
    p.set_defaults(handler=cmd_list)

    p = commands.add_parser("revoke", help="revoke a key by its id")
    p.add_argument("key_id")
    database(p)
    p.set_defaults(handler=cmd_revoke)
