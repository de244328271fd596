"""Server-Sent Events machinery of the monitoring endpoints (API.md §5.2 stream rules).

A stream is one coroutine: sse-starlette's `EventSourceResponse` runs the relay, the heartbeat,
the shutdown watch and the disconnect listener in one task group, so a client that goes away
cancels the relay, whose `finally` closes the upstream iterator and with it the gRPC call.

Following log streams share their upstream: every follower of one (tenant, job, level) reads
from one `LogFeed`, a single StreamJobLogs call whose entries are rendered once. Without that,
N browsers on a busy job cost the coordinator N database reads and the gateway N gRPC reads and
N JSON encodings per log line. A follower first registers with the feed, then fetches its own
tail or resume point with a finite (follow=false) call, then continues from the feed, skipping
what it already sent by `seq`; the feed is positioned before any catch-up starts, so the two
overlap and nothing falls between them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from scaimind.client import CallContext, CoordinatorClient
from scaimind.convert import enum_name, message_to_dict
from scaimind.errors import CoordinatorError, RateLimited
from scaimind.v1 import common_pb2, coordinator_pb2

logger = logging.getLogger("scaimind.streams")

DONE: Final = "[DONE]"
_DONE_BYTES: Final = b"data: [DONE]\n\n"
# A tenant at its cap is told to come back after this long; streams are long-lived, so
# an immediate retry would almost surely be refused again.
STREAM_RETRY_AFTER_S: Final = 5
# Entries a feed keeps for followers that are behind; one that falls further behind is told
# to reconnect (it resumes with Last-Event-ID), so a stuck client cannot grow memory.
FEED_BACKLOG: Final = 5000
SEND_TIMEOUT_S: Final = 30.0
# Catch-up entries sent per write.
_CATCH_UP_BATCH: Final = 100
# Followers woken per event-loop iteration (over all feeds) when feeds get new entries.
_WAKE_SLICE: Final = 10


# --- per-tenant cap ---------------------------------------------------------------------------


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


# --- framing ----------------------------------------------------------------------------------


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


def _failure_frames(exc: BaseException, what: str) -> list[bytes]:
    if isinstance(exc, CoordinatorError):
        return error_frames(exc.code, exc.retryable)
    logger.error("%s failed", what, exc_info=exc, extra={"event": "scaimind_stream_error"})
    return error_frames("INTERNAL_ERROR", False)


# The coordinator closed a stream without `end` (e.g. it is shutting down): the client cannot
# know it has everything, so it is told to come back.
def _unended_frames(what: str) -> list[bytes]:
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
                for b in end_frames(response.end, job_id):
                    yield b
                return
            if kind is not None:
                yield render(getattr(response, kind))
        for b in _unended_frames(f"stream of {job_id}"):
            yield b
    except Exception as exc:
        for b in _failure_frames(exc, f"stream of {job_id}"):
            yield b
    finally:
        # Closing the client's stream iterator cancels the gRPC call (its own `finally`).
        await _aclose(upstream)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


# --- shared log feeds -------------------------------------------------------------------------


FeedKey = tuple[str, str, int]  # tenant, job, min level


@dataclass(slots=True)
class _Item:
    seq: int
    payload: bytes


class LogFeed:
    """One following StreamJobLogs call of a (tenant, job, level), read by many followers."""

    def __init__(
        self,
        hub: FeedHub,
        key: FeedKey,
        client: CoordinatorClient,
        ctx: CallContext,
    ) -> None:
        self._hub = hub
        self.key = key
        self._client = client
        self._ctx = ctx
        self._items: list[_Item] = []
        # Absolute index of _items[0]; followers keep absolute cursors.
        self._base = 0
        self.final: list[bytes] | None = None
        # Set once the feed knows where it starts; catch-ups begin only after that.
        self.positioned = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self.followers = 0
        self.task = asyncio.create_task(self._pump(), name=f"scaimind-log-feed-{key[1]}")

    @property
    def end_index(self) -> int:
        """Absolute index one past the newest entry."""
        return self._base + len(self._items)

    def changed(self) -> asyncio.Future[None]:
        """A future resolved on the next append or on the end (take it before reading)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    def read(self, cursor: int) -> list[_Item] | None:
        """Entries from an absolute cursor; None when they were already discarded."""
        if cursor < self._base:
            return None
        return self._items[cursor - self._base :]

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _finish(self, frames: list[bytes]) -> None:
        self.final = frames
        self.positioned.set()
        self._hub._discard(self)
        self._wake()

    async def _pump(self) -> None:
        job_id, min_level = self.key[1], self.key[2]
        try:
            start = await self._last_seq(job_id)
            self.positioned.set()
            req = coordinator_pb2.StreamJobLogsRequest(
                job_id=job_id,
                follow=True,
                min_level=min_level,  # type: ignore[arg-type]
                after_seq=start,
            )
            upstream = self._client.stream_job_logs(req, self._ctx)
            try:
                async for response in upstream:
                    kind = response.WhichOneof("event")
                    if kind == "entry":
                        self._append(response.entry)
                        waiters, self._waiters = self._waiters, []
                        self._hub.waker.add(waiters)
                    elif kind == "end":
                        self._finish(end_frames(response.end, job_id))
                        return
                self._finish(_unended_frames(f"log feed of {job_id}"))
            finally:
                await _aclose(upstream)
        except Exception as exc:
            self._finish(_failure_frames(exc, f"log feed of {job_id}"))

    async def _last_seq(self, job_id: str) -> int:
        # The newest entry of any level marks where the feed starts: everything after it
        # comes through the feed, everything up to it through each follower's catch-up.
        req = coordinator_pb2.StreamJobLogsRequest(
            job_id=job_id, follow=False, min_level=common_pb2.LOG_LEVEL_DEBUG, tail=1
        )
        last = 0
        upstream = self._client.stream_job_logs(req, self._ctx)
        try:
            async for response in upstream:
                if response.WhichOneof("event") == "entry":
                    last = response.entry.seq
        finally:
            await _aclose(upstream)
        return last

    def _append(self, entry: coordinator_pb2.LogEntry) -> None:
        self._items.append(_Item(entry.seq, render_log(entry)))
        if len(self._items) > 2 * FEED_BACKLOG:
            drop = len(self._items) - FEED_BACKLOG
            del self._items[:drop]
            self._base += drop


class Waker:
    """Wakes the followers of every feed a few per event-loop iteration, oldest first."""

    # Waking all followers of a new entry at once would run them back to back (each one a
    # socket write), and a unary request arriving meanwhile would wait for the whole burst
    # at each of its steps. Woken a slice at a time, the loop polls its sockets between
    # slices, so a request waits for one slice at most; a follower woken late sends every
    # entry that arrived meanwhile in one write.

    def __init__(self) -> None:
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    def add(self, waiters: list[asyncio.Future[None]]) -> None:
        """Queue these followers for waking."""
        if not waiters:
            return
        self._queue.extend(waiters)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="scaimind-log-feed-waker")

    async def _run(self) -> None:
        queue = self._queue
        try:
            while queue:
                for _ in range(min(_WAKE_SLICE, len(queue))):
                    fut = queue.popleft()
                    if not fut.done():
                        fut.set_result(None)
                await asyncio.sleep(0)
        finally:
            # Cancelled half-way (shutdown): nobody may be left waiting.
            self._flush()

    def _flush(self) -> None:
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(None)

    async def close(self) -> None:
        """Stop pacing and wake everyone still queued."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._flush()


class FeedHub:
    """The live log feeds of this process, created on demand and dropped when unused."""

    def __init__(self) -> None:
        self._feeds: dict[FeedKey, LogFeed] = {}
        self.waker = Waker()

    def feeds(self) -> int:
        """Feeds (upstream follow calls) open now."""
        return len(self._feeds)

    def followers(self) -> int:
        """Followers of all open feeds."""
        return sum(feed.followers for feed in self._feeds.values())

    def join(self, key: FeedKey, client: CoordinatorClient, ctx: CallContext) -> LogFeed:
        """The feed of `key` (started with this caller's context if new), one follower more."""
        feed = self._feeds.get(key)
        if feed is None:
            feed = LogFeed(self, key, client, ctx)
            self._feeds[key] = feed
        feed.followers += 1
        return feed

    def leave(self, feed: LogFeed) -> None:
        """One follower less; the last one out cancels the upstream call."""
        feed.followers -= 1
        if feed.followers <= 0:
            self._discard(feed)
            feed.task.cancel()

    def _discard(self, feed: LogFeed) -> None:
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]

    async def close(self) -> None:
        """Cancel every feed (shutdown); their followers end with a retryable error."""
        feeds = list(self._feeds.values())
        self._feeds.clear()
        for feed in feeds:
            feed.task.cancel()
            if feed.final is None:
                feed._finish(error_frames("BACKEND_UNAVAILABLE", True))
        for feed in feeds:
            with contextlib.suppress(asyncio.CancelledError):
                await feed.task
        await self.waker.close()


async def follow_logs(
    hub: FeedHub,
    client: CoordinatorClient,
    ctx: CallContext,
    req: coordinator_pb2.StreamJobLogsRequest,
) -> AsyncIterator[bytes]:
    """A following log stream: own catch-up (tail or resume), then the shared feed."""
    feed = hub.join((ctx.tenant_id, req.job_id, req.min_level), client, ctx)
    try:
        cursor = feed.end_index
        await feed.positioned.wait()
        resuming = req.HasField("after_seq")
        last = req.after_seq if resuming else -1
        # tail=0 means "from now on": the feed alone has that, no catch-up call needed.
        if resuming or req.tail:
            catch_up = coordinator_pb2.StreamJobLogsRequest()
            catch_up.CopyFrom(req)
            catch_up.follow = False
            upstream = client.stream_job_logs(catch_up, ctx)
            try:
                ended = False
                batch: list[bytes] = []
                async for response in upstream:
                    kind = response.WhichOneof("event")
                    if kind == "entry" and response.entry.seq > last:
                        batch.append(render_log(response.entry))
                        last = response.entry.seq
                        if len(batch) >= _CATCH_UP_BATCH:
                            yield b"".join(batch)
                            batch = []
                    elif kind == "end":
                        ended = True
                if batch:
                    yield b"".join(batch)
                if not ended:
                    for b in _unended_frames(f"catch-up of {req.job_id}"):
                        yield b
                    return
            except Exception as exc:
                for b in _failure_frames(exc, f"catch-up of {req.job_id}"):
                    yield b
                return
            finally:
                await _aclose(upstream)
        while True:
            changed = feed.changed()
            items = feed.read(cursor)
            if items is None:
                # Too far behind the feed: reconnecting resumes from our last id.
                for b in error_frames("RESOURCE_EXHAUSTED", True):
                    yield b
                return
            cursor += len(items)
            fresh = [item for item in items if item.seq > last]
            if fresh:
                last = fresh[-1].seq
                # One write for everything pending: a follower that fell behind (a busy
                # loop, a slow client) catches up with one syscall instead of one per line.
                yield b"".join(item.payload for item in fresh)
            if feed.final is not None and cursor >= feed.end_index:
                for b in feed.final:
                    yield b
                return
            await changed
    finally:
        hub.leave(feed)


# --- the response -----------------------------------------------------------------------------


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep="\n")


class EventStream(EventSourceResponse):
    """An SSE response that owns a stream slot and frees it however the stream ends."""

    def __init__(
        self, events: AsyncIterator[bytes], *, heartbeat_s: float, slot: StreamSlot
    ) -> None:
        super().__init__(
            events,
            # sse-starlette defaults to no-store; the contract says no-cache. Its own
            # X-Accel-Buffering: no stays, and it refuses compression outright.
            headers={"Cache-Control": "no-cache"},
            ping=heartbeat_s,
            ping_message_factory=_ping,
            sep="\n",
            # A client that stops reading but keeps the socket open would otherwise hold its
            # slot and task forever once the socket buffer is full.
            send_timeout=SEND_TIMEOUT_S,
        )
        self._slot = slot

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        # sse-starlette bounds every send with an anyio cancel scope, which costs nearly as
        # much as the socket write itself at thousands of events a second (profiled);
        # asyncio's own timeout is one timer handle. Same contract: a send stuck that long
        # raises SendTimeoutError.
        if self.send_timeout is None:
            await send(message)
            return
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            raise SendTimeoutError() from None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()
