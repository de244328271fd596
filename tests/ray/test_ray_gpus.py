"""A Ray node with GPUs: its inventory, a GPU job on it, foreign load, forced drain.

A head of its own for this module, with 2 GPUs marked `accelerator_type:A100` as Ray marks a
real A100 node (the GPUs are Ray's bookkeeping: it hands out device ids, nothing more).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from ray.exceptions import AuthenticationError
from ray.job_submission import JobStatus, JobSubmissionClient

from scaimind.coordinator.config import RayConfig
from scaimind.coordinator.server import CoordinatorStartError, start_coordinator
from tests.conftest import auth, wait_for
from tests.coordinator.conftest import CUSTOM_SCRIPT
from tests.e2e_jobs.conftest import PREFIX, Stack
from tests.ray.cluster import LocalRayHead

from .conftest import RayStack, open_ray_stack, ray_config, ray_jobs, wait_ray_status

GPU_SCRIPT = (
    "import os\n"
    'print("gpus", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)\n'
    'print("ray token visible", any("RAY" in k for k in os.environ), flush=True)\n' + CUSTOM_SCRIPT
)


@pytest.fixture(scope="module")
def gpu_head() -> Iterator[LocalRayHead]:
    """A head with one CPU and two A100s, and Ray's token authentication on."""
    head = LocalRayHead(
        num_cpus=1,
        num_gpus=2,
        resources={"accelerator_type:A100": 1},
        extra_env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)},
    )
    head.start()
    try:
        yield head
    finally:
        head.stop()
        assert not head.pids()


@pytest.fixture
async def gpu_stack(gpu_head: LocalRayHead, tmp_path: Path) -> AsyncIterator[RayStack]:
    """Coordinator + gateway on the GPU head; an attempt Ray keeps waiting is withdrawn after
    8 s (long enough for Ray to clear the withdrawn attempt it still holds, short enough to see
    it happen)."""
    async with AsyncExitStack() as exits:
        ray = RayConfig(
            address=gpu_head.address,
            auth_token=gpu_head.token,
            inventory_seconds=1.0,
            pending_timeout_seconds=8,
        )
        yield await open_ray_stack(exits, gpu_head, tmp_path, ray=ray)


def gpu_body(s: Stack, name: str, gate: str, **kw: Any) -> dict[str, Any]:
    script = s.root / "gpu.py"
    script.write_text(GPU_SCRIPT)
    body = s.body(name, env={"GATE": str(s.gate(gate)), "GATE_STEP": "2", "CKPT_EVERY": "1"}, **kw)
    body["training_config"]["framework"]["custom_script_path"] = str(script)
    body["resource_config"] = {"gpu_type": "a100", "gpu_count": 2}
    return body


async def test_gpu_node_inventory_placement_foreign_load_and_forced_drain(
    gpu_stack: RayStack,
) -> None:
    s, head = gpu_stack.stack, gpu_stack.head
    r = await s.http.get(f"{PREFIX}/cluster/nodes", headers=auth())
    [node] = r.json()["data"]["nodes"]
    assert (node["gpu_type"], node["gpu_count"], node["status"]) == ("A100", 2, "ONLINE")
    node_id = node["node_id"]
    assert node["labels"]["ray.io/node-id"] == node_id

    # What no Ray job of this cluster can be is refused at submit, naming the field.
    for change, field in (
        ({"num_nodes": 2}, "resource_config.num_nodes"),
        ({"memory_gb": 1_000_000}, "resource_config.memory_gb"),
    ):
        body = gpu_body(s, "too-big", "never")
        body["resource_config"].update(change)
        r = await s.http.post(f"{PREFIX}/jobs", json=body, headers=auth())
        assert r.status_code == 400, r.text
        assert field in r.text, r.text

    # Someone else's Ray job holds both GPUs: Ray would keep ours waiting, so the attempt is
    # withdrawn and the job waits in our queue again (no job is queued inside Ray for long).
    # The cluster wants its token (the coordinator sends SCAIMIND_RAY_AUTH_TOKEN); without the
    # right one a coordinator does not start, and says why.
    with pytest.raises(AuthenticationError):
        JobSubmissionClient(head.address).list_jobs()
    wrong = RayConfig(address=head.address, auth_token="not-the-token")
    with pytest.raises(CoordinatorStartError, match="SCAIMIND_RAY_AUTH_TOKEN must be the"):
        await start_coordinator(ray_config(head, s.root / "wrong", ray=wrong))
    client = head.client()
    foreign = client.submit_job(entrypoint="sleep 600", entrypoint_num_gpus=2)
    await wait_ray_status(head, foreign, JobStatus.RUNNING)
    job_id = await s.submit(gpu_body(s, "gpu-job", "g"))

    async def withdrawn() -> bool:
        return any("kept it waiting" in m for m in await s.messages(job_id))

    await wait_for(withdrawn, within=60)

    async def released() -> bool:
        r = await s.http.get(f"{PREFIX}/cluster/nodes/{node_id}", headers=auth())
        return bool(r.json()["data"]["gpus_available"] == 2)

    # Its slots are free in our table, but the node takes no new work while Ray says it is
    # busy: the job is not placed (and submitted) again and again meanwhile.
    await wait_for(released, within=30)
    assert (await s.job(job_id))["status"] == "QUEUED"
    assert [k for k in ray_jobs(head) if k.startswith(job_id)] == [f"{job_id}-a1"]
    client.stop_job(foreign)
    # The withdrawn attempt, which Ray still held, is started by Ray and ended at once.
    await wait_ray_status(head, f"{job_id}-a1", JobStatus.STOPPED, JobStatus.FAILED)
    assert "@s " not in client.get_job_logs(f"{job_id}-a1")
    job = await s.wait(job_id, "TRAINING", step=2, within=60)
    assert job["assigned_nodes"] == [node_id]
    # Ray's device assignment reaches the sandboxed job; Ray's token and settings do not.
    messages = await s.messages(job_id)
    assert "gpus 0,1" in messages
    assert "ray token visible False" in messages
    r = await s.http.get(f"{PREFIX}/cluster/nodes/{node_id}", headers=auth())
    assert r.json()["data"]["gpus_available"] == 0

    # A forced drain stops the job with a checkpoint (PREEMPTED) and closes the node.
    r = await s.http.post(
        f"{PREFIX}/cluster/nodes/{node_id}/drain",
        json={"force": True, "reason": "maintenance"},
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    job = await s.wait(job_id, "PREEMPTED", within=60)
    assert job["checkpoints"][-1]["step"] == 2

    async def drained() -> bool:
        r = await s.http.get(f"{PREFIX}/cluster/nodes/{node_id}", headers=auth())
        return bool(r.json()["data"]["status"] == "DRAINED")

    await wait_for(drained, within=30)
    queued = await s.submit(gpu_body(s, "after-drain", "h"))
    assert (await s.job(queued))["status"] == "QUEUED"
    r = await s.http.post(f"{PREFIX}/cluster/nodes/{node_id}/enable", headers=auth())
    assert r.status_code == 200, r.text
    await s.wait(queued, "TRAINING", step=2, within=60)
    s.gate("h").write_text("")
    await s.wait(queued, "COMPLETED", within=60)
