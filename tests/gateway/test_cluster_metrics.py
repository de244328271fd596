"""The cluster figures of /metrics: one coordinator call per refresh, bounded by a timeout."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from scaimind.gateway.backend.client import CoordinatorClient, open_channel
from scaimind.gateway.metrics import TIMEOUT_S, ClusterFigures
from scaimind.v1 import cluster_pb2
from tests.conftest import API_SECRET, gateway_settings
from tests.gateway.conftest import Failure, ScriptedCoordinator, running_gateway, serving


def _families(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text)}


def _status(queued: int, **by_status: int) -> cluster_pb2.ClusterStatus:
    return cluster_pb2.ClusterStatus(queued_jobs=queued, jobs_by_status=by_status)


async def test_scrapes_share_one_coordinator_call(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    servicer, port = scripted
    servicer.responses["GetClusterStatus"] = _status(3, QUEUED=3, TRAINING=1)
    async with running_gateway(gateway_settings(tmp_path, port)) as client:
        first = await client.get("/metrics")
        together = await asyncio.gather(*(client.get("/metrics") for _ in range(5)))
    assert all(r.status_code == 200 for r in [first, *together])
    assert [c.rpc for c in servicer.calls] == ["GetClusterStatus"]
    for r in [first, *together]:
        assert 'scaimind_jobs{status="TRAINING"} 1.0' in r.text
        assert 'scaimind_jobs{status="COMPLETED"} 0.0' in r.text
        assert "scaimind_queue_depth 3.0" in r.text


async def test_a_hung_coordinator_costs_a_scrape_at_most_the_timeout(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    servicer, port = scripted
    release = asyncio.Event()

    async def hang(_request: Any) -> Any:
        await release.wait()
        return _status(0)

    servicer.responses["GetClusterStatus"] = hang
    try:
        async with running_gateway(gateway_settings(tmp_path, port)) as client:
            started = time.monotonic()
            r = await client.get("/metrics")
            took = time.monotonic() - started
    finally:
        release.set()
    assert r.status_code == 200
    assert took < TIMEOUT_S + 2
    # No figures yet: the gauges are absent rather than zero.
    assert "scaimind_queue_depth" not in _families(r.text)
    assert "scaimind_sse_streams_open" in _families(r.text)


async def test_a_failed_refresh_keeps_the_last_figures(tmp_path: Path) -> None:
    servicer = ScriptedCoordinator()  # type: ignore[abstract]
    async with serving(servicer) as port:
        channel = open_channel(gateway_settings(tmp_path, port))
        client = CoordinatorClient(channel, api_secret=API_SECRET, timeout_s=5)
        try:
            figures = ClusterFigures(client, max_age_s=0)
            servicer.responses["GetClusterStatus"] = _status(2, QUEUED=2)
            await figures.refresh()
            assert (figures.jobs_by_status, figures.queue_depth) == ({"QUEUED": 2}, 2)
            updated = figures.updated_at
            assert updated is not None
            servicer.responses["GetClusterStatus"] = Failure(grpc.StatusCode.INTERNAL, "boom")
            await figures.refresh()
            assert (figures.jobs_by_status, figures.queue_depth) == ({"QUEUED": 2}, 2)
            assert figures.updated_at == updated
            assert len(servicer.calls) == 2
        finally:
            await client.close()
