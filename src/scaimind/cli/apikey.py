"""`scaimind apikey create|list|revoke`: API keys in the database `scaimind serve` uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from scaimind.cli.base import CliError, note
from scaimind.cli.common import DatabaseUrlOption, DataDirOption, JsonOption, print_json

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

TenantOption = Annotated[str, typer.Option(help="tenant id")]


def _run(
    data_dir: Path | None,
    database_url: str | None,
    operation: Callable[[AsyncEngine], Awaitable[T]],
) -> T:
    """Run `operation` on the gateway's database, migrating the embedded SQLite first."""
    from sqlalchemy.exc import SQLAlchemyError

    from scaimind.cli.process import load
    from scaimind.gateway.db import migrate
    from scaimind.gateway.db.engine import create_engine

    url = load(data_dir, database_url=database_url).effective_database_url

    import asyncio

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

    try:
        return asyncio.run(main())
    except (SQLAlchemyError, OSError) as exc:
        raise CliError(f"apikey: the database refused: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The driver's own words (first line), never SQLAlchemy's rendering of the statement and
    its parameters (which would echo key hashes); a hint when the schema looks missing."""
    cause = getattr(exc, "orig", None) or exc
    said = str(cause).strip().splitlines()
    reason = f"{type(cause).__name__}: {said[0][:200]}" if said else type(cause).__name__
    missing = ("no such table", "does not exist", "doesn't exist")
    if any(marker in reason for marker in missing):
        reason += " (run `scaimind migrate`?)"
    return reason


def create(
    tenant: TenantOption,
    user: Annotated[str, typer.Option(help="user id the key acts as")],
    role: Annotated[
        str,
        typer.Option(
            help="default permissions: super_admin, partner_admin, tenant_admin, "
            "tenant_viewer, tenant_user"
        ),
    ] = "tenant_admin",
    scope: Annotated[str, typer.Option(help="space-separated extra permission keys")] = "",
    name: Annotated[str, typer.Option(help="what the key is for")] = "",
    ttl: Annotated[
        int | None, typer.Option(help="lifetime in seconds", show_default="no expiry")
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create a key and print it (shown only this once)."""
    from scaimind.gateway.security.apikeys import ApiKeyStore

    async def run(engine: AsyncEngine) -> tuple[str, str]:
        store = ApiKeyStore(engine)
        return await store.create(tenant, user, role=role, scope=scope, name=name, ttl_s=ttl)

    try:
        key_id, key = _run(data_dir, database_url, run)
    except ValueError as exc:
        raise CliError(f"apikey: {exc}") from None
    # stdout carries only the key, so `KEY=$(scaimind apikey create …)` works.
    print(key)
    note(f"created API key {key_id} for tenant {tenant}, user {user}; it is shown only this once")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


def list_keys(
    tenant: TenantOption,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List a tenant's keys (never the secrets)."""
    from scaimind.gateway.security.apikeys import ApiKeyInfo, ApiKeyStore

    async def run(engine: AsyncEngine) -> list[ApiKeyInfo]:
        return await ApiKeyStore(engine).list(tenant)

    keys = _run(data_dir, database_url, run)
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
    if as_json:
        print_json(rows)
        return
    from scaimind.cli.render import console, table

    columns = ["key_id", "status", "user_id", "role", "scope", "name", "created_at"]
    columns += ["expires_at", "last_used_at"]
    console().print(table(columns, [[row[c] for c in columns] for row in rows]))


def revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="the key id `apikey list` shows")],
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Revoke a key; requests with it fail from then on."""
    from scaimind.gateway.security.apikeys import ApiKeyStore

    async def run(engine: AsyncEngine) -> bool:
        return await ApiKeyStore(engine).revoke(key_id)

    if not _run(data_dir, database_url, run):
        raise CliError(f"apikey: no API key {key_id}")
    print(f"revoked API key {key_id}")


def build() -> typer.Typer:
    """The `apikey` command group."""
    app = typer.Typer(help="Create, list and revoke sgk_ API keys.", no_args_is_help=True)
    app.command("create")(create)
    app.command("list")(list_keys)
    app.command("revoke")(revoke)
    return app
