"""Delivery of new feed entries to every caught-up follower: direct ASGI writes, a slice per
loop pass (see `Dispatcher`)."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Coroutine, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from starlette.types import Send

from scaimind.gateway.streaming.framing import error_frames
from scaimind.gateway.streaming.limiter import ClientStalled

logger = logging.getLogger("scaimind.gateway.streaming")

# Follower writes per event-loop iteration (over all feeds) when feeds get new entries.
# Few, because each loop pass of the dispatcher delays every other ready callback (a unary
# request's next step) by one slice (measured with bench/streams.py: 16 and 64 were worse,
# 1 cost more in loop passes than it saved).
_FANOUT_SLICE: Final = 4
# The dispatcher writes for at most _FANOUT_RUN_S at a stretch, then rests _FANOUT_REST_S.
_FANOUT_RUN_S: Final = 0.001
_FANOUT_REST_S: Final = 0.001


@dataclass(slots=True)
class FeedItem:
    """One rendered log entry of a feed."""

    seq: int
    payload: bytes


class Feed(Protocol):
    """What the dispatcher reads of a feed (`feeds.LogFeed`)."""

    @property
    def final(self) -> list[bytes] | None:
        """The closing frames once the feed has ended."""
        ...

    @property
    def end_index(self) -> int:
        """Absolute index one past the newest entry."""
        ...

    def read(self, cursor: int) -> Sequence[FeedItem] | None:
        """Entries from an absolute cursor; None when they were already discarded."""
        ...


class Subscriber:
    """A caught-up follower of a feed: the hub's dispatcher writes to its stream directly."""

    __slots__ = ("blocked", "closed", "cursor", "done", "feed", "last", "queued", "send")

    def __init__(self, feed: Feed, send: Send, cursor: int, last: int) -> None:
        self.feed = feed
        self.send = send
        # Absolute feed index of the next entry to deliver, and the seq last sent.
        self.cursor = cursor
        self.last = last
        self.queued = False
        self.closed = False
        # A write that could not finish at once (the client reads slowly) and its rest.
        self.blocked: asyncio.Task[None] | None = None
        self.done: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()

    def finish(self, frames: list[bytes]) -> None:
        """End the direct phase: the stream sends `frames` itself and closes."""
        if not self.done.done():
            self.done.set_result(frames)

    def fail(self, exc: BaseException) -> None:
        """End the direct phase with an error raised in the stream."""
        if not self.done.done():
            self.done.set_exception(exc)

    def close(self) -> None:
        """The stream is gone: never write to it again."""
        self.closed = True
        if self.blocked is not None:
            self.blocked.cancel()


class _Resume:
    """Awaitable that drives a coroutine on from where a hand-made first step left it."""

    # `Dispatcher._write` (and the SSE heartbeat) runs the first step of an ASGI send itself;
    # only when that step suspends (the socket's buffer is full) does a task take over, by
    # awaiting this (through `finish_send`). The coroutine protocol is followed as a task
    # would: what the coroutine yields goes up to the task unchanged, what the task sends or
    # throws in goes down to the coroutine.

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, None], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self._coro, self._yielded
        while True:
            try:
                sent = yield value
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = coro.send(sent)
                except StopIteration:
                    return


async def finish_send(coro: Coroutine[Any, Any, None], yielded: Any, timeout_s: float) -> None:
    """Drive an ASGI send whose first step suspended (what it yielded: `yielded`) to its end,
    waiting `timeout_s` at most; ClientStalled after that."""
    try:
        async with asyncio.timeout(timeout_s):
            await _Resume(coro, yielded)
    except TimeoutError:
        raise ClientStalled() from None


class Dispatcher:
    """Delivers new feed entries to every subscriber of every feed, a slice per loop pass."""

    # One log line on a job watched by hundreds of browsers is hundreds of socket writes.
    # They are made here, in one task, by calling each stream's ASGI `send` directly: no task
    # switch, future or iterator step per follower and per line, which had cost more CPU than
    # the writes themselves (bench/streams.py). A send completes synchronously unless the
    # client's socket buffer is full; only then does it get a task of its own (bounded by
    # the send timeout), and that follower is skipped until it is done and then sent everything
    # that arrived meanwhile in one write. Slicing lets the loop poll its sockets between
    # slices, so a unary request waits for one slice at most, not a whole burst.
    #
    # A burst is also cut into runs of at most _FANOUT_RUN_S with rests of _FANOUT_REST_S in
    # between. One line to 1,000 followers is ~5 ms of writes, mostly kernel time; written in
    # one go it kept a core busy here and the clients' reads kept the other, so a unary call
    # (gateway, coordinator and caller all need a core) waited for the burst to end. Resting
    # leaves the loop and the cores free at short intervals. Cost: a burst takes about twice
    # as long, which shows in delivery lag (bench/streams.py, 1,000 streams: GET /jobs/{id}
    # p99 1.3-1.7x idle instead of 1.8-2.4x; lag p99 34-51 ms instead of 13-19 ms).

    def __init__(self, send_timeout_s: float) -> None:
        self._send_timeout_s = send_timeout_s
        self._queue: collections.deque[Subscriber] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        # The writes that could not finish at once, with their followers.
        self._writes: dict[asyncio.Task[None], Subscriber] = {}
        self._closed = False
        # Followers told to reconnect because the feed no longer held their next entry.
        self.lagging_dropped = 0

    def queue(self, sub: Subscriber) -> None:
        """Deliver to `sub` soon (no-op while it is queued, blocked or closed)."""
        if sub.queued or sub.closed or sub.blocked is not None:
            return
        if self._closed:
            # Shut down: no new task; a write that finished late delivers what is left now.
            self._deliver(sub)
            return
        sub.queued = True
        self._queue.append(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="scaimind-log-dispatcher")

    def queue_all(self, subs: Iterable[Subscriber]) -> None:
        """Deliver to each of `subs` soon."""
        for sub in subs:
            self.queue(sub)

    async def _run(self) -> None:
        queue = self._queue
        run_started = time.perf_counter()
        while queue:
            for _ in range(min(_FANOUT_SLICE, len(queue))):
                sub = queue.popleft()
                try:
                    self._deliver(sub)
                except Exception as exc:
                    # One broken stream must not stop delivery to all the others.
                    logger.error(
                        "log delivery failed",
                        exc_info=exc,
                        extra={"event": "scaimind_stream_error"},
                    )
                    sub.fail(exc)
            if time.perf_counter() - run_started < _FANOUT_RUN_S:
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(_FANOUT_REST_S)
                run_started = time.perf_counter()

    def _deliver(self, sub: Subscriber) -> None:
        sub.queued = False
        if sub.closed or sub.blocked is not None:
            return
        feed = sub.feed
        items = feed.read(sub.cursor)
        if items is None:
            # Too far behind the feed: reconnecting resumes from the last id it got.
            self.lagging_dropped += 1
            sub.finish(error_frames("RESOURCE_EXHAUSTED", True))
            return
        if items:
            sub.cursor += len(items)
            fresh = [item.payload for item in items if item.seq > sub.last]
            if fresh:
                sub.last = items[-1].seq
                # Everything pending in one write (one line, or all a slow client missed).
                self._write(sub, fresh[0] if len(fresh) == 1 else b"".join(fresh))
        if feed.final is not None and sub.cursor >= feed.end_index and sub.blocked is None:
            sub.finish(feed.final)

    def _write(self, sub: Subscriber, chunk: bytes) -> None:
        # ASGI servers and Starlette's send wrappers are `async def`: calling one makes a
        # coroutine, whose first step runs here.
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        try:
            coro = sub.send(message)
            yielded = coro.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return
        except Exception as exc:
            sub.fail(exc)
            return
        task = asyncio.create_task(self._finish_write(sub, coro, yielded))
        task.add_done_callback(functools.partial(self._write_done, coro))
        sub.blocked = task
        self._writes[task] = sub

    def _write_done(self, coro: Any, task: asyncio.Task[None]) -> None:
        self._writes.pop(task, None)
        # A write cancelled before its task began still holds the suspended send: end it.
        coro.close()

    @property
    def blocked(self) -> int:
        """Followers whose client's socket is full (a write of theirs is waiting)."""
        return len(self._writes)

    async def _finish_write(self, sub: Subscriber, coro: Any, yielded: Any) -> None:
        error: Exception | None = None
        try:
            await finish_send(coro, yielded, self._send_timeout_s)
        except Exception as exc:
            error = exc
        finally:
            # Cleared before anything below can start a new write for this follower.
            sub.blocked = None
        if error is not None:
            sub.fail(error)
        else:
            self.queue(sub)

    def close(self) -> None:
        """Shut down: deliver to everyone queued now, end the writes still waiting."""
        self._closed = True
        while self._queue:
            self._deliver(self._queue.popleft())
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for sub in list(self._writes.values()):
            sub.close()
            sub.fail(ConnectionAbortedError("the gateway is shutting down"))
