"""Server-Sent Events machinery of the monitoring endpoints (docs/API.md, "Stream rules").

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
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Receive, Scope, Send

from scaimind.gateway.backend.client import CallContext, CoordinatorClient
from scaimind.gateway.backend.convert import enum_name, finite, message_to_dict
from scaimind.gateway.errors import CoordinatorError, RateLimited
from scaimind.settings import Settings
from scaimind.v1 import common_pb2, coordinator_pb2

logger = logging.getLogger("scaimind.gateway.streaming.streams")

_DONE_BYTES: Final = b"data: [DONE]\n\n"
# A tenant at its cap is told to come back after this long; streams are long-lived, so
# an immediate retry would almost surely be refused again.
STREAM_RETRY_AFTER_S: Final = 5
# Entries a feed keeps for followers that are behind; one that falls further behind is told
# to reconnect (it resumes with Last-Event-ID), so a stuck client cannot grow memory.
FEED_BACKLOG: Final = 5000
# Catch-up entries sent per write.
_CATCH_UP_BATCH: Final = 100
# Follower writes per event-loop iteration (over all feeds) when feeds get new entries.
# Few, because each loop pass of the dispatcher delays every other ready callback (a unary
# request's next step) by one slice (measured with bench/streams.py: 16 and 64 were worse,
# 1 cost more in loop passes than it saved).
_FANOUT_SLICE: Final = 4
# The dispatcher writes for at most _FANOUT_RUN_S at a stretch, then rests _FANOUT_REST_S.
_FANOUT_RUN_S: Final = 0.001
_FANOUT_REST_S: Final = 0.001


# --- per-tenant cap ---------------------------------------------------------------------------


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
            self._limiter._release(self.tenant_id)

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
        self.subscribers: set[Subscriber] = set()
        self.followers = 0
        self.task = asyncio.create_task(self._pump(), name=f"scaimind-log-feed-{key[1]}")

    @property
    def end_index(self) -> int:
        """Absolute index one past the newest entry."""
        return self._base + len(self._items)

    def read(self, cursor: int) -> list[_Item] | None:
        """Entries from an absolute cursor; None when they were already discarded."""
        if cursor < self._base:
            return None
        return self._items[cursor - self._base :]

    async def subscribe(self, send: Send, cursor: int, last: int) -> list[bytes]:
        """Deliver everything from `cursor` (entries after seq `last`) by direct writes to
        `send` until the feed ends; return the closing frames."""
        sub = Subscriber(self, send, cursor, last)
        self.subscribers.add(sub)
        try:
            # Whatever arrived during the caller's catch-up goes out at once.
            self._hub.dispatcher.queue(sub)
            return await sub.done
        finally:
            sub.close()
            self.subscribers.discard(sub)

    def _finish(self, frames: list[bytes]) -> None:
        self.final = frames
        self.positioned.set()
        self._hub._discard(self)
        self._hub.dispatcher.queue_all(self.subscribers)

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
                        self._hub.dispatcher.queue_all(self.subscribers)
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


class Subscriber:
    """A caught-up follower of a feed: the hub's dispatcher writes to its stream directly."""

    __slots__ = ("blocked", "closed", "cursor", "done", "feed", "last", "queued", "send")

    def __init__(self, feed: LogFeed, send: Send, cursor: int, last: int) -> None:
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

    # `Dispatcher._write` runs the first step of an ASGI send itself; only when that step
    # suspends (the socket's buffer is full) does a task take over, by awaiting this. The
    # coroutine protocol is followed as a task would: what the coroutine yields goes up to the
    # task unchanged, what the task sends or throws in goes down to the coroutine.

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
            async with asyncio.timeout(self._send_timeout_s):
                await _Resume(coro, yielded)
        except TimeoutError:
            error = ClientStalled()
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


class FeedHub:
    """The live log feeds of this process, created on demand and dropped when unused."""

    def __init__(self, send_timeout_s: float) -> None:
        self._feeds: dict[FeedKey, LogFeed] = {}
        self.dispatcher = Dispatcher(send_timeout_s)

    def feeds(self) -> int:
        """Feeds (upstream follow calls) open now."""
        return len(self._feeds)

    # The counts copy before iterating: a Prometheus exporter may call them from its own thread.

    def followers(self) -> int:
        """Followers of all open feeds."""
        return sum(feed.followers for feed in list(self._feeds.values()))

    def subscribed(self) -> int:
        """Followers past their catch-up, receiving the feeds' new entries."""
        return sum(len(feed.subscribers) for feed in list(self._feeds.values()))

    def blocked(self) -> int:
        """Followers whose client's socket is full (a write of theirs is waiting)."""
        return self.dispatcher.blocked

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
        self.dispatcher.close()


class DirectSend:
    """The ASGI `send` of a stream, for the feed to write to directly (bound by EventStream)."""

    __slots__ = ("send",)

    def __init__(self) -> None:
        self.send: Send | None = None


async def follow_logs(
    hub: FeedHub,
    client: CoordinatorClient,
    ctx: CallContext,
    req: coordinator_pb2.StreamJobLogsRequest,
    direct: DirectSend,
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
        if direct.send is None:
            raise RuntimeError("follow_logs needs the stream's send (EventStream binds it)")
        for b in await feed.subscribe(direct.send, cursor, last):
            yield b
    finally:
        hub.leave(feed)


# --- Prometheus -------------------------------------------------------------------------------


class StreamMetrics:
    """Scrape-time figures of the live streams of every started app in this process."""

    # One collector for the process, registered once: apps (several in one process when a host
    # mounts the module, or in tests) add their limiter and hub for their lifetime only.

    def __init__(self) -> None:
        self._parts: dict[int, tuple[StreamLimiter, FeedHub]] = {}

    def add(self, limiter: StreamLimiter, hub: FeedHub) -> Callable[[], None]:
        """Report these until the returned callable is called."""
        key = id(hub)
        self._parts[key] = (limiter, hub)

        def remove() -> None:
            self._parts.pop(key, None)

        return remove

    def collect(self) -> Iterator[Metric]:
        """The figures, summed over the apps."""
        parts = list(self._parts.values())
        figures = [
            (
                GaugeMetricFamily,
                "scaimind_sse_streams_open",
                "Open SSE streams (logs and metrics).",
                sum(limiter.open_streams() for limiter, _ in parts),
            ),
            (
                GaugeMetricFamily,
                "scaimind_log_feeds",
                "Shared upstream log follow calls.",
                sum(hub.feeds() for _, hub in parts),
            ),
            (
                GaugeMetricFamily,
                "scaimind_log_followers",
                "Following log streams.",
                sum(hub.followers() for _, hub in parts),
            ),
            (
                GaugeMetricFamily,
                "scaimind_log_followers_blocked",
                "Following log streams whose client's socket is full.",
                sum(hub.blocked() for _, hub in parts),
            ),
            (
                CounterMetricFamily,
                "scaimind_sse_send_timeouts",
                "Streams closed because their client read nothing for SSE_SEND_TIMEOUT_S.",
                sum(limiter.send_timeouts for limiter, _ in parts),
            ),
            (
                CounterMetricFamily,
                "scaimind_log_followers_lagging",
                "Log followers told to reconnect because they fell behind the feed's backlog.",
                sum(hub.dispatcher.lagging_dropped for _, hub in parts),
            ),
        ]
        for family, name, doc, value in figures:
            yield family(name, doc, value=value)


_stream_metrics: StreamMetrics | None = None


def stream_metrics() -> StreamMetrics:
    """The process's stream collector, registered with Prometheus on first use."""
    global _stream_metrics
    if _stream_metrics is None:
        _stream_metrics = StreamMetrics()
        REGISTRY.register(_stream_metrics)
    return _stream_metrics


# --- the response -----------------------------------------------------------------------------


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


@dataclass(eq=False)
class StreamResources:
    """This process's stream limiter and shared log feeds (each worker process has its own)."""

    limiter: StreamLimiter
    feeds: FeedHub


def open_streams(settings: Settings, stack: AsyncExitStack) -> StreamResources:
    """The per-tenant stream limiter and the shared log feeds, reported to Prometheus."""
    limiter = StreamLimiter(settings.stream_cap_per_tenant)
    hub = FeedHub(settings.sse_send_timeout_s)
    stack.push_async_callback(hub.close)
    stack.callback(stream_metrics().add(limiter, hub))
    return StreamResources(limiter=limiter, feeds=hub)
