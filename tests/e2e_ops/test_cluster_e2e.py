"""Drain/enable, forced preemption and the queue, end to end over HTTP on real processes."""

from __future__ import annotations

from typing import Any

from tests.conftest import auth, wait_for
from tests.e2e_ops.conftest import NODE, PREFIX, Ops, OpsFactory


async def _drain(
    ops: Ops, force: bool = False, node_id: str = NODE, headers: dict[str, str] | None = None
) -> Any:
    return await ops.http.post(
        f"{PREFIX}/cluster/nodes/{node_id}/drain",
        json={"force": force, "reason": "maintenance"},
        headers=headers or auth(),
    )


async def _enable(ops: Ops, node_id: str = NODE) -> Any:
    return await ops.http.post(f"{PREFIX}/cluster/nodes/{node_id}/enable", headers=auth())


async def test_drain_lets_jobs_finish_blocks_new_ones_and_enable_reopens(
    make_ops: OpsFactory,
) -> None:
    ops = await make_ops(slots=1)
    gate = ops.root / "gate"
    running = (await ops.submit("running", gate=gate))["data"]["job_id"]
    await ops.wait_status(running, "TRAINING")
    node = await ops.node()
    assert node["running_job_ids"] == [running]
    assert node["gpus_available"] == 0

    # Utilisation comes from the real process.
    async def busy() -> bool:
        gpus = (await ops.node())["gpus"]
        return bool(gpus[0]["job_id"] == running and int(gpus[0]["memory_used_bytes"]) > 0)

    await wait_for(busy)

    async def measured() -> bool:
        cluster = (await ops.http.get(f"{PREFIX}/cluster", headers=auth())).json()["data"]
        return 0.0 < float(cluster["utilization"]["gpu_percent"]) <= 100.0

    await wait_for(measured)

    r = await _drain(ops)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "DRAINING"
    assert r.json()["data"]["drain_reason"] == "maintenance"
    again = await _drain(ops)
    assert again.status_code == 409
    assert "DRAINING" in again.json()["error"]["message"]

    # Nothing new is placed on a draining node; the running job keeps going.
    queued = (await ops.submit("waits", max_steps=2))["data"]["job_id"]
    cluster = (await ops.http.get(f"{PREFIX}/cluster", headers=auth())).json()["data"]
    assert cluster["nodes_by_status"] == {"DRAINING": 1}
    assert cluster["available_gpus"] == 0
    assert (await ops.job(queued))["status"] == "QUEUED"
    assert (await ops.job(running))["status"] == "TRAINING"

    gate.touch()
    await ops.wait_status(running, "COMPLETED")

    async def drained() -> bool:
        return bool((await ops.node())["status"] == "DRAINED")

    await wait_for(drained)
    assert (await ops.job(queued))["status"] == "QUEUED"
    r = await _drain(ops, force=True)
    assert r.status_code == 409
    assert "DRAINED" in r.json()["error"]["message"]

    r = await _enable(ops)
    assert r.status_code == 200
    assert r.json()["data"]["status"] == "ONLINE"
    assert (await ops.wait_status(queued, "COMPLETED", "FAILED"))["status"] == "COMPLETED"
    r = await _enable(ops)
    assert r.status_code == 409
    assert "ONLINE" in r.json()["error"]["message"]

    # Unknown nodes and missing permissions.
    assert (await _drain(ops, node_id="node-x")).status_code == 404
    r = await _drain(ops, headers=auth(role="tenant_viewer"))
    assert r.status_code == 403
    assert "scaimind:cluster_admin" in r.json()["error"]["message"]


async def test_force_drain_preempts_and_the_retry_waits_for_capacity(
    make_ops: OpsFactory,
) -> None:
    ops = await make_ops(slots=1)
    gate = ops.root / "gate"
    job_id = (await ops.submit("victim", gate=gate, max_retries=1))["data"]["job_id"]
    await ops.wait_status(job_id, "TRAINING")

    async def stepped() -> bool:
        return int((await ops.job(job_id))["progress"]["current_step"]) >= 3

    await wait_for(stepped)
    r = await _drain(ops, force=True)
    assert r.status_code == 200, r.text
    job = await ops.wait_status(job_id, "PREEMPTED")
    assert job["checkpoints"], "a forced drain checkpoints the job before stopping it"

    # The automatic retry is queued (no other node) and starts from the checkpoint on enable.
    async def child() -> dict[str, Any] | None:
        jobs = (await ops.http.get(f"{PREFIX}/jobs", headers=auth())).json()["data"]["jobs"]
        return next((j for j in jobs if j["parent_job_id"] == job_id), None)

    retry = await wait_for(child)
    assert retry["status"] == "QUEUED"
    assert (await ops.node())["status"] == "DRAINED"
    assert (await _enable(ops)).status_code == 200
    await ops.wait_status(retry["job_id"], "TRAINING")
    gate.touch()
    done = await ops.wait_status(retry["job_id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED"
    assert int(done["progress"]["current_step"]) > int(job["checkpoints"][-1]["step"])


async def test_queue_positions_advance_as_jobs_start(make_ops: OpsFactory) -> None:
    ops = await make_ops(slots=1)
    gates = [ops.root / f"gate-{i}" for i in range(3)]
    ids = [(await ops.submit(f"j{i}", gate=g))["data"]["job_id"] for i, g in enumerate(gates)]
    await ops.wait_status(ids[0], "TRAINING")

    q = await ops.queue()
    assert q["running"] == 1
    assert q["depth"] == 2
    assert [(j["job_id"], j["position"]) for j in q["jobs"]] == [(ids[1], 1), (ids[2], 2)]
    first, second = q["jobs"]
    assert 0 < first["estimated_start_seconds"] < second["estimated_start_seconds"]
    assert (await ops.job(ids[2]))["queue_position"] == 2
    # Another tenant sees the depth but not the jobs.
    other = await ops.http.get(f"{PREFIX}/queue", headers=auth("tenant-b"))
    default = next(x for x in other.json()["data"]["queues"] if x["queue_name"] == "default")
    assert default["depth"] == 2
    assert default["jobs"] == []

    gates[0].touch()
    await ops.wait_status(ids[1], "TRAINING")
    q = await ops.queue()
    assert [(j["job_id"], j["position"]) for j in q["jobs"]] == [(ids[2], 1)]
    assert (await ops.job(ids[2]))["queue_position"] == 1

    gates[1].touch()
    await ops.wait_status(ids[2], "TRAINING")
    q = await ops.queue()
    assert q["depth"] == 0
    assert q["jobs"] == []
    assert q["running"] == 1
    gates[2].touch()
    await ops.wait_status(ids[2], "COMPLETED")
