"""Prometheus figures of the coordinator's work: jobs by status and the queue depth, cluster-wide.

`/metrics` is unauthenticated, so these are numbers only: no tenant, queue or job names. They
come from one GetClusterStatus call, made when `/metrics` is scraped (`refresh`), at most every
`MAX_AGE_S` however many scrapers there are (concurrent scrapes share one call), and bounded by
`TIMEOUT_S`: a coordinator that does not answer in time leaves the last figures in place, and
`scaimind_cluster_figures_updated_timestamp_seconds` says how old they are.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric

from scaimind.gateway.backend.client import CallContext, CoordinatorClient
from scaimind.gateway.backend.convert import enum_name
from scaimind.gateway.errors import CoordinatorError
from scaimind.v1 import common_pb2

logger = logging.getLogger("scaimind.metrics")

MAX_AGE_S: Final = 5.0
TIMEOUT_S: Final = 1.0
# Every status is reported (0 when no job has it), so series do not come and go.
STATUSES: Final = tuple(
    name
    for number in common_pb2.JobStatus.values()
    if (name := enum_name(common_pb2.JobStatus.DESCRIPTOR, number)) is not None
)


@dataclass
class ClusterFigures:
    """The figures of one app's coordinator, refreshed on scrape."""

    client: CoordinatorClient
    max_age_s: float = MAX_AGE_S
    timeout_s: float = TIMEOUT_S
    jobs_by_status: dict[str, int] = field(default_factory=dict)
    queue_depth: int | None = None
    updated_at: float | None = None  # wall clock of the last successful refresh
    _fetched_at: float = float("-inf")  # monotonic time of the last attempt
    _inflight: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Ask the coordinator unless the figures are fresh; never raises."""
        if time.monotonic() - self._fetched_at < self.max_age_s:
            return
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch(), name="scaimind-cluster-figures")
        # shield: a scrape that goes away does not cancel the call other scrapes wait for.
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        ctx = CallContext(tenant_id="scaimind-metrics", request_id="scaimind-metrics")
        try:
            async with asyncio.timeout(self.timeout_s):
                status = await self.client.get_cluster_status(ctx)
        except (CoordinatorError, TimeoutError) as exc:
            logger.debug("cluster figures not refreshed: %s", type(exc).__name__)
            return
        self.jobs_by_status = dict(status.jobs_by_status)
        self.queue_depth = status.queued_jobs
        self.updated_at = time.time()

    def metrics(self) -> Iterator[Metric]:
        """The gauges (none before the first successful refresh)."""
        if self.updated_at is None:
            return
        jobs = GaugeMetricFamily(
            "scaimind_jobs",
            "Jobs of every tenant (evaluations included) by status, from the coordinator.",
            labels=["status"],
        )
        for name in STATUSES:
            jobs.add_metric([name], self.jobs_by_status.get(name, 0))
        yield jobs
        yield GaugeMetricFamily(
            "scaimind_queue_depth",
            "Jobs waiting in all queues together (QUEUED or PENDING).",
            value=self.queue_depth or 0,
        )
        yield GaugeMetricFamily(
            "scaimind_cluster_figures_updated_timestamp_seconds",
            "When scaimind_jobs and scaimind_queue_depth were last read from the coordinator.",
            value=self.updated_at,
        )


class ClusterFiguresCollector:
    """The process's collector: reports the figures of the app that refreshed last."""

    def __init__(self) -> None:
        self._sources: dict[int, ClusterFigures] = {}

    def add(self, figures: ClusterFigures) -> Callable[[], None]:
        """Report `figures` until the returned callable is called."""
        key = id(figures)
        self._sources[key] = figures

        def remove() -> None:
            self._sources.pop(key, None)

        return remove

    def collect(self) -> Iterator[Metric]:
        """The newest figures of any app (one process normally serves one app)."""
        fresh = [f for f in self._sources.values() if f.updated_at is not None]
        if fresh:
            yield from max(fresh, key=lambda f: f.updated_at or 0.0).metrics()


@functools.cache
def collector() -> ClusterFiguresCollector:
    """The process's collector, registered with Prometheus on first use."""
    found = ClusterFiguresCollector()
    REGISTRY.register(found)
    return found


def open_cluster_figures(client: CoordinatorClient, stack: AsyncExitStack) -> ClusterFigures:
    """This app's figures, reported while it runs (until `stack` closes)."""
    figures = ClusterFigures(client)
    stack.callback(collector().add(figures))
    return figures
