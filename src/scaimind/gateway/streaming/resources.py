"""The streaming resources of one running module, opened by the lifespan (gateway/app.py)."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from dataclasses import dataclass

from scaimind.gateway.streaming.feeds import FeedHub
from scaimind.gateway.streaming.limiter import StreamLimiter
from scaimind.gateway.streaming.metrics import stream_metrics
from scaimind.gateway.streaming.shutdown import end_streams_on_exit
from scaimind.settings import Settings


@dataclass(eq=False)
class StreamResources:
    """This process's stream limiter and shared log feeds (each worker process has its own)."""

    limiter: StreamLimiter
    feeds: FeedHub


def open_streams(settings: Settings, stack: AsyncExitStack) -> StreamResources:
    """The per-tenant stream limiter and the shared log feeds, reported to Prometheus; open
    streams end when the server starts to shut down."""
    limiter = StreamLimiter(settings.stream_cap_per_tenant)
    hub = FeedHub(settings.sse_send_timeout_s)
    stack.push_async_callback(hub.close)
    stack.callback(stream_metrics().add(limiter, hub))
    watch = asyncio.get_running_loop().create_task(
        end_streams_on_exit(limiter), name="scaimind-stream-shutdown"
    )
    stack.push_async_callback(_cancel, watch)
    return StreamResources(limiter=limiter, feeds=hub)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
