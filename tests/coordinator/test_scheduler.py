"""Scheduling on a simulated inventory: priority order, preemption, drain/enable, placement."""

from __future__ import annotations

import time

import grpc
import pytest

from scaimind.v1 import cluster_pb2, coordinator_pb2
from tests.conftest import wait_for

from .conftest import ONE_SLOT, TWO_NODES, Client, Env, S


def gated(env: Env, gate: str, step: int = 1) -> dict[str, str]:
    """Job environment: train `step` steps, then wait for the gate file."""
    return {
        "GATE": str(env.tmp / gate),
        "GATE_STEP": str(step),
        "STEP_SECONDS": "0",
        "TOTAL_STEPS": "6",
    }


async def test_priority_order_queue_position_and_estimates(env: Env) -> None:
    client = await env.start(nodes=ONE_SLOT)
    blocker = await client.submit(env.custom("blocker", env=gated(env, "go"), priority=5))
    await client.wait(blocker, S.JOB_STATUS_TRAINING, check=lambda j: j.progress.current_step == 1)
    low = await client.submit(env.custom("low", env=gated(env, "go"), priority=1))
    high1 = await client.submit(env.custom("high-1", env=gated(env, "go"), priority=9))
    high2 = await client.submit(env.custom("high-2", env=gated(env, "go"), priority=9))

    jobs = {j: await client.get(j) for j in (low, high1, high2)}
    assert [jobs[j].queue_position for j in (high1, high2, low)] == [1, 2, 3]
    waits = [jobs[j].estimated_wait_seconds for j in (high1, high2, low)]
    assert 0 < waits[0] < waits[1] < waits[2]
    assert jobs[high1].queue_name == "default"
    # A non-preemptible job keeps running even though higher-priority work waits.
    assert (await client.get(blocker)).status == S.JOB_STATUS_TRAINING

    queue = await client.cluster.GetQueueStatus(
        cluster_pb2.GetQueueStatusRequest(), metadata=client.md()
    )
    default = next(q for q in queue.queues if q.queue_name == "default")
    assert default.depth == 3
    assert default.running == 1
    assert [(q.job_id, q.position, q.priority) for q in default.jobs] == [
        (high1, 1, 9),
        (high2, 2, 9),
        (low, 3, 1),
    ]
    assert queue.total_depth == 3

    (env.tmp / "go").write_text("")
    done = [await client.wait(j, S.JOB_STATUS_COMPLETED) for j in (high1, high2, low)]
    starts = [j.started_at.ToNanoseconds() for j in done]
    assert starts == sorted(starts)


async def test_preemption_checkpoints_and_retries_automatically(env: Env) -> None:
    client = await env.start(nodes=ONE_SLOT)
    victim = await client.submit(
        env.custom(
            "victim",
            env=gated(env, "victim-go", step=3),
            priority=2,
            preemptible=True,
            max_retries=1,
        )
    )
    await client.wait(victim, S.JOB_STATUS_TRAINING, check=lambda j: j.progress.current_step == 3)
    # Equal or lower priority never preempts.
    same = await client.submit(
        env.custom("same", env={"TOTAL_STEPS": "2", "STEP_SECONDS": "0"}, priority=2)
    )
    assert (await client.get(victim)).status == S.JOB_STATUS_TRAINING
    urgent = await client.submit(
        env.custom("urgent", env={"TOTAL_STEPS": "2", "STEP_SECONDS": "0"}, priority=8)
    )

    job = await client.wait(victim, S.JOB_STATUS_PREEMPTED)
    assert [c.step for c in job.checkpoints] == [3]
    assert (await client.wait(urgent, S.JOB_STATUS_COMPLETED)).status == S.JOB_STATUS_COMPLETED
    log = [e.message for e in await client.entries(victim, tail=1000)]
    assert any(f"preempted by job {urgent}" in t for t in log)
    assert any("TRAINING → CHECKPOINTING" in t for t in log)

    async def child_job() -> object:
        listed = await client.jobs.ListJobs(
            coordinator_pb2.ListJobsRequest(page_size=100), metadata=client.md()
        )
        return next((j for j in listed.jobs if j.parent_job_id == victim), None)

    child = await wait_for(child_job)
    assert child.retry_count == 1
    await client.wait(same, S.JOB_STATUS_COMPLETED)  # FIFO among equals: queued before the child
    (env.tmp / "victim-go").write_text("")
    done = await client.wait(child.job_id, S.JOB_STATUS_COMPLETED)
    assert done.progress.current_step == 6
    out = [e.message for e in await client.entries(child.job_id, tail=1000)]
    assert "custom script starting at step 4 of 6" in out


async def test_drain_enable_and_placement(env: Env) -> None:
    client = await env.start(nodes=TWO_NODES)
    md = client.md()
    node = await client.cluster.DrainNode(
        cluster_pb2.DrainNodeRequest(node_id="node-a", reason="maintenance"), metadata=md
    )
    assert node.status == cluster_pb2.NODE_STATUS_DRAINED
    assert node.drain_reason == "maintenance"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.cluster.DrainNode(cluster_pb2.DrainNodeRequest(node_id="node-a"), metadata=md)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "DRAINED" in (err.value.details() or "")

    first = await client.submit(env.custom("first", env=gated(env, "go")))
    job = await client.wait(first, S.JOB_STATUS_TRAINING)
    assert list(job.assigned_nodes) == ["node-b"]
    node = await client.cluster.DrainNode(
        cluster_pb2.DrainNodeRequest(node_id="node-b"), metadata=md
    )
    assert node.status == cluster_pb2.NODE_STATUS_DRAINING
    assert list(node.running_job_ids) == [first]
    assert node.gpus[0].job_id == first

    second = await client.submit(env.custom("second", env=gated(env, "go2")))
    assert (await client.get(second)).status == S.JOB_STATUS_QUEUED
    status = await client.cluster.GetClusterStatus(
        cluster_pb2.GetClusterStatusRequest(), metadata=md
    )
    assert dict(status.nodes_by_status) == {"DRAINED": 1, "DRAINING": 1}
    assert (status.total_gpus, status.allocated_gpus, status.available_gpus) == (2, 1, 0)
    assert status.queued_jobs == 1
    assert status.running_jobs == 1

    node = await client.cluster.EnableNode(
        cluster_pb2.EnableNodeRequest(node_id="node-a"), metadata=md
    )
    assert node.status in (cluster_pb2.NODE_STATUS_ONLINE,)
    job = await client.wait(
        second, S.JOB_STATUS_TRAINING, check=lambda j: j.progress.current_step == 1
    )
    assert list(job.assigned_nodes) == ["node-a"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.cluster.EnableNode(
            cluster_pb2.EnableNodeRequest(node_id="node-a"), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # A forced drain preempts what runs on the node, even a non-preemptible job.
    await client.cluster.DrainNode(
        cluster_pb2.DrainNodeRequest(node_id="node-a", force=True), metadata=md
    )
    job = await client.wait(second, S.JOB_STATUS_PREEMPTED)
    assert [c.step for c in job.checkpoints] == [1]
    resp = await client.jobs.CancelJob(coordinator_pb2.CancelJobRequest(job_id=second), metadata=md)
    assert resp.status == S.JOB_STATUS_CANCELLED

    (env.tmp / "go").write_text("")
    await client.wait(first, S.JOB_STATUS_COMPLETED)
    node = await client.cluster.GetNode(cluster_pb2.GetNodeRequest(node_id="node-b"), metadata=md)
    assert node.status == cluster_pb2.NODE_STATUS_DRAINED
    listed = await client.cluster.ListNodes(
        cluster_pb2.ListNodesRequest(status_filter="DRAINED"), metadata=md
    )
    assert sorted(n.node_id for n in listed.nodes) == ["node-a", "node-b"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.cluster.GetNode(cluster_pb2.GetNodeRequest(node_id="node-z"), metadata=md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    # node_selector and node_affinity pick the node.
    for node_id in ("node-a", "node-b"):
        await client.cluster.EnableNode(cluster_pb2.EnableNodeRequest(node_id=node_id), metadata=md)
    req = env.custom("selector", env=gated(env, "go3"))
    req.resource_config.node_selector["zone"] = "b"
    by_label = await client.submit(req)
    req = env.custom("affinity", env=gated(env, "go3"))
    req.scheduling_config.node_affinity.append("node-a")
    by_id = await client.submit(req)
    assert list((await client.wait(by_label, S.JOB_STATUS_TRAINING)).assigned_nodes) == ["node-b"]
    assert list((await client.wait(by_id, S.JOB_STATUS_TRAINING)).assigned_nodes) == ["node-a"]
    (env.tmp / "go3").write_text("")
    await client.wait(by_label, S.JOB_STATUS_COMPLETED)


async def test_default_inventory_node(env: Env, client: Client) -> None:
    import os
    import socket

    listed = await client.cluster.ListNodes(cluster_pb2.ListNodesRequest(), metadata=client.md())
    assert [n.node_id for n in listed.nodes] == ["node-local"]
    node = listed.nodes[0]
    assert node.hostname == socket.gethostname()
    assert node.gpu_type == "CPU"
    assert node.gpu_count == (os.cpu_count() or 1)
    assert node.status == cluster_pb2.NODE_STATUS_ONLINE
    gate = env.tmp / "go"
    job_id = await client.submit(
        env.custom("busy", env={"GATE": str(gate), "GATE_STEP": "1", "STEP_SECONDS": "0"})
    )
    await client.wait(job_id, S.JOB_STATUS_TRAINING)

    async def busy_slot() -> object:
        n = await client.cluster.GetNode(
            cluster_pb2.GetNodeRequest(node_id="node-local"), metadata=client.md()
        )
        slot = next((g for g in n.gpus if g.job_id == job_id), None)
        return slot if slot is not None and slot.memory_used_bytes > 0 else None

    slot = await wait_for(busy_slot)
    assert slot.memory_total_bytes > 0
    other = env.tenant("tenant-b")
    seen_by_other = await other.cluster.GetNode(
        cluster_pb2.GetNodeRequest(node_id="node-local"), metadata=other.md()
    )
    assert job_id not in seen_by_other.running_job_ids
    assert job_id not in [g.job_id for g in seen_by_other.gpus]
    assert seen_by_other.gpus_available == node.gpu_count - 1
    gate.write_text("")
    await client.wait(job_id, S.JOB_STATUS_COMPLETED)


async def test_multi_node_job_and_inventory_change(env: Env) -> None:
    client = await env.start(nodes=TWO_NODES)
    req = env.custom("wide", env={"TOTAL_STEPS": "2", "STEP_SECONDS": "0"})
    req.resource_config.num_nodes = 2
    wide = await client.submit(req)
    job = await client.wait(wide, S.JOB_STATUS_COMPLETED)
    assert sorted(job.assigned_nodes) == ["node-a", "node-b"]
    req = env.custom("pinned", start_after=time.time() + 3600)
    req.scheduling_config.node_affinity.append("node-b")
    pinned = await client.submit(req)
    await env.stop()
    # node-b is gone from the inventory: the queued job can never start.
    await env.start(nodes=TWO_NODES[:1])
    job = await env.client.wait(pinned, S.JOB_STATUS_FAILED)
    assert job.error.code == "UNSCHEDULABLE"


async def test_queues_are_separate(env: Env, client: Client) -> None:
    later = time.time() + 3600
    batch = await client.submit(env.custom("batch", start_after=later, queue_name="batch"))
    default = await client.submit(env.custom("default", start_after=later))
    assert (await client.get(batch)).queue_position == 1
    assert (await client.get(default)).queue_position == 1
    only = await client.cluster.GetQueueStatus(
        cluster_pb2.GetQueueStatusRequest(queue_name="batch"), metadata=client.md()
    )
    assert [(q.queue_name, [j.job_id for j in q.jobs]) for q in only.queues] == [("batch", [batch])]
    every = await client.cluster.GetQueueStatus(
        cluster_pb2.GetQueueStatusRequest(), metadata=client.md()
    )
    assert {q.queue_name: q.depth for q in every.queues} == {"batch": 1, "default": 1}
    assert every.total_depth == 2
    other = env.tenant("tenant-b")
    seen = await other.cluster.GetQueueStatus(
        cluster_pb2.GetQueueStatusRequest(), metadata=other.md()
    )
    # Another tenant sees only the queues it uses (and the default one, whose depth counts
    # every tenant's jobs), never this tenant's jobs or queue names.
    assert [(q.queue_name, q.depth, list(q.jobs)) for q in seen.queues] == [("default", 1, [])]
    assert all(not q.jobs for q in seen.queues)
