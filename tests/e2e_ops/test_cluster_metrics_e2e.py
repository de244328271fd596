"""/metrics reports the coordinator's jobs by status and the queue depth, cluster-wide, unnamed."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import auth
from tests.e2e_ops.conftest import PREFIX, Ops, OpsFactory

FAR_FUTURE = "2099-01-01T00:00:00Z"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _scrape(ops: Ops) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    r = await ops.http.get("/metrics")
    assert r.status_code == 200
    return r.text, _samples(r.text)


def _jobs(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], status: str) -> float:
    return samples[("scaimind_jobs", (("status", status),))]


async def test_jobs_by_status_and_queue_depth_of_every_tenant(make_ops: OpsFactory) -> None:
    ops = await make_ops(slots=1)
    done = (await ops.submit("done", tenant="tenant-a", max_steps=5))["data"]["job_id"]
    await ops.wait_status(done, "COMPLETED", within=40)
    # Two tenants' jobs waiting in a named queue (start_after keeps them there).
    for tenant in ("tenant-a", "tenant-b"):
        body = {
            "name": "secret-project-name",
            "training_config": {"base_model": {"model_id": "m"}, "training_type": "SFT"},
            "data_config": {"sources": [{"path": str(ops.corpus)}]},
            "resource_config": {"gpu_count": 1, "gpu_type": "CPU"},
            "scheduling_config": {"queue_name": "team-q", "start_after": FAR_FUTURE},
        }
        r = await ops.http.post(f"{PREFIX}/jobs", json=body, headers=auth(tenant))
        assert r.status_code == 201, r.text

    before = time.time()
    text, samples = await _scrape(ops)
    assert _jobs(samples, "COMPLETED") == 1
    assert _jobs(samples, "QUEUED") == 2
    assert _jobs(samples, "FAILED") == 0  # every status has a series
    assert samples[("scaimind_queue_depth", ())] == 2
    updated = samples[("scaimind_cluster_figures_updated_timestamp_seconds", ())]
    assert before - 1 <= updated <= time.time()
    # /metrics is unauthenticated: numbers only.
    for secret in ("tenant-a", "tenant-b", "team-q", "secret-project-name", done, "node-a"):
        assert secret not in text
