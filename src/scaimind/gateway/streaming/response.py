"""The SSE response: one relay per stream, run by the request's own task.

Thousands of followers stay open at once, so what a stream holds while it waits matters more
than what it costs per event. A stream here is the request task relaying its events, one task
listening for the client's disconnect, and a timer handle for the heartbeat. (sse-starlette's
response, used before, ran four tasks in an anyio task group per stream: 54 KiB of gateway
memory per open stream in bench/streams.py, ten of them anyio's.)

How a stream ends:
- its events end (the relay sends the closing frames it was given, then ends the body);
- the client goes away: the listener cancels the relay, whose `finally` closes the upstream
  iterator and with it the gRPC call;
- the client stops reading: a write waits `send_timeout_s` at most, then the stream closes
  (on a quiet stream the heartbeat is that write);
- the server shuts down: `StreamLimiter.end_all` stops every stream with a retryable error;
- it has been open `max_stream_s`: it ends with the same retryable error, and the client
  resumes (a bound on what a stream whose disconnect goes unseen can hold);
- the client sends a request body over the limit (the 200 is out, so no 413): it ends with a
  `PAYLOAD_TOO_LARGE` error that is not retryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, Literal

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from scaimind.gateway.errors import PayloadTooLarge
from scaimind.gateway.streaming.fanout import finish_send
from scaimind.gateway.streaming.feeds import DirectSend
from scaimind.gateway.streaming.framing import aclose, error_frames
from scaimind.gateway.streaming.limiter import ClientStalled, StreamSlot

logger = logging.getLogger("scaimind.gateway.streaming")

_PING: Final = b": ping\n\n"
# The farewell at shutdown waits this long at most: a stalled client must not hold it up.
_FAREWELL_TIMEOUT_S: Final = 1.0
_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    # nginx and friends must not buffer a stream.
    "X-Accel-Buffering": "no",
}


_Ending = Literal["disconnect", "stalled", "shutdown", "expired", "refused"]
# The in-band error of the endings that still write one: (code, retryable). Shutdown and expiry
# are retryable (the client resumes with Last-Event-ID, on the next server); a body over the
# limit is the client's own fault.
_FAREWELLS: Final[Mapping[_Ending, tuple[str, bool]]] = {
    "shutdown": ("BACKEND_UNAVAILABLE", True),
    "expired": ("BACKEND_UNAVAILABLE", True),
    "refused": (PayloadTooLarge.code, False),
}


def _body(chunk: bytes, *, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


class EventStream(Response):
    """A `text/event-stream` response that owns a stream slot and frees it however it ends."""

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        heartbeat_s: float,
        send_timeout_s: float,
        max_stream_s: float,
        slot: StreamSlot,
        direct: DirectSend | None = None,
    ) -> None:
        # Not Response.__init__: a stream has no body to measure (no Content-Length).
        self.status_code = 200
        self.background = None
        self.init_headers(_HEADERS)
        self._events = events
        self._heartbeat_s = heartbeat_s
        # A client that stops reading but keeps the socket open would otherwise hold its slot
        # and task forever once the socket buffer is full.
        self._send_timeout_s = send_timeout_s
        self._max_stream_s = max_stream_s
        self._slot = slot
        self._direct = direct
        self._ending: _Ending | None = None
        self._task: asyncio.Task[Any] | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        # A heartbeat that found the socket full and waits for it (at most one at a time).
        self._waiting_ping: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await self._bounded(send, start)
            await self._stream(receive, send)
        except ClientStalled:
            # Not a server fault: the client stopped reading. Returning closes the connection.
            self._slot.timed_out()
            logger.info(
                "closed a stream whose client read nothing for %g s",
                self._send_timeout_s,
                extra={"event": "scaimind_stream_send_timeout"},
            )
        finally:
            self._slot.release()
            await aclose(self._events)

    async def _stream(self, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        if self._direct is not None:
            # Caught-up log followers are written to by the feed's dispatcher, which bounds
            # its writes itself.
            self._direct.send = send
        loop = asyncio.get_running_loop()
        listener = loop.create_task(self._listen(receive))
        self._heartbeat = loop.call_later(self._heartbeat_s, self._ping, send)
        expiry = loop.call_later(self._max_stream_s, self._end, "expired")
        self._slot.stop = self._stop_for_shutdown
        relayed = False
        try:
            async for chunk in self._events:
                await self._bounded(send, _body(chunk))
            relayed = True
            await self._bounded(send, _body(b"", more=False))
        except asyncio.CancelledError:
            # Ours (the client left, stalled, the server is stopping, time is up), so this
            # task goes on, unless someone else cancelled it too.
            if self._ending is None or task.uncancel() > 0:
                raise
        finally:
            # Before any await: from here on nothing may cancel this task in our name.
            self._slot.stop = None
            listener.cancel()
            self._heartbeat.cancel()
            expiry.cancel()
            if self._waiting_ping is not None:
                self._waiting_ping.cancel()
        if self._ending == "stalled":
            raise ClientStalled()
        farewell = _FAREWELLS.get(self._ending) if self._ending else None
        if farewell is not None:
            # Once the events were all sent (closing frames included) only the body's end is
            # left.
            closing = b"" if relayed else b"".join(error_frames(*farewell))
            # Only a shutdown is in a hurry; an expired stream's client gets the usual bound.
            bound = _FAREWELL_TIMEOUT_S if self._ending == "shutdown" else None
            with contextlib.suppress(ClientStalled):
                await self._bounded(send, _body(closing, more=False), bound)

    async def _listen(self, receive: Receive) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except PayloadTooLarge:  # the body limit stopped reading what the client kept sending
            self._end("refused")
            return
        except Exception:  # a receive that fails: the connection is unusable
            pass
        self._end("disconnect")

    def _stop_for_shutdown(self) -> None:
        self._end("shutdown")

    def _end(self, why: _Ending) -> None:
        if self._ending is None and self._task is not None:
            self._ending = why
            self._task.cancel()

    def _ping(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        self._heartbeat = loop.call_later(self._heartbeat_s, self._ping, send)
        if self._waiting_ping is not None:
            return
        # Written here, not by a task: the first step of an ASGI send completes at once unless
        # the socket's buffer is full.
        coro = send(_body(_PING))
        try:
            yielded = coro.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return
        except Exception:
            # The connection is unusable (uvloop: its transport is closed). The listener may
            # never hear of it (a request pipelined behind the stream takes the disconnect),
            # and on a quiet stream no relay write would find out either.
            self._end("disconnect")
            return
        # The buffer is full. A relay write would wait send_timeout_s at most; on a stream
        # that has gone quiet there is none, so this ping waits in its place, bounded the same
        # way (a task only for a stream in this state).
        self._waiting_ping = loop.create_task(self._finish_ping(coro, yielded))
        # Cancelled before it began (the stream ended), it still holds the suspended send.
        self._waiting_ping.add_done_callback(lambda _: coro.close())  # type: ignore[attr-defined]

    async def _finish_ping(self, coro: Any, yielded: Any) -> None:
        try:
            await finish_send(coro, yielded, self._send_timeout_s)
        except ClientStalled:
            self._end("stalled")
        except Exception:  # unusable, as in _ping
            self._end("disconnect")
        finally:
            self._waiting_ping = None

    async def _bounded(self, send: Send, message: Message, timeout_s: float | None = None) -> None:
        # asyncio's timeout is one timer handle per send (an anyio cancel scope cost nearly as
        # much as the socket write at thousands of events a second, profiled).
        try:
            async with asyncio.timeout(timeout_s or self._send_timeout_s):
                await send(message)
        except TimeoutError:
            raise ClientStalled() from None
