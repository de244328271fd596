"""Outside the module prefix: health, readiness, unknown paths and OpenAPI (§5.7)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import auth, closed_port, gateway_settings
from tests.gateway.conftest import PREFIX, Gateway, running_gateway


async def test_health_needs_no_auth(gateway: Gateway) -> None:
    client, servicer = gateway
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.headers["x-request-id"]
    assert servicer.calls == []


async def test_ready_when_the_coordinator_answers(gateway: Gateway) -> None:
    client, servicer = gateway
    r = await client.get("/health/ready")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["coordinator"] == "ok"
    assert servicer.last("GetClusterStatus").time_remaining is not None


async def test_not_ready_when_the_coordinator_is_down(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, closed_port(), grpc_timeout_s=0.5)
    async with running_gateway(settings) as client:
        started = time.monotonic()
        r = await client.get("/health/ready")
        assert time.monotonic() - started < 3.0
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["coordinator"] != "ok"


@pytest.mark.parametrize("authenticated", [True, False])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{PREFIX}/nope"),
        ("GET", f"{PREFIX}/jobs/job_1/nope"),
        ("POST", f"{PREFIX}/queue/x/y"),
        ("GET", "/nope"),
    ],
)
async def test_unknown_paths_are_404_envelopes(
    gateway: Gateway, method: str, path: str, authenticated: bool
) -> None:
    client, servicer = gateway
    r = await client.request(method, path, headers=auth() if authenticated else {})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == "NOT_FOUND"
    assert body["meta"]["request_id"] == r.headers["x-request-id"]
    assert servicer.calls == []


async def test_openapi_lists_the_jobs_paths(gateway: Gateway) -> None:
    client, _ = gateway
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    expected = {
        f"{PREFIX}/jobs": {"get", "post"},
        f"{PREFIX}/jobs/{{job_id}}": {"get"},
        f"{PREFIX}/jobs/{{job_id}}/cancel": {"post"},
        f"{PREFIX}/jobs/{{job_id}}/pause": {"post"},
        f"{PREFIX}/jobs/{{job_id}}/resume": {"post"},
        f"{PREFIX}/jobs/{{job_id}}/retry": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, sorted(paths)
        assert methods <= set(paths[path])
        for method in methods:
            assert paths[path][method].get("summary") or paths[path][method].get("description")
    assert not any("{path}" in p for p in paths)  # the catch-all stays out of the schema
    assert "/health" in paths


async def test_docs_page(gateway: Gateway) -> None:
    client, _ = gateway
    r = await client.get("/docs")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]


async def test_prometheus_metrics_need_no_auth(gateway: Gateway) -> None:
    client, servicer = gateway
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    names = {
        line.split("{")[0].split(" ")[0]
        for line in r.text.splitlines()
        if line and not line.startswith("#")
    }
    assert any(n.startswith("scaimind_") for n in names), sorted(names)
    # The only call: the cluster-wide job figures, as no tenant.
    assert [c.rpc for c in servicer.calls] == ["GetClusterStatus"]
    assert servicer.calls[0].metadata["x-tenant-id"] == "scaimind-metrics"
