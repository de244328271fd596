"""End-to-end smoke test of the jobs API against the scripted coordinator."""

from __future__ import annotations

import httpx

from tests.conftest import auth
from tests.gateway.conftest import ScriptedCoordinator

PREFIX = "/v1/modules/scaimind"

SUBMIT = {
    "name": "demo",
    "training_config": {
        "training_type": "SFT",
        "base_model": {"model_id": "meta-llama/Llama-3-8B"},
        "hyperparameters": {"learning_rate": 0.001, "packing": True, "max_steps": 50},
    },
    "data_config": {"sources": [{"path": "file:///data/train.jsonl", "format": "jsonl"}]},
    "resource_config": {"gpu_count": 1},
}


async def test_submit_and_get(gateway: tuple[httpx.AsyncClient, ScriptedCoordinator]) -> None:
    client, servicer = gateway
    r = await client.post(f"{PREFIX}/jobs", json=SUBMIT, headers=auth())
    assert r.status_code == 201, r.text
    assert r.json() == {
        "data": {
            "job_id": "job_1",
            "status": "QUEUED",
            "message": "queued",
            "estimated_wait_seconds": 0,
        }
    }
    call = servicer.last("SubmitJob")
    assert call.request.training_config.hyperparameters["packing"] == "true"  # type: ignore[attr-defined]
    assert call.metadata["x-tenant-id"] == "tenant-a"
    assert call.time_remaining is not None
    r = await client.get(f"{PREFIX}/jobs/job_9", headers=auth())
    assert r.status_code == 200
    assert r.json()["data"]["status"] == "TRAINING"
    assert r.headers["x-request-id"].startswith("req_")
