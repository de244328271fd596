"""`sgk_…` API keys: created with the CLI, stored only as SHA-256 hashes.

See docs/API.md, "Authentication and permissions".

A key is `sgk_` followed by 256 random bits. Only its SHA-256 digest is stored; verification
hashes the presented key and looks the digest up through a unique index, so no stored secret
is ever compared byte by byte (nothing to time). A fast hash is enough here: unlike passwords,
the keys are random, so there is no dictionary to try against a leaked digest.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.gateway.db.models import ApiKeyRow, Base
from scaimind.gateway.errors import ApiKeysUnavailable, AuthTokenInvalid
from scaimind.gateway.security.auth import (
    ALL_PERMISSIONS,
    API_KEY_PREFIX,
    ROLE_PERMISSIONS,
    CurrentUser,
    RoleGrants,
    permissions_for,
)

logger = logging.getLogger("scaimind.gateway.security.apikeys")

# Writing last_used_at on every request would turn each authenticated read into a write.
LAST_USED_RESOLUTION: Final = timedelta(minutes=1)
DEFAULT_TIMEOUT_S: Final = 2.0
_SECRET_BYTES: Final = 32
# Far longer than any key we issue; anything longer is not worth hashing.
_MAX_KEY_CHARS: Final = 256
# Tenant and user travel as gRPC metadata, which only carries printable ASCII.
_IDENTIFIER = re.compile(r"[\x21-\x7e]{1,128}")

_TABLE = Base.metadata.tables[ApiKeyRow.__tablename__]
_C = _TABLE.c


def generate_key() -> str:
    """A new random key: `sgk_` and 43 url-safe characters (256 bits)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What is known about a key besides its secret."""

    key_id: str
    tenant_id: str
    user_id: str
    role: str
    scope: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def status(self, now: datetime) -> str:
        """`active`, `revoked` or `expired` at `now`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def _info(row: RowMapping) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row["key_id"],
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        role=row["role"],
        scope=row["scope"],
        name=row["name"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


def _normalise_scope(scope: str) -> str:
    keys = sorted(set(scope.split()))
    unknown = [k for k in keys if k not in ALL_PERMISSIONS]
    if unknown:
        raise ValueError(
            f"unknown permission key(s) {', '.join(unknown)}; known: {', '.join(ALL_PERMISSIONS)}"
        )
    return " ".join(keys)


class ApiKeyStore:
    """Creates, verifies, lists and revokes API keys in `mod_scaimind_api_keys`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._engine = engine
        self._timeout_s = timeout_s
        self._clock = clock

    async def create(
        self,
        tenant_id: str,
        user_id: str,
        role: str = "tenant_admin",
        scope: str = "",
        name: str = "",
        ttl_s: int | None = None,
    ) -> tuple[str, str]:
        """Store a new key; returns `(key_id, key)`. The key is not kept: show it once."""
        for label, value in (("tenant_id", tenant_id), ("user_id", user_id)):
            if not _IDENTIFIER.fullmatch(value):
                raise ValueError(f"{label} must be 1-128 printable ASCII characters, no spaces")
        # "" is a key whose permissions come from its scope alone.
        if role and role not in ROLE_PERMISSIONS:
            raise ValueError(f"unknown role {role!r}; known: {', '.join(ROLE_PERMISSIONS)}")
        if len(name) > 256:
            raise ValueError("name must be at most 256 characters")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError("ttl_s must be positive (or None for a key that does not expire)")
        normalised_scope = _normalise_scope(scope)
        now = self._clock()
        key_id = secrets.token_hex(8)
        key = generate_key()
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(_TABLE).values(
                    key_id=key_id,
                    key_hash=hash_key(key),
                    tenant_id=tenant_id,
                    user_id=user_id,
                    role=role,
                    scope=normalised_scope,
                    name=name,
                    created_at=now,
                    expires_at=None if ttl_s is None else now + timedelta(seconds=ttl_s),
                    revoked_at=None,
                    last_used_at=None,
                )
            )
        return key_id, key

    async def verify(self, key: str, grants: RoleGrants = ROLE_PERMISSIONS) -> CurrentUser | None:
        """The caller a key stands for (its role granted from `grants`); None when it is
        unknown, revoked or expired.

        Raises SQLAlchemyError, OSError or TimeoutError when the database does not answer.
        """
        if not key.startswith(API_KEY_PREFIX) or len(key) > _MAX_KEY_CHARS:
            return None
        query = select(_TABLE).where(_C.key_hash == hash_key(key))
        async with asyncio.timeout(self._timeout_s), self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().one_or_none()
        if row is None:
            return None
        info = _info(row)
        now = self._clock()
        if info.status(now) != "active":
            return None
        if info.last_used_at is None or now - info.last_used_at >= LAST_USED_RESOLUTION:
            await self._touch(info.key_id, now)
        return CurrentUser(
            user_id=info.user_id,
            tenant_id=info.tenant_id,
            role=info.role,
            permissions=permissions_for(info.role, info.scope, grants),
            # No JWT behind an API key: nothing to hand an identity provider for exchange.
            token=None,
        )

    async def _touch(self, key_id: str, now: datetime) -> None:
        # The condition makes concurrent requests (and replicas) write at most once a minute.
        query = (
            update(_TABLE)
            .where(
                _C.key_id == key_id,
                or_(_C.last_used_at.is_(None), _C.last_used_at <= now - LAST_USED_RESOLUTION),
            )
            .values(last_used_at=now)
        )
        try:
            async with asyncio.timeout(self._timeout_s), self._engine.begin() as conn:
                await conn.execute(query)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # Bookkeeping only: a busy database must not turn a valid key into an error.
            logger.warning(
                "recording the use of API key %s failed: %s",
                key_id,
                type(exc).__name__,
                extra={"event": "scaimind_api_key_touch_failed", "key_id": key_id},
            )

    async def list(self, tenant_id: str) -> builtins.list[ApiKeyInfo]:
        """Every key of a tenant (revoked and expired included), oldest first."""
        query = select(_TABLE).where(_C.tenant_id == tenant_id).order_by(_C.created_at, _C.key_id)
        async with self._engine.connect() as conn:
            result = await conn.execute(query)
            return [_info(row) for row in result.mappings()]

    async def get(self, key_id: str) -> ApiKeyInfo | None:
        """One key by its id."""
        async with self._engine.connect() as conn:
            result = await conn.execute(select(_TABLE).where(_C.key_id == key_id))
            row = result.mappings().one_or_none()
        return None if row is None else _info(row)

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key for good; False when no such key exists (revoking twice is fine)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(_TABLE)
                .where(_C.key_id == key_id, _C.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            # Not the UPDATE's rowcount: MySQL counts only changed rows, and a repeat changes none.
            found = await conn.execute(select(_C.key_id).where(_C.key_id == key_id))
            return found.first() is not None

    async def authenticate(self, key: str, grants: RoleGrants) -> CurrentUser:
        """The caller of an `sgk_` bearer key; 401 when it does not verify, 503 when unsure."""
        try:
            user = await self.verify(key, grants)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            logger.warning(
                "API key verification failed: %s",
                type(exc).__name__,
                extra={"event": "scaimind_api_key_unavailable"},
            )
            raise ApiKeysUnavailable() from None
        if user is None:
            raise AuthTokenInvalid("unknown, revoked or expired API key")
        return user
