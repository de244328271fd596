"""The request body limit: pure ASGI, in front of routing, parsing and authentication.

A body larger than `SCAIMIND_MAX_BODY_BYTES` is answered 413 `PAYLOAD_TOO_LARGE` without being
read: a declared `Content-Length` over the limit is refused at once, and a chunked body is cut
as soon as what arrived passes the limit. Anyone can send a body before authenticating, so the
limit comes before the bearer check; otherwise an unauthenticated 60 MB body was parsed (and
held in memory, more than once) only to be answered 401.
"""

from __future__ import annotations

import json
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scaimind.errors import PayloadTooLarge, error_body, new_request_id

_CONTENT_LENGTH: Final = b"content-length"


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
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return

        received = 0
        exceeded = False
        started = False

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
            nonlocal started
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(scope, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except PayloadTooLarge:
            if started:
                raise
            await self._refuse(scope, send)

    def _message(self) -> str:
        return (
            f"request body too large: at most {self.max_bytes} bytes are accepted "
            "(SCAIMIND_MAX_BODY_BYTES)"
        )

    async def _refuse(self, scope: Scope, send: Send) -> None:
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
        await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == _CONTENT_LENGTH:
            try:
                return int(value)
            except ValueError:
                return None
    return None
