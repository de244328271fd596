"""Idempotency-Key handling of create calls: claim, replay or run once (docs/API.md)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import Response
from sqlalchemy.exc import SQLAlchemyError

from scaimind.gateway.db.idempotency import InProgress, Mismatch, Outcome, Replay, fingerprint
from scaimind.gateway.db.resources import CacheResources
from scaimind.gateway.errors import IdempotencyKeyInProgress, IdempotencyKeyReused

logger = logging.getLogger("scaimind.gateway.db")

REPLAYED_HEADER: Final = "Idempotent-Replayed"
# Ledger failures surface as these; anything else is a bug and propagates.
_LEDGER_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


class Idempotency:
    """Runs a create call at most once per (tenant, route, Idempotency-Key) and replays it."""

    def __init__(self, resources: CacheResources, key: str | None, response: Response) -> None:
        self._resources = resources
        self._store = resources.idempotency
        self._response = response
        self.key = key

    async def run(
        self,
        tenant_id: str,
        route: str,
        body: Any,
        call: Callable[[], Awaitable[dict[str, Any]]],
        *,
        status_code: int,
    ) -> dict[str, Any]:
        """``call()`` once per key; a replay returns the stored body and ``status_code``."""
        key = self.key
        if key is None:
            return await call()
        digest = fingerprint(body)
        outcome = await self._claim(tenant_id, route, key, digest)
        if outcome is None:
            # Ledger unreachable: fail open. The coordinator still deduplicates on the
            # forwarded x-idempotency-key, so a retried submit does not create a second job.
            return await call()
        if isinstance(outcome, Mismatch):
            raise IdempotencyKeyReused()
        if isinstance(outcome, InProgress):
            raise IdempotencyKeyInProgress()
        if isinstance(outcome, Replay):
            self._response.status_code = outcome.status_code
            self._response.headers[REPLAYED_HEADER] = "true"
            replayed: dict[str, Any] = outcome.body
            return replayed
        try:
            result = await call()
        except BaseException:
            # Any failure (including a cancelled request) frees the key for a retry.
            await asyncio.shield(self._release(tenant_id, route, key))
            raise
        try:
            await self._store.complete(tenant_id, route, key, status_code, result)
        except _LEDGER_ERRORS as exc:
            self._ledger_failed("complete", tenant_id, exc)
        return result

    async def _claim(self, tenant_id: str, route: str, key: str, digest: str) -> Outcome | None:
        try:
            async with asyncio.timeout(self._resources.ledger_timeout_s):
                outcome = await self._store.begin(tenant_id, route, key, digest)
            if isinstance(outcome, InProgress):
                outcome = await self._store.wait_for_result(
                    tenant_id, route, key, digest, timeout=self._resources.wait_timeout_s
                )
        except _LEDGER_ERRORS as exc:
            self._ledger_failed("begin", tenant_id, exc)
            return None
        return outcome

    async def _release(self, tenant_id: str, route: str, key: str) -> None:
        try:
            await self._store.release(tenant_id, route, key)
        except _LEDGER_ERRORS as exc:
            self._ledger_failed("release", tenant_id, exc)

    @staticmethod
    def _ledger_failed(operation: str, tenant_id: str, exc: BaseException) -> None:
        logger.warning(
            "idempotency ledger %s failed: %s",
            operation,
            type(exc).__name__,
            extra={
                "event": "scaimind_idempotency_unavailable",
                "operation": operation,
                "tenant_id": tenant_id,
                "error": repr(exc)[:500],
            },
        )
