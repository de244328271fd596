"""Server-Sent Events machinery of the monitoring endpoints (API.md §5.2 stream rules).

A stream is one coroutine: sse-starlette's `EventSourceResponse` runs the relay, the heartbeat,
the shutdown watch and the disconnect listener in one task group, so a client that goes away
cancels the relay, whose `finally` closes the upstream iterator and with it the gRPC call.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from google.protobuf.message import Message
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from scaimind.convert import enum_name, message_to_dict
from scaimind.errors import CoordinatorError, RateLimited
from scaimind.v1 import common_pb2

logger = logging.getLogger("scaimind.streams")

DONE: Final = "[DONE]"
_SEP: Final = "\n"
# A tenant at its cap is told to come back after this long; streams are long-lived, so
# an immediate retry would almost surely be refused again.
STREAM_RETRY_AFTER_S: Final = 5


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
            self._limiter._release(self.tenant_id)


class StreamLimiter:
    """Per-tenant cap on concurrent streams in this process (loop-confined, no lock needed)."""

    def __init__(self, cap_per_tenant: int) -> None:
        self.cap_per_tenant = cap_per_tenant
        self._open: dict[str, int] = {}

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

    def _release(self, tenant_id: str) -> None:
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


def finite(value: Any) -> Any:
    """Replace NaN/±inf (which JSON cannot carry) with None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def sse_event(data: Any, *, event: str | None = None, id: str | None = None) -> ServerSentEvent:
    """One event; `data` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else _json(data)
    return ServerSentEvent(text, event=event, id=id, sep=_SEP)


def _error_events(code: str, retryable: bool) -> list[ServerSentEvent]:
    # The in-band error carries only the code: the message was sanitised for the log already
    # and the HTTP status line is long gone.
    return [
        sse_event({"error": "stream ended", "code": code, "retryable": retryable}, event="error"),
        sse_event(DONE),
    ]


async def relay(
    upstream: AsyncIterator[Any],
    *,
    event: str,
    id_field: str,
    job_id: str,
    render: Callable[[Message], dict[str, Any]] = message_to_dict,
) -> AsyncIterator[ServerSentEvent]:
    """Turn an upstream `oneof event {<item>, end}` stream into SSE events.

    Items become `event: <event>` with `id: <item.id_field>`; `end` becomes `event: end` and
    `[DONE]`; an upstream failure becomes a sanitised `event: error` and `[DONE]`.
    """
    try:
        async for response in upstream:
            kind = response.WhichOneof("event")
            if kind == "end":
                end = response.end
                status = enum_name(common_pb2.JobStatus.DESCRIPTOR, end.status)
                yield sse_event({"job_id": end.job_id or job_id, "status": status}, event="end")
                yield sse_event(DONE)
                return
            if kind is None:
                continue
            item = getattr(response, kind)
            yield sse_event(render(item), event=event, id=str(getattr(item, id_field)))
        # The coordinator closed the stream without `end` (e.g. it is shutting down): the
        # client cannot know it has everything, so it is told to come back.
        logger.warning("upstream %s stream of %s closed without end", event, job_id)
        for e in _error_events("BACKEND_UNAVAILABLE", True):
            yield e
    except CoordinatorError as exc:
        for e in _error_events(exc.code, exc.retryable):
            yield e
    except Exception:
        logger.exception(
            "%s stream of %s failed", event, job_id, extra={"event": "scaimind_stream_error"}
        )
        for e in _error_events("INTERNAL_ERROR", False):
            yield e
    finally:
        # Closing the client's stream iterator cancels the gRPC call (its own `finally`).
        aclose = getattr(upstream, "aclose", None)
        if aclose is not None:
            await aclose()


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep=_SEP)


class EventStream(EventSourceResponse):
    """An SSE response that owns a stream slot and frees it however the stream ends."""

    def __init__(
        self, events: AsyncIterator[ServerSentEvent], *, heartbeat_s: float, slot: StreamSlot
    ) -> None:
        super().__init__(
            events,
            # sse-starlette defaults to no-store; the contract says no-cache. Its own
            # X-Accel-Buffering: no stays, and it refuses compression outright.
            headers={"Cache-Control": "no-cache"},
            ping=heartbeat_s,
            ping_message_factory=_ping,
            sep=_SEP,
        )
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()
