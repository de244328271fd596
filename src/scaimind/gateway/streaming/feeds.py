"""Shared log feeds (docs/API.md, "Stream rules").

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
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from starlette.types import Send

from scaimind.gateway.backend.client import CallContext, CoordinatorClient
from scaimind.gateway.streaming.fanout import Dispatcher, FeedItem, Subscriber
from scaimind.gateway.streaming.framing import (
    aclose,
    end_frames,
    error_frames,
    failure_frames,
    render_log,
    unended_frames,
)
from scaimind.v1 import common_pb2, coordinator_pb2

# Entries a feed keeps for followers that are behind; one that falls further behind is told
# to reconnect (it resumes with Last-Event-ID), so a stuck client cannot grow memory.
FEED_BACKLOG: Final = 5000
# Catch-up entries sent per write.
_CATCH_UP_BATCH: Final = 100


FeedKey = tuple[str, str, int]  # tenant, job, min level


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
        self._items: list[FeedItem] = []
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

    def read(self, cursor: int) -> list[FeedItem] | None:
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

    def finish(self, frames: list[bytes]) -> None:
        """End the feed with `frames`; every follower gets them after what it has not yet had."""
        self.final = frames
        self.positioned.set()
        self._hub.forget(self)
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
                        self.finish(end_frames(response.end, job_id))
                        return
                self.finish(unended_frames(f"log feed of {job_id}"))
            finally:
                await aclose(upstream)
        except Exception as exc:
            self.finish(failure_frames(exc, f"log feed of {job_id}"))

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
            await aclose(upstream)
        return last

    def _append(self, entry: coordinator_pb2.LogEntry) -> None:
        self._items.append(FeedItem(entry.seq, render_log(entry)))
        if len(self._items) > 2 * FEED_BACKLOG:
            drop = len(self._items) - FEED_BACKLOG
            del self._items[:drop]
            self._base += drop


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
            self.forget(feed)
            feed.task.cancel()

    def forget(self, feed: LogFeed) -> None:
        """Drop `feed` from the open feeds (it ended or lost its last follower)."""
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]

    async def close(self) -> None:
        """Cancel every feed (shutdown); their followers end with a retryable error."""
        feeds = list(self._feeds.values())
        self._feeds.clear()
        for feed in feeds:
            feed.task.cancel()
            if feed.final is None:
                feed.finish(error_frames("BACKEND_UNAVAILABLE", True))
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
                    yield b"".join(unended_frames(f"catch-up of {req.job_id}"))
                    return
            except Exception as exc:
                yield b"".join(failure_frames(exc, f"catch-up of {req.job_id}"))
                return
            finally:
                await aclose(upstream)
        if direct.send is None:
            raise RuntimeError("follow_logs needs the stream's send (EventStream binds it)")
        yield b"".join(await feed.subscribe(direct.send, cursor, last))
    finally:
        hub.leave(feed)
