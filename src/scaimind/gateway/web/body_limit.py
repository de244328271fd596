"""The request body limit: pure ASGI, in front of routing, parsing and authentication.

A body larger than `SCAIMIND_MAX_BODY_BYTES` is answered 413 `PAYLOAD_TOO_LARGE` without being
read: a declared `Content-Length` over the limit is refused at once, and a chunked body is cut
as soon as what arrived passes the limit. Anyone can send a body before authenticating, so the
limit comes before the bearer check; otherwise an unauthenticated 60 MB body was parsed (and
held in memory, more than once) only to be answered 401.
"""

from __future__ import annotations

import asyncio
import json
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scaimind.gateway.errors import PayloadTooLarge
from scaimind.gateway.web.envelope import error_body, new_request_id

_CONTENT_LENGTH: Final = b"content-length"
_TRANSFER_ENCODING: Final = b"transfer-encoding"
# Versions whose request bodies are framed by Content-Length / Transfer-Encoding (HTTP/2's are
# not: a body may come without either, so those are always counted).
_FRAMED_BY_HEADERS: Final = frozenset({"1.0", "1.1"})
# A client that sends its whole body before reading the answer (httpx, requests) would see the
# connection reset instead of the 413 if the server closed with unread data pending. So the
# rest of a body up to this many times the limit is read and dropped (memory stays flat)
# between the 413's headers and its body, for at most _DRAIN_S; anything larger is cut off.
DRAIN_FACTOR: Final = 8
_DRAIN_S: Final = 5.0


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` under `prefix` with the error envelope (413)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, prefix: str = "") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        declared, chunked = _framing(scope)
        if declared is not None and declared > self.max_bytes:
            drain = declared <= self.max_bytes * DRAIN_FACTOR
            await self._refuse(scope, send, receive if drain else None)
            return
        if not chunked and scope.get("http_version") in _FRAMED_BY_HEADERS:
            # HTTP/1.x: without Transfer-Encoding the server reads exactly Content-Length bytes
            # (checked above) or none, so there is nothing to count: no wrapping per request.
            await self.app(scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise PayloadTooLarge(self._message())
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Whatever the app makes of this (FastAPI turns a failed body read into a
                    # 400), the response becomes the 413 below, and nothing more is read.
                    exceeded = True
                    raise PayloadTooLarge(self._message())
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, refused
            if refused:
                return
            if exceeded and not started:
                # What the app answers instead becomes the 413 (its own body is dropped).
                if message["type"] == "http.response.start":
                    started = refused = True
                    await self._refuse(scope, send, receive, received)
                return
            # A response already under way (a stream) finishes as the app ends it.
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except PayloadTooLarge:
            if started:
                raise
            await self._refuse(scope, send, receive, received)

    def _message(self) -> str:
        return (
            f"request body too large: at most {self.max_bytes} bytes are accepted "
            "(SCAIMIND_MAX_BODY_BYTES)"
        )

    async def _refuse(
        self, scope: Scope, send: Send, receive: Receive | None = None, received: int = 0
    ) -> None:
        """Send the 413; with `receive`, drop the rest of a moderately large body meanwhile."""
        request_id = scope.get("state", {}).get("request_id") or new_request_id()
        body = json.dumps(
            error_body(request_id, PayloadTooLarge.code, self._message()),
            separators=(",", ":"),
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": PayloadTooLarge.status_code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The unread rest of the body must not be taken for the next request.
                    (b"connection", b"close"),
                ],
            }
        )
        if receive is not None:
            await _drain(receive, self.max_bytes * DRAIN_FACTOR - received)
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop request body chunks until the body ends, `budget` bytes or _DRAIN_S."""
    try:
        async with asyncio.timeout(_DRAIN_S):
            while budget > 0:
                message = await receive()
                if message["type"] != "http.request":
                    return
                budget -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length (None: none or unreadable) and whether Transfer-Encoding
    is present (a body of unknown length)."""
    declared: int | None = None
    chunked = unreadable = False
    for key, value in scope.get("headers", ()):
        if key == _CONTENT_LENGTH:
            try:
                declared = int(value)
            except ValueError:
                unreadable = True
        elif key == _TRANSFER_ENCODING:
            chunked = True
    # An unreadable length is counted as it arrives, like a chunked body.
    return declared, chunked or unreadable
