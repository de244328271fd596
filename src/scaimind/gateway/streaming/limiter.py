"""The per-tenant cap on open streams of this process (docs/API.md, "Stream rules")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from scaimind.gateway.errors import RateLimited

# A tenant at its cap is told to come back after this long; streams are long-lived, so
# an immediate retry would almost surely be refused again.
STREAM_RETRY_AFTER_S: Final = 5


class ClientStalled(TimeoutError):
    """A stream's client read nothing for SSE_SEND_TIMEOUT_S (its socket stayed full)."""


class StreamSlot:
    """One tenant's claim on an open stream; releasing twice is harmless."""

    __slots__ = ("_limiter", "_released", "stop", "tenant_id")

    def __init__(self, limiter: StreamLimiter, tenant_id: str) -> None:
        self._limiter = limiter
        self.tenant_id = tenant_id
        self._released = False
        # Set by the stream while it runs: ends it at shutdown.
        self.stop: Callable[[], None] | None = None

    def release(self) -> None:
        """Give the slot back."""
        if not self._released:
            self._released = True
            self._limiter.release(self)

    def timed_out(self) -> None:
        """Count the stream as closed for a client that stopped reading."""
        self._limiter.send_timeouts += 1


class StreamLimiter:
    """Per-tenant cap on concurrent streams in this process (loop-confined, no lock needed)."""

    def __init__(self, cap_per_tenant: int) -> None:
        self.cap_per_tenant = cap_per_tenant
        self._open: dict[str, int] = {}
        self._slots: set[StreamSlot] = set()
        # Streams closed because their client read nothing for the send timeout.
        self.send_timeouts = 0

    def acquire(self, tenant_id: str) -> StreamSlot:
        """Claim a slot or raise RateLimited (429 with Retry-After)."""
        count = self._open.get(tenant_id, 0)
        if count >= self.cap_per_tenant:
            raise RateLimited(
                f"too many concurrent streams for this tenant (limit {self.cap_per_tenant}); "
                "close one or retry later",
                retry_after=STREAM_RETRY_AFTER_S,
            )
        self._open[tenant_id] = count + 1
        slot = StreamSlot(self, tenant_id)
        self._slots.add(slot)
        return slot

    def release(self, slot: StreamSlot) -> None:
        """A stream closed (its slot calls this once)."""
        self._slots.discard(slot)
        tenant_id = slot.tenant_id
        count = self._open.get(tenant_id, 0) - 1
        if count > 0:
            self._open[tenant_id] = count
        else:
            self._open.pop(tenant_id, None)

    def open_streams(self, tenant_id: str | None = None) -> int:
        """Streams open now, for one tenant or in total."""
        if tenant_id is not None:
            return self._open.get(tenant_id, 0)
        return sum(self._open.values())

    def end_all(self) -> int:
        """Stop every running stream (the server is shutting down); returns how many."""
        stops = [slot.stop for slot in self._slots if slot.stop is not None]
        for stop in stops:
            stop()
        return len(stops)
