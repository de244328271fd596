"""The log dispatcher's slow path: an ASGI send that waits until the test lets it finish.

The real-server tests (test_sse_scripted.py) cover stalled clients end to end; uvicorn resumes a
blocked send by itself when its client disconnects, so the cancellation of a waiting write and
the shutdown of the dispatcher are driven here with a send the test controls.
"""

from __future__ import annotations

import asyncio
from typing import Any

from scaimind.gateway.streaming.fanout import Dispatcher, FeedItem, Subscriber
from scaimind.gateway.streaming.limiter import ClientStalled
from tests.conftest import wait_for


class Feed:
    """The part of a LogFeed the dispatcher reads."""

    def __init__(self, *payloads: bytes) -> None:
        self.items = [FeedItem(seq, payload) for seq, payload in enumerate(payloads, 1)]
        self.final: list[bytes] | None = None

    @property
    def end_index(self) -> int:
        return len(self.items)

    def read(self, cursor: int) -> list[FeedItem]:
        return self.items[cursor:]

    def append(self, payload: bytes) -> None:
        self.items.append(FeedItem(len(self.items) + 1, payload))


class GatedSend:
    """An ASGI send whose writes wait for `gate` (a client whose socket is full)."""

    def __init__(self) -> None:
        self.gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.written: list[bytes] = []
        self.ended: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        try:
            if not self.gate.done():
                await self.gate
            self.written.append(message["body"])
        finally:
            self.ended.append(message["body"])


def follower(feed: Feed, send: Any) -> Subscriber:
    return Subscriber(feed, send, cursor=0, last=0)  # type: ignore[arg-type]


async def waiting_follower(dispatcher: Dispatcher, feed: Feed) -> tuple[Subscriber, GatedSend]:
    """A follower whose first write is waiting for its gate."""
    send = GatedSend()
    sub = follower(feed, send)
    dispatcher.queue(sub)
    await wait_for(lambda: dispatcher.blocked == 1, within=5)
    return sub, send


async def outcome(sub: Subscriber) -> Any:
    """What the follower's direct phase ended with (frames or the exception)."""
    (result,) = await asyncio.wait_for(asyncio.gather(sub.done, return_exceptions=True), 5)
    return result


async def test_a_waiting_write_finishes_and_what_came_meanwhile_follows_in_one_write() -> None:
    dispatcher, feed = Dispatcher(send_timeout_s=30), Feed(b"a")
    sub, send = await waiting_follower(dispatcher, feed)
    feed.append(b"b")
    feed.append(b"c")
    dispatcher.queue(sub)  # no-op while its write waits
    send.gate.set_result(None)
    await wait_for(lambda: send.written == [b"a", b"bc"], within=5)
    assert dispatcher.blocked == 0
    feed.final = [b"end"]
    dispatcher.queue(sub)
    assert await outcome(sub) == [b"end"]


async def test_a_waiting_write_ends_with_its_follower() -> None:
    dispatcher = Dispatcher(send_timeout_s=30)
    sub, send = await waiting_follower(dispatcher, Feed(b"a"))
    sub.close()  # the stream went away
    await wait_for(lambda: dispatcher.blocked == 0, within=5)
    assert send.ended == [b"a"]
    assert send.written == []


async def test_a_write_that_waits_too_long_fails_its_follower_only() -> None:
    dispatcher = Dispatcher(send_timeout_s=0.2)
    stuck, fine = GatedSend(), GatedSend()
    fine.gate.set_result(None)
    feed = Feed(b"a")
    slow, quick = follower(feed, stuck), follower(feed, fine)
    dispatcher.queue_all([slow, quick])
    assert isinstance(await outcome(slow), ClientStalled)
    assert fine.written == [b"a"]
    assert not quick.done.done()


async def test_a_send_that_raises_fails_its_follower_and_delivery_goes_on() -> None:
    async def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("transport gone")

    dispatcher = Dispatcher(send_timeout_s=30)
    send = GatedSend()
    send.gate.set_result(None)
    feed = Feed(b"a")
    bad, good = follower(feed, broken), follower(feed, send)
    dispatcher.queue_all([bad, good])
    assert isinstance(await outcome(bad), RuntimeError)
    await wait_for(lambda: send.written == [b"a"], within=5)


async def test_closing_the_dispatcher_ends_the_waiting_writes() -> None:
    dispatcher = Dispatcher(send_timeout_s=30)
    sub, send = await waiting_follower(dispatcher, Feed(b"a"))
    dispatcher.close()
    assert isinstance(await outcome(sub), ConnectionAbortedError)
    await wait_for(lambda: dispatcher.blocked == 0 and send.ended == [b"a"], within=5)
