"""Idempotency-Key ledger: the UNIQUE constraint decides which duplicate gets to do the work."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.gateway.db.engine import is_transient
from scaimind.gateway.db.models import Base, IdempotencyRecord

DEFAULT_TTL = timedelta(hours=24)
# A claim whose owner died (crash, kill -9) must not block the key for the whole TTL.
DEFAULT_CLAIM_TIMEOUT = timedelta(minutes=5)
_CLAIM_ATTEMPTS = 10

_TABLE = Base.metadata.tables[IdempotencyRecord.__tablename__]
_C = _TABLE.c


@dataclass(frozen=True, slots=True)
class Claimed:
    """This caller owns the key: do the work, then ``complete`` or ``release``."""


@dataclass(frozen=True, slots=True)
class Replay:
    """The key was used with the same body; return this stored response."""

    status_code: int
    body: Any


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The key was used with a different body."""


@dataclass(frozen=True, slots=True)
class InProgress:
    """Another request with the same key and body is still running."""


Outcome = Claimed | Replay | Mismatch | InProgress


def fingerprint(body: Any) -> str:
    """sha256 of the canonical JSON of ``body`` (sorted keys, no whitespace)."""
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Record:
    fingerprint: str
    state: str
    status_code: int | None
    body: Any
    created_at: datetime
    expires_at: datetime


class IdempotencyStore:
    """Claims, completes and replays Idempotency-Keys in `mod_scaimind_idempotency`."""

    def __init__(
        self,
        engine: AsyncEngine,
        ttl: timedelta = DEFAULT_TTL,
        *,
        claim_timeout: timedelta = DEFAULT_CLAIM_TIMEOUT,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._engine = engine
        self._ttl = ttl
        self._claim_timeout = claim_timeout
        self._clock = clock

    async def begin(self, tenant_id: str, route: str, key: str, fingerprint: str) -> Outcome:
        """Try to claim the key; otherwise say why not (replay, mismatch, in progress)."""
        for _ in range(_CLAIM_ATTEMPTS):
            if await self._try_claim(tenant_id, route, key, fingerprint):
                return Claimed()
            record = await self._load(tenant_id, route, key)
            if record is None:
                continue  # released or purged between our INSERT and SELECT: try again
            if self._is_stale(record):
                await self._delete_stale(tenant_id, route, key)
                continue
            return self._classify(record, fingerprint)
        # Only reachable when others keep claiming and releasing under us.
        return InProgress()

    async def wait_for_result(
        self,
        tenant_id: str,
        route: str,
        key: str,
        fingerprint: str,
        *,
        timeout: float,  # noqa: ASYNC109  (a polling deadline, not a cancellation scope)
        interval: float = 0.05,
    ) -> Outcome:
        """Poll until the owner finishes; Claimed if it released the key, InProgress on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            record = await self._load(tenant_id, route, key)
            if record is None or self._is_stale(record):
                outcome = await self.begin(tenant_id, route, key, fingerprint)
            else:
                outcome = self._classify(record, fingerprint)
            if not isinstance(outcome, InProgress) or loop.time() >= deadline:
                return outcome
            await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))

    async def complete(
        self, tenant_id: str, route: str, key: str, status_code: int, body: Any
    ) -> bool:
        """Store the response of a claimed key; False when the claim no longer exists."""
        query = (
            update(_TABLE)
            .where(*self._where(tenant_id, route, key), _C.state == "in_progress")
            .values(state="completed", status_code=status_code, response_body=body)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def release(self, tenant_id: str, route: str, key: str) -> bool:
        """Give up a claim so a retry of the same request can run; completed keys are kept."""
        query = delete(_TABLE).where(*self._where(tenant_id, route, key), _C.state == "in_progress")
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def purge_expired(self) -> int:
        """Delete expired records; returns how many."""
        query = delete(_TABLE).where(_C.expires_at <= self._clock())
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return int(result.rowcount)

    async def _try_claim(self, tenant_id: str, route: str, key: str, fingerprint: str) -> bool:
        now = self._clock()
        query = insert(_TABLE).values(
            tenant_id=tenant_id,
            route=route,
            key=key,
            fingerprint=fingerprint,
            state="in_progress",
            created_at=now,
            expires_at=now + self._ttl,
        )
        try:
            async with self._engine.begin() as conn:
                await conn.execute(query)
        except IntegrityError:
            return False
        except DBAPIError as exc:
            # InnoDB may pick a racing INSERT as a deadlock victim (gap locks around a DELETE);
            # the caller re-reads the key and tries again.
            if is_transient(exc):
                return False
            raise
        return True

    async def _load(self, tenant_id: str, route: str, key: str) -> _Record | None:
        query = select(
            _C.fingerprint,
            _C.state,
            _C.status_code,
            _C.response_body,
            _C.created_at,
            _C.expires_at,
        ).where(*self._where(tenant_id, route, key))
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _Record(*row)

    async def _delete_stale(self, tenant_id: str, route: str, key: str) -> None:
        # Staleness is re-checked inside the DELETE: a racer that already re-claimed the key has
        # a fresh record, which must survive (ids are no help: SQLite reuses rowids).
        now = self._clock()
        stale = or_(
            _C.expires_at <= now,
            and_(_C.state == "in_progress", _C.created_at <= now - self._claim_timeout),
        )
        try:
            async with self._engine.begin() as conn:
                await conn.execute(delete(_TABLE).where(*self._where(tenant_id, route, key), stale))
        except DBAPIError as exc:
            if not is_transient(exc):
                raise

    def _is_stale(self, record: _Record) -> bool:
        now = self._clock()
        if record.expires_at <= now:
            return True
        return record.state == "in_progress" and record.created_at + self._claim_timeout <= now

    @staticmethod
    def _classify(record: _Record, fingerprint: str) -> Outcome:
        if record.fingerprint != fingerprint:
            return Mismatch()
        if record.state == "completed" and record.status_code is not None:
            return Replay(record.status_code, record.body)
        return InProgress()

    @staticmethod
    def _where(tenant_id: str, route: str, key: str) -> tuple[Any, ...]:
        return (_C.tenant_id == tenant_id, _C.route == route, _C.key == key)
