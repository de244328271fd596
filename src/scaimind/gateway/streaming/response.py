"""The SSE response: sse-starlette's EventSourceResponse with a stream slot, a send timeout and
the direct send the log feeds write to.

A stream is one coroutine: sse-starlette runs the relay, the heartbeat, the shutdown watch and
the disconnect listener in one task group, so a client that goes away cancels the relay, whose
`finally` closes the upstream iterator and with it the gRPC call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Receive, Scope, Send

from scaimind.gateway.streaming.feeds import DirectSend
from scaimind.gateway.streaming.limiter import ClientStalled, StreamSlot

logger = logging.getLogger("scaimind.gateway.streaming")


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep="\n")


class EventStream(EventSourceResponse):
    """An SSE response that owns a stream slot and frees it however the stream ends.

    Only sse-starlette's public surface is used (constructor arguments and the ASGI call), so
    any 2.1+ release works: the send timeout and the direct send are both set up here by
    wrapping the ASGI `send`, not by overriding the library's private methods.
    """

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        heartbeat_s: float,
        send_timeout_s: float,
        slot: StreamSlot,
        direct: DirectSend | None = None,
    ) -> None:
        super().__init__(
            events,
            # sse-starlette defaults to no-store; the contract says no-cache. Its own
            # X-Accel-Buffering: no stays, and it refuses compression outright.
            headers={"Cache-Control": "no-cache"},
            ping=heartbeat_s,
            ping_message_factory=_ping,
            sep="\n",
        )
        self._slot = slot
        self._direct = direct
        # A client that stops reading but keeps the socket open would otherwise hold its slot
        # and task forever once the socket buffer is full.
        self._send_timeout_s = send_timeout_s

    def _bounded(self, send: Send) -> Send:
        # asyncio's timeout is one timer handle per send (an anyio cancel scope cost nearly as
        # much as the socket write at thousands of events a second, profiled).
        async def bounded_send(message: Message) -> None:
            try:
                async with asyncio.timeout(self._send_timeout_s):
                    await send(message)
            except TimeoutError:
                raise ClientStalled() from None

        return bounded_send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._direct is not None:
            # Caught-up log followers are written to by the feed's dispatcher, which bounds
            # its writes itself.
            self._direct.send = send
        try:
            await super().__call__(scope, receive, self._bounded(send))
        except* ClientStalled:
            # Not a server fault: the client stopped reading. Returning closes the connection.
            self._slot.timed_out()
            # (uvicorn adds an error line: the response cannot be completed on a full socket.)
            logger.info(
                "closed a stream whose client read nothing for %g s",
                self._send_timeout_s,
                extra={"event": "scaimind_stream_send_timeout"},
            )
        finally:
            self._slot.release()
