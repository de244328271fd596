"""SSE framing: events rendered once as bytes, the closing frames, and the relay of one
upstream `oneof event {<item>, end}` stream (the metrics stream and non-following logs)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from scaimind.gateway.backend.convert import enum_name, finite, message_to_dict
from scaimind.gateway.errors import CoordinatorError
from scaimind.v1 import common_pb2, coordinator_pb2

logger = logging.getLogger("scaimind.gateway.streaming")

_DONE_BYTES: Final = b"data: [DONE]\n\n"


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def frame(data: Any, *, event: str | None = None, id: str | int | None = None) -> bytes:
    """One SSE event, JSON-encoded data; compact JSON never contains a line break."""
    head = ""
    if id is not None:
        head += f"id: {id}\n"
    if event is not None:
        head += f"event: {event}\n"
    return f"{head}data: {_json(data)}\n\n".encode()


def error_frames(code: str, retryable: bool) -> list[bytes]:
    """The sanitised in-band error and the final [DONE]."""
    # Only the code goes out: the message was sanitised for the log already and the HTTP
    # status line is long gone.
    return [
        frame({"error": "stream ended", "code": code, "retryable": retryable}, event="error"),
        _DONE_BYTES,
    ]


def end_frames(end: coordinator_pb2.StreamEnd, job_id: str) -> list[bytes]:
    """`event: end` with the final status, and [DONE]."""
    status = enum_name(common_pb2.JobStatus.DESCRIPTOR, end.status)
    return [frame({"job_id": end.job_id or job_id, "status": status}, event="end"), _DONE_BYTES]


def render_log(entry: coordinator_pb2.LogEntry) -> bytes:
    """`event: log` with `id: <seq>`."""
    return frame(message_to_dict(entry), event="log", id=entry.seq)


def render_snapshot(snapshot: coordinator_pb2.MetricsSnapshot) -> bytes:
    """`event: metrics` with `id: <step>`."""
    return frame(finite(message_to_dict(snapshot)), event="metrics", id=snapshot.step)


def failure_frames(exc: BaseException, what: str) -> list[bytes]:
    if isinstance(exc, CoordinatorError):
        return error_frames(exc.code, exc.retryable)
    logger.error("%s failed", what, exc_info=exc, extra={"event": "scaimind_stream_error"})
    return error_frames("INTERNAL_ERROR", False)


# The coordinator closed a stream without `end` (e.g. it is shutting down): the client cannot
# know it has everything, so it is told to come back.
def unended_frames(what: str) -> list[bytes]:
    logger.warning("upstream %s closed without end", what)
    return error_frames("BACKEND_UNAVAILABLE", True)


async def relay(
    upstream: AsyncIterator[Any],
    *,
    job_id: str,
    render: Callable[[Any], bytes],
) -> AsyncIterator[bytes]:
    """Relay one upstream `oneof event {<item>, end}` stream as SSE events."""
    try:
        async for response in upstream:
            kind = response.WhichOneof("event")
            if kind == "end":
                yield b"".join(end_frames(response.end, job_id))
                return
            if kind is not None:
                yield render(getattr(response, kind))
        yield b"".join(unended_frames(f"stream of {job_id}"))
    except Exception as exc:
        yield b"".join(failure_frames(exc, f"stream of {job_id}"))
    finally:
        # Closing the client's stream iterator cancels the gRPC call (its own `finally`).
        await aclose(upstream)


async def aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
