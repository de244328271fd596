"""Per-route request metrics on /metrics: count and latency by route template, method, status."""

from __future__ import annotations

import grpc
import httpx
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.types import Receive, Scope, Send

from scaimind.gateway.web.request_metrics import (
    DURATION_METRIC,
    REQUESTS_METRIC,
    RequestMetricsMiddleware,
)
from tests.conftest import auth
from tests.gateway.conftest import PREFIX, Failure, Gateway


def sample(name: str, route: str, method: str, status: int) -> float:
    labels = {"route": PREFIX + route, "method": method, "status": str(status)}
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counted(route: str, method: str, status: int) -> float:
    return sample(REQUESTS_METRIC, route, method, status)


async def test_requests_are_counted_and_timed_by_route_template(gateway: Gateway) -> None:
    client, servicer = gateway
    before_get = counted("/jobs/{job_id}", "GET", 200)
    before_hist = sample(DURATION_METRIC + "_count", "/jobs/{job_id}", "GET", 200)
    before_404 = counted("/jobs/{job_id}", "GET", 404)
    before_cancel = counted("/jobs/{job_id}/cancel", "POST", 409)
    before_401 = counted("/jobs", "GET", 401)
    before_unknown = counted("/{path}", "GET", 404)
    for job_id in ("job_a", "job_b", "job_c"):
        assert (await client.get(f"{PREFIX}/jobs/{job_id}", headers=auth())).status_code == 200
    servicer.responses["GetJob"] = Failure(grpc.StatusCode.NOT_FOUND, "no such job")
    assert (await client.get(f"{PREFIX}/jobs/job_x", headers=auth())).status_code == 404
    servicer.responses["CancelJob"] = Failure(grpc.StatusCode.FAILED_PRECONDITION, "terminal")
    r = await client.post(f"{PREFIX}/jobs/job_a/cancel", json={}, headers=auth())
    assert r.status_code == 409
    assert (await client.get(f"{PREFIX}/jobs")).status_code == 401
    assert (await client.get(f"{PREFIX}/no/such/thing", headers=auth())).status_code == 404

    # Ids never become labels: three jobs, one series.
    assert counted("/jobs/{job_id}", "GET", 200) == before_get + 3
    assert sample(DURATION_METRIC + "_count", "/jobs/{job_id}", "GET", 200) == before_hist + 3
    assert counted("/jobs/{job_id}", "GET", 404) == before_404 + 1
    assert counted("/jobs/{job_id}/cancel", "POST", 409) == before_cancel + 1
    assert counted("/jobs", "GET", 401) == before_401 + 1
    assert counted("/{path}", "GET", 404) == before_unknown + 1

    # And they are what /metrics serves.
    text = (await client.get("/metrics")).text
    line = (
        f'{REQUESTS_METRIC}{{method="GET",route="{PREFIX}/jobs/{{job_id}}",status="200"}} '
        f"{before_get + 3}"
    )
    assert line in text
    assert f"{DURATION_METRIC}_bucket{{" in text
    assert "job_a" not in text


async def test_a_refused_body_is_counted_too(gateway: Gateway) -> None:
    client, _ = gateway
    before = counted("/jobs", "POST", 413)
    request = httpx.Request(
        "POST",
        f"{client.base_url}{PREFIX}/jobs",
        content=b"{}",
        headers={**auth(), "Content-Length": str(64 * 1024 * 1024)},
    )
    r = await client.send(request)
    assert r.status_code == 413
    # Refused before routing: no route was chosen, so the series is the unmatched one.
    assert counted("/jobs", "POST", 413) == before
    assert (
        REGISTRY.get_sample_value(
            REQUESTS_METRIC, {"route": "unmatched", "method": "POST", "status": "413"}
        )
        or 0
    ) >= 1


async def test_made_up_methods_do_not_multiply_the_series() -> None:
    # httptools refuses unknown methods, but h11 and other ASGI servers (a host's) pass any
    # token through: each one must not become a new series (unbounded memory and /metrics).
    registry = CollectorRegistry()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 405, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    metrics = RequestMetricsMiddleware(app, prefix=PREFIX, registry=registry)
    transport = httpx.ASGITransport(app=metrics)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for n in range(200):
            await client.request(f"X{n}", f"{PREFIX}/jobs")
        await client.request("GET", f"{PREFIX}/jobs")
    methods = {
        s.labels["method"]
        for family in registry.collect()
        if family.name == REQUESTS_METRIC.removesuffix("_total")
        for s in family.samples
        if s.name == REQUESTS_METRIC
    }
    assert methods == {"OTHER", "GET"}
    other = registry.get_sample_value(
        REQUESTS_METRIC, {"route": "unmatched", "method": "OTHER", "status": "405"}
    )
    assert other == 200
