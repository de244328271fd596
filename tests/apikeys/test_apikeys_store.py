"""The key store on real PostgreSQL, SQLite and MariaDB: hashes only, expiry, revocation."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.db.models import ApiKeyRow, Base
from scaimind.gateway.security.apikeys import ApiKeyStore, generate_key, hash_key
from scaimind.gateway.security.auth import CLUSTER_ADMIN, EVALUATE, MANAGE, VIEW
from tests.conftest import closed_port

TABLE = Base.metadata.tables[ApiKeyRow.__tablename__]


class Clock:
    """A settable clock for the store (expiry and last-use bookkeeping)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_generated_keys_are_prefixed_random_and_hashed_with_sha256() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert re.fullmatch(r"sgk_[A-Za-z0-9_-]{43}", key), key
        assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()


async def test_created_key_verifies_as_its_tenant_user_role_and_scope(engine: AsyncEngine) -> None:
    store = ApiKeyStore(engine)
    key_id, key = await store.create(
        "tenant-a", "ci-bot", role="tenant_viewer", scope=f"{EVALUATE} {EVALUATE}", name="ci"
    )
    user = await store.verify(key)
    assert user is not None
    assert (user.tenant_id, user.user_id, user.role) == ("tenant-a", "ci-bot", "tenant_viewer")
    assert user.permissions == {VIEW, EVALUATE}
    # No JWT stands behind a key; downstream tokens are signed locally for it.
    assert user.token is None
    info = await store.get(key_id)
    assert info is not None
    assert (info.name, info.scope, info.expires_at, info.revoked_at) == ("ci", EVALUATE, None, None)

    admin = await store.verify((await store.create("tenant-b", "ops"))[1])
    assert admin is not None
    assert admin.tenant_id == "tenant-b"
    assert admin.permissions == {VIEW, MANAGE, CLUSTER_ADMIN, EVALUATE}


async def test_only_the_hash_is_stored(engine: AsyncEngine) -> None:
    store = ApiKeyStore(engine)
    _, key = await store.create("tenant-a", "u1", scope=VIEW, name="hash check", ttl_s=60)
    assert await store.verify(key) is not None  # also writes last_used_at
    async with engine.connect() as conn:
        rows = (await conn.execute(select(TABLE))).mappings().all()
    assert len(rows) == 1
    values = [str(v) for v in rows[0].values()]
    secret = key.removeprefix("sgk_")
    for value in values:
        assert key not in value
        assert secret not in value
    assert rows[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()


async def test_unknown_revoked_and_expired_keys_do_not_verify(engine: AsyncEngine) -> None:
    clock = Clock()
    store = ApiKeyStore(engine, clock=clock)
    assert await store.verify(generate_key()) is None
    assert await store.verify("not-an-api-key") is None
    assert await store.verify("sgk_" + "x" * 1000) is None

    revoked_id, revoked = await store.create("tenant-a", "u1")
    assert await store.verify(revoked) is not None
    assert await store.revoke(revoked_id) is True
    assert await store.verify(revoked) is None
    assert await store.revoke(revoked_id) is True  # again: still known, still revoked
    assert await store.revoke("no-such-key") is False

    _, expiring = await store.create("tenant-a", "u1", ttl_s=3600)
    clock.now += timedelta(seconds=3599)
    assert await store.verify(expiring) is not None
    clock.now += timedelta(seconds=1)
    assert await store.verify(expiring) is None


async def test_last_used_at_is_written_at_most_once_a_minute(engine: AsyncEngine) -> None:
    clock = Clock()
    store = ApiKeyStore(engine, clock=clock)
    key_id, key = await store.create("tenant-a", "u1")

    async def last_used() -> datetime | None:
        info = await store.get(key_id)
        assert info is not None
        return info.last_used_at

    assert await last_used() is None
    first = clock.now
    assert await store.verify(key) is not None
    assert await last_used() == first
    clock.now += timedelta(seconds=59)
    assert await store.verify(key) is not None
    assert await last_used() == first
    clock.now += timedelta(seconds=1)
    assert await store.verify(key) is not None
    assert await last_used() == clock.now


async def test_list_shows_one_tenants_keys_and_their_status(engine: AsyncEngine) -> None:
    clock = Clock()
    store = ApiKeyStore(engine, clock=clock)
    active_id, _ = await store.create("tenant-a", "u1", name="first")
    clock.now += timedelta(seconds=1)
    revoked_id, _ = await store.create("tenant-a", "u2", name="second")
    await store.revoke(revoked_id)
    clock.now += timedelta(seconds=1)
    expired_id, _ = await store.create("tenant-a", "u3", ttl_s=1)
    await store.create("tenant-b", "u1")
    clock.now += timedelta(seconds=5)

    listed = await store.list("tenant-a")
    assert [k.key_id for k in listed] == [active_id, revoked_id, expired_id]
    assert [k.status(clock.now) for k in listed] == ["active", "revoked", "expired"]
    assert [k.user_id for k in listed] == ["u1", "u2", "u3"]
    assert await store.list("tenant-c") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tenant_id": ""}, "tenant_id"),
        ({"tenant_id": "tenant ä"}, "tenant_id"),
        ({"user_id": "a b"}, "user_id"),
        ({"role": "root"}, "unknown role"),
        ({"scope": "scaimind:view scaimind:everything"}, "scaimind:everything"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"name": "n" * 257}, "name"),
    ],
)
async def test_create_refuses_bad_input(
    kwargs: dict[str, object], message: str, engine: AsyncEngine
) -> None:
    store = ApiKeyStore(engine)
    values: dict[str, object] = {"tenant_id": "tenant-a", "user_id": "u1", **kwargs}
    with pytest.raises(ValueError, match=message):
        await store.create(**values)  # type: ignore[arg-type]
    assert await store.list(str(values["tenant_id"])) == []


async def test_an_unreachable_database_raises_instead_of_refusing() -> None:
    # Port 9 (discard) on loopback is closed: the lookup fails, it does not say "unknown".
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/none")
    try:
        with pytest.raises(OSError, match="Connect call failed"):
            await ApiKeyStore(engine, timeout_s=2.0).verify(generate_key())
    finally:
        await engine.dispose()
