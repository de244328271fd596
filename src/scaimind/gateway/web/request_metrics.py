"""Per-route request metrics for Prometheus, as pure ASGI middleware (served on /metrics).

`scaimind_http_requests_total{route, method, status}` counts requests and
`scaimind_http_request_duration_seconds{route, method, status}` is their latency up to the
response's first message (its headers): for the unary routes that is the whole request, and for
the SSE streams the time to open the stream, not its lifetime. `route` is the route template
(`/v1/modules/scaimind/jobs/{job_id}`), never the raw path, so ids do not multiply the series.

Kept cheap for the hot path: one time reading at each end, and the labelled children are looked
up once per (route, method, status) and kept, so a request costs two dict lookups and two
increments rather than prometheus_client's label resolution.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS_METRIC: Final = "scaimind_http_requests_total"
DURATION_METRIC: Final = "scaimind_http_request_duration_seconds"
_LABELS: Final = ("route", "method", "status")
# Milliseconds for the unary routes, up to seconds for a slow coordinator.
_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# A path no route matched (the module's catch-all answers those under its prefix).
UNMATCHED: Final = "unmatched"
# The method label: one of these, else OTHER. Servers other than httptools (h11, a host's)
# pass any method token through, and each one would otherwise be a new series.
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD: Final = "OTHER"


@dataclass(frozen=True, slots=True)
class _Metrics:
    requests: Counter
    duration: Histogram


_per_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics(registry: CollectorRegistry) -> _Metrics:
    """The two metrics on `registry`, created once (several apps in a process share them)."""
    found = _per_registry.get(registry)
    if found is None:
        found = _Metrics(
            Counter(REQUESTS_METRIC, "HTTP requests answered.", _LABELS, registry=registry),
            Histogram(
                DURATION_METRIC,
                "Time to the response's headers, per route template.",
                _LABELS,
                buckets=_BUCKETS,
                registry=registry,
            ),
        )
        _per_registry[registry] = found
    return found


def route_template(scope: Scope, prefix: str) -> str:
    """The template of the route that served `scope` (set by the router), or UNMATCHED.

    FastAPI 0.115 copies included routes with their full path; later versions hand over the
    route as its router declared it (`/jobs/{job_id}`), without the prefix the module router
    was included under, which is this middleware's `prefix`.
    """
    path = getattr(scope.get("route"), "path_format", None)
    if not isinstance(path, str):
        return UNMATCHED
    return path if path.startswith(prefix) else prefix + path


class RequestMetricsMiddleware:
    """Count and time every HTTP request under `prefix` by route template, method and status."""

    def __init__(
        self, app: ASGIApp, *, prefix: str = "", registry: CollectorRegistry | None = None
    ) -> None:
        self.app = app
        self.prefix = prefix
        metrics = _metrics(REGISTRY if registry is None else registry)
        self._requests = metrics.requests
        self._duration = metrics.duration
        # (route, method, status) -> the labelled children; bounded by routes x 8 methods x codes.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self._observe(scope, status, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except BaseException:
            if not status:
                # The server answers 500 for an exception that escaped before any response.
                self._observe(scope, 500, time.perf_counter() - started)
            raise

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else OTHER_METHOD
        key = (route_template(scope, self.prefix), method, status)
        children = self._children.get(key)
        if children is None:
            labels = (key[0], key[1], str(status))
            children = (self._requests.labels(*labels), self._duration.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
