"""The per-tenant cap on open streams of this process (docs/API.md, "Stream rules")."""

from __future__ import annotations

from typing import Final

from scaimind.gateway.errors import RateLimited

# A tenant at its cap is told to come back after this long; streams are long-lived, so
# an immediate retry would almost surely be refused again.
STREAM_RETRY_AFTER_S: Final = 5


class ClientStalled(TimeoutError):
    """A stream's client read nothing for SSE_SEND_TIMEOUT_S (its socket stayed full)."""


class StreamSlot:
    """One tenant's claim on an open stream; releasing twice is harmless."""

    __slots__ = ("_limiter", "_released", "tenant_id")

    def __init__(self, limiter: StreamLimiter, tenant_id: str) -> None:
        self._limiter = limiter
        self.tenant_id = tenant_id
        self._released = False

    def release(self) -> None:
        """Give the slot back."""
        if not self._released:
            self._released = True
            self._limiter.release(self.tenant_id)

    def timed_out(self) -> None:
        """Count the stream as closed for a client that stopped reading."""
        self._limiter.send_timeouts += 1


class StreamLimiter:
    """Per-tenant cap on concurrent streams in this process (loop-confined, no lock needed)."""

    def __init__(self, cap_per_tenant: int) -> None:
        self.cap_per_tenant = cap_per_tenant
        self._open: dict[str, int] = {}
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
        return StreamSlot(self, tenant_id)

    def release(self, tenant_id: str) -> None:
        """One stream of `tenant_id` closed (its slot calls this once)."""
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
