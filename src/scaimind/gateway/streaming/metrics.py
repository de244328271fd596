"""Prometheus figures of the live streams (open streams, feeds, followers, timeouts)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from scaimind.gateway.streaming.feeds import FeedHub
from scaimind.gateway.streaming.limiter import StreamLimiter


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


@functools.cache
def stream_metrics() -> StreamMetrics:
    """The process's stream collector, registered with Prometheus on first use."""
    found = StreamMetrics()
    REGISTRY.register(found)
    return found
