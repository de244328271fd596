"""Job lifecycle through real gRPC calls: submit, run, pause/resume, cancel, fail, retry."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from scaimind.v1 import cluster_pb2, common_pb2, coordinator_pb2
from tests.conftest import wait_for

from .conftest import ONE_SLOT, Client, Env, S, write_corpus


async def test_builtin_trainer_completes_with_falling_loss(env: Env, client: Client) -> None:
    req = env.builtin("sft", hyperparameters={"max_steps": "30", "learning_rate": "0.01"})
    req.output_config.checkpoint_interval_steps = 10
    req.data_config.validation_split = 0.2
    job_id = await client.submit(req)
    job = await client.wait(job_id, S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED, within=60)
    assert job.status == S.JOB_STATUS_COMPLETED, job.error
    assert job.progress.current_step == 30
    assert job.progress.percent == 100.0
    assert [c.step for c in job.checkpoints] == [10, 20, 30]
    # Shown in the tenant's storage area, never as a server path.
    assert job.final_model_uri == f"scaidrive://tenant-a/jobs/{job_id}/model"
    assert env.host_path(job.final_model_uri).is_dir()
    assert all(c.path.startswith(f"scaidrive://tenant-a/jobs/{job_id}/") for c in job.checkpoints)
    assert job.started_at.seconds > 0
    assert job.completed_at.ToNanoseconds() >= job.started_at.ToNanoseconds()
    assert job.assigned_nodes == ["node-local"]

    metrics = await client.jobs.GetJobMetrics(
        coordinator_pb2.GetJobMetricsRequest(job_id=job_id), metadata=client.md()
    )
    loss = next(s for s in metrics.series if s.name == "loss")
    assert [p.step for p in loss.points] == list(range(1, 31))
    first = sum(p.value for p in loss.points[:5]) / 5
    last = sum(p.value for p in loss.points[-5:]) / 5
    assert last < first
    assert "loss" in metrics.latest

    entries = await client.entries(job_id, tail=10000)
    texts = [e.message for e in entries]
    assert any("HF_TRAINER" in t and "Llama-3-8B" in t for t in texts)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    sources = {e.source for e in entries}
    assert "coordinator" in sources
    states = [t for t in texts if "→" in t]
    order = [
        "PENDING → QUEUED",
        "QUEUED → SCHEDULING",
        "SCHEDULING → PREPARING",
        "PREPARING → TRAINING",
    ]
    for expected in order:
        assert any(t.startswith(expected) for t in states), (expected, states)
    assert any(t.startswith("TRAINING → EVALUATING") for t in states), states
    assert any(t.startswith("EVALUATING → EXPORTING") for t in states), states
    assert states[-1].startswith("EXPORTING → COMPLETED")


async def test_custom_script_completes_with_flat_metrics_and_downsampling(
    env: Env, client: Client
) -> None:
    req = env.custom("custom", env={"TOTAL_STEPS": "40", "STEP_SECONDS": "0"})
    job_id = await client.submit(req)
    job = await client.wait(job_id, S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED)
    assert job.status == S.JOB_STATUS_COMPLETED, job.error
    assert job.progress.total_steps == 40
    assert job.latest_metrics["accuracy"] == 1.0
    # keep_last_checkpoints unset: the coordinator's default keeps the newest five, and the
    # folders of the older ones are gone too.
    assert [c.step for c in job.checkpoints] == [20, 25, 30, 35, 40]
    assert job.checkpoints[0].checkpoint_id == f"{job_id}-step-000020"
    folder = env.host_path(job.checkpoints[0].path).parent

    async def pruned() -> bool:
        return sorted(p.name for p in folder.iterdir()) == [
            f"step-{s:06d}" for s in (20, 25, 30, 35, 40)
        ]

    await wait_for(pruned)

    resp = await client.jobs.GetJobMetrics(
        coordinator_pb2.GetJobMetricsRequest(job_id=job_id, max_points=6), metadata=client.md()
    )
    loss = next(s for s in resp.series if s.name == "loss")
    steps = [p.step for p in loss.points]
    assert len(steps) <= 6
    assert steps[0] == 1
    assert steps[-1] == 40
    assert steps == sorted(steps)
    # loss = 10/step: the maximum of the series (step 1) and the minimum (step 40) survive.
    assert max(p.value for p in loss.points) == 10.0

    entries = await client.entries(job_id, tail=1000, min_level=common_pb2.LOG_LEVEL_DEBUG)
    by_source = {(e.source, e.level) for e in entries}
    assert ("stdout", common_pb2.LOG_LEVEL_INFO) in by_source
    assert ("stderr", common_pb2.LOG_LEVEL_WARNING) in by_source
    assert ("trainer", common_pb2.LOG_LEVEL_DEBUG) in by_source


async def test_failing_script_then_retry_creates_child_from_checkpoint(
    env: Env, client: Client
) -> None:
    job_id = await client.submit(
        env.custom("fails", env={"TOTAL_STEPS": "12", "FAIL_AT": "8", "STEP_SECONDS": "0"})
    )
    job = await client.wait(job_id, S.JOB_STATUS_FAILED, S.JOB_STATUS_COMPLETED)
    assert job.status == S.JOB_STATUS_FAILED
    assert job.error.code == "EXIT_CODE"
    assert "exit code 3" in job.error.message
    assert "boom: something went wrong" in job.error.message
    assert job.completed_at.seconds > 0
    entries = await client.entries(job_id, tail=100)
    assert any(
        e.level == common_pb2.LOG_LEVEL_ERROR and "exit code 3" in e.message for e in entries
    )

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.CancelJob(
            coordinator_pb2.CancelJobRequest(job_id=job_id), metadata=client.md()
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "FAILED" in (err.value.details() or "")

    retry = await client.jobs.RetryJob(
        coordinator_pb2.RetryJobRequest(job_id=job_id), metadata=client.md()
    )
    assert retry.parent_job_id == job_id
    assert retry.job_id != job_id
    child = await client.wait(retry.job_id, S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED)
    assert child.status == S.JOB_STATUS_COMPLETED, child.error
    assert child.parent_job_id == job_id
    assert child.retry_count == 1
    out = [e.message for e in await client.entries(retry.job_id, tail=100)]
    assert "custom script starting at step 6 of 12" in out  # resumed from the step-5 checkpoint

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.RetryJob(
            coordinator_pb2.RetryJobRequest(job_id=retry.job_id), metadata=client.md()
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "COMPLETED" in (err.value.details() or "")


async def test_retry_with_new_resources_and_idempotency(env: Env, client: Client) -> None:
    job_id = await client.submit(
        env.custom("fails", env={"TOTAL_STEPS": "3", "FAIL_AT": "2", "STEP_SECONDS": "0"})
    )
    await client.wait(job_id, S.JOB_STATUS_FAILED)
    req = coordinator_pb2.RetryJobRequest(job_id=job_id, modify_resources=True)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.RetryJob(req, metadata=client.md())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "new_resource_config" in (err.value.details() or "")
    req.new_resource_config.gpu_count = 2
    first, second = await asyncio.gather(
        client.jobs.RetryJob(req, metadata=client.md(x_idempotency_key="retry-1")),
        client.jobs.RetryJob(req, metadata=client.md(x_idempotency_key="retry-1")),
    )
    assert first.job_id == second.job_id
    child = await client.get(first.job_id)
    assert child.resource_config.gpu_count == 2


async def test_pause_and_resume_continue_from_checkpoint(env: Env, client: Client) -> None:
    gate = env.tmp / "gate"
    job_id = await client.submit(
        env.custom(
            "pausable",
            env={"TOTAL_STEPS": "20", "GATE": str(gate), "GATE_STEP": "7", "STEP_SECONDS": "0"},
        )
    )
    await client.wait(job_id, S.JOB_STATUS_TRAINING, check=lambda j: j.progress.current_step == 7)
    resp = await client.jobs.PauseJob(
        coordinator_pb2.PauseJobRequest(job_id=job_id), metadata=client.md()
    )
    assert resp.status == S.JOB_STATUS_PAUSED
    job = await client.get(job_id)
    assert job.status == S.JOB_STATUS_PAUSED
    assert job.checkpoints[-1].step == 7
    assert job.assigned_nodes == ["node-local"]  # where it last ran
    nodes = await client.cluster.GetNode(
        cluster_pb2.GetNodeRequest(node_id="node-local"), metadata=client.md()
    )
    assert job_id not in nodes.running_job_ids

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.PauseJob(
            coordinator_pb2.PauseJobRequest(job_id=job_id), metadata=client.md()
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == f"job {job_id} is PAUSED; only running jobs can be paused"

    gate.write_text("go")
    resp = await client.jobs.ResumeJob(
        coordinator_pb2.ResumeJobRequest(job_id=job_id), metadata=client.md()
    )
    assert resp.status == S.JOB_STATUS_QUEUED
    job = await client.wait(job_id, S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED)
    assert job.status == S.JOB_STATUS_COMPLETED, job.error
    out = [e.message for e in await client.entries(job_id, tail=1000)]
    assert "custom script starting at step 8 of 20" in out
    assert any("PAUSED → QUEUED" in t for t in out)
    assert any("TRAINING → CHECKPOINTING" in t for t in out)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.ResumeJob(
            coordinator_pb2.ResumeJobRequest(job_id=job_id), metadata=client.md()
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "COMPLETED" in (err.value.details() or "")


async def test_pause_without_checkpoint_kills_and_resumes_from_named_checkpoint(
    env: Env, client: Client
) -> None:
    gate = env.tmp / "gate"
    job_id = await client.submit(
        env.custom(
            "kill-pause",
            env={"TOTAL_STEPS": "15", "GATE": str(gate), "GATE_STEP": "12", "STEP_SECONDS": "0"},
        )
    )
    await client.wait(job_id, S.JOB_STATUS_TRAINING, check=lambda j: j.progress.current_step == 12)
    resp = await client.jobs.PauseJob(
        coordinator_pb2.PauseJobRequest(job_id=job_id, save_checkpoint=False), metadata=client.md()
    )
    assert resp.status == S.JOB_STATUS_PAUSED
    job = await client.get(job_id)
    assert [c.step for c in job.checkpoints] == [5, 10]  # SIGKILL: no checkpoint at 12
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.ResumeJob(
            coordinator_pb2.ResumeJobRequest(job_id=job_id, checkpoint_id="nope"),
            metadata=client.md(),
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await client.get(job_id)).status == S.JOB_STATUS_PAUSED
    gate.write_text("go")
    await client.jobs.ResumeJob(
        coordinator_pb2.ResumeJobRequest(
            job_id=job_id, checkpoint_id=job.checkpoints[0].checkpoint_id
        ),
        metadata=client.md(),
    )
    await client.wait(job_id, S.JOB_STATUS_COMPLETED)
    out = [e.message for e in await client.entries(job_id, tail=1000)]
    assert "custom script starting at step 6 of 15" in out


async def test_cancel_in_each_non_terminal_state(env: Env, client: Client) -> None:
    far = time.time() + 3600
    queued = await client.submit(env.custom("queued", start_after=far))
    gate = env.tmp / "gate"
    running_req = env.custom(
        "running", env={"GATE": str(gate), "GATE_STEP": "2", "STEP_SECONDS": "0"}
    )
    running = await client.submit(running_req)
    paused = await client.submit(
        env.custom("paused", env={"GATE": str(gate), "GATE_STEP": "5", "STEP_SECONDS": "0"})
    )
    await client.wait(running, S.JOB_STATUS_TRAINING, check=lambda j: j.progress.current_step == 2)
    await client.wait(paused, S.JOB_STATUS_TRAINING, check=lambda j: j.progress.current_step == 5)
    await client.jobs.PauseJob(coordinator_pb2.PauseJobRequest(job_id=paused), metadata=client.md())
    assert (await client.get(queued)).status == S.JOB_STATUS_QUEUED

    for job_id in (queued, running, paused):
        resp = await client.jobs.CancelJob(
            coordinator_pb2.CancelJobRequest(job_id=job_id, reason="not needed"),
            metadata=client.md(),
        )
        assert resp.status == S.JOB_STATUS_CANCELLED
        job = await client.get(job_id)
        assert job.status == S.JOB_STATUS_CANCELLED
        assert "not needed" in job.status_message
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.jobs.CancelJob(
                coordinator_pb2.CancelJobRequest(job_id=job_id), metadata=client.md()
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (
            err.value.details()
            == f"job {job_id} is CANCELLED; only non-terminal jobs can be cancelled"
        )
    # The killed process never turns the cancelled job into anything else.
    gate.write_text("go")
    node = await wait_free(client)
    assert node.gpus_available == node.gpu_count
    assert (await client.get(running)).status == S.JOB_STATUS_CANCELLED


async def wait_free(client: Client) -> cluster_pb2.Node:
    """Wait until node-local runs nothing."""

    async def idle() -> cluster_pb2.Node | None:
        node = await client.cluster.GetNode(
            cluster_pb2.GetNodeRequest(node_id="node-local"), metadata=client.md()
        )
        return None if node.running_job_ids else node

    node: cluster_pb2.Node = await wait_for(idle, within=20)
    return node


async def test_max_runtime_fails_with_timeout(env: Env, client: Client) -> None:
    req = env.custom(
        "slow", env={"GATE": str(env.tmp / "never"), "GATE_STEP": "1", "STEP_SECONDS": "0"}
    )
    req.resource_config.max_runtime_seconds = 1
    job_id = await client.submit(req)
    job = await client.wait(job_id, S.JOB_STATUS_FAILED, within=20)
    assert job.error.code == "TIMEOUT"
    assert "max_runtime_seconds=1" in job.error.message
    log = [e.message for e in await client.entries(job_id, tail=100)]
    assert any("max_runtime_seconds=1 exceeded" in t for t in log)


async def test_max_queue_wait_fails_queued_job(env: Env, client: Client) -> None:
    req = env.custom("waits", start_after=time.time() + 3600)
    req.scheduling_config.max_queue_wait_seconds = 1
    job_id = await client.submit(req)
    job = await client.wait(job_id, S.JOB_STATUS_FAILED, within=10)
    assert job.error.code == "QUEUE_TIMEOUT"


async def test_builtin_pause_resume_matches_uninterrupted_run(env: Env, client: Client) -> None:
    hp = {"max_steps": "120", "seed": "7"}
    straight = await client.submit(env.builtin("straight", hyperparameters=hp))
    await client.wait(straight, S.JOB_STATUS_COMPLETED, within=60)
    paused = await client.submit(env.builtin("paused", hyperparameters=hp))
    await client.wait(paused, S.JOB_STATUS_TRAINING, check=lambda j: j.progress.current_step >= 1)
    resp = await client.jobs.PauseJob(
        coordinator_pb2.PauseJobRequest(job_id=paused), metadata=client.md()
    )
    assert resp.status == S.JOB_STATUS_PAUSED
    job = await client.get(paused)
    at = job.checkpoints[-1].step
    assert 1 <= at < 120
    await client.jobs.ResumeJob(
        coordinator_pb2.ResumeJobRequest(job_id=paused), metadata=client.md()
    )
    await client.wait(paused, S.JOB_STATUS_COMPLETED, within=60)

    async def losses(job_id: str) -> list[tuple[int, float]]:
        resp = await client.jobs.GetJobMetrics(
            coordinator_pb2.GetJobMetricsRequest(job_id=job_id, max_points=1000),
            metadata=client.md(),
        )
        return [(p.step, p.value) for p in next(s for s in resp.series if s.name == "loss").points]

    assert await losses(paused) == await losses(straight)
    log = [e.message for e in await client.entries(paused, tail=10000)]
    assert any(f"resuming from {job.checkpoints[-1].path}" in t for t in log)


async def test_start_after_delays_the_start(env: Env, client: Client) -> None:
    start_after = time.time() + 2.0
    job_id = await client.submit(
        env.custom("later", env={"TOTAL_STEPS": "2", "STEP_SECONDS": "0"}, start_after=start_after)
    )
    queued = await client.get(job_id)
    assert queued.status == S.JOB_STATUS_QUEUED
    assert queued.queue_position == 1
    assert queued.estimated_wait_seconds >= 1
    job = await client.wait(job_id, S.JOB_STATUS_COMPLETED)
    assert job.started_at.ToNanoseconds() / 1e9 >= start_after


async def test_cancel_while_checkpointing_or_evaluating_wins(env: Env, client: Client) -> None:
    gates = {name: env.tmp / name for name in ("go", "stop", "phase")}
    slow_stop = await client.submit(
        env.custom(
            "slow-stop",
            env={
                "GATE": str(gates["go"]),
                "GATE_STEP": "3",
                "STOP_GATE": str(gates["stop"]),
                "STEP_SECONDS": "0",
            },
        )
    )
    evaluating = await client.submit(
        env.custom(
            "evaluating",
            env={"TOTAL_STEPS": "2", "PHASE_GATE": str(gates["phase"]), "STEP_SECONDS": "0"},
        )
    )
    await client.wait(
        slow_stop, S.JOB_STATUS_TRAINING, check=lambda j: j.progress.current_step == 3
    )
    pause = asyncio.ensure_future(
        client.jobs.PauseJob(
            coordinator_pb2.PauseJobRequest(job_id=slow_stop), metadata=client.md()
        )
    )
    await client.wait(slow_stop, S.JOB_STATUS_CHECKPOINTING)
    await client.wait(evaluating, S.JOB_STATUS_EVALUATING)
    for job_id in (slow_stop, evaluating):
        resp = await client.jobs.CancelJob(
            coordinator_pb2.CancelJobRequest(job_id=job_id), metadata=client.md()
        )
        assert resp.status == S.JOB_STATUS_CANCELLED
    # The pause that was waiting for the checkpoint reports the cancellation, not PAUSED.
    assert (await pause).status == S.JOB_STATUS_CANCELLED
    for gate in gates.values():
        gate.write_text("")
    await wait_free(client)
    for job_id in (slow_stop, evaluating):
        job = await client.get(job_id)
        assert job.status == S.JOB_STATUS_CANCELLED
        log = [e.message for e in await client.entries(job_id, tail=1000)]
        assert any(t.startswith("process ") and "ended" in t for t in log)


async def test_pause_answers_before_the_callers_deadline(env: Env, client: Client) -> None:
    gates = {"go": env.tmp / "go", "stop": env.tmp / "stop"}
    job_id = await client.submit(
        env.custom(
            "slow-stop",
            env={
                "GATE": str(gates["go"]),
                "GATE_STEP": "2",
                "STOP_GATE": str(gates["stop"]),
                "STEP_SECONDS": "0",
            },
        )
    )
    await client.wait(job_id, check=lambda j: j.progress.current_step == 2)
    resp = await client.jobs.PauseJob(
        coordinator_pb2.PauseJobRequest(job_id=job_id), metadata=client.md(), timeout=1.5
    )
    assert resp.status == S.JOB_STATUS_CHECKPOINTING
    gates["stop"].write_text("")
    job = await client.wait(job_id, S.JOB_STATUS_PAUSED)
    assert job.checkpoints[-1].step == 2


async def test_source_removed_before_start_fails_preparing(env: Env) -> None:
    client = await env.start(nodes=ONE_SLOT)
    gate = env.tmp / "go"
    blocker = await client.submit(
        env.custom("blocker", env={"GATE": str(gate), "GATE_STEP": "1", "STEP_SECONDS": "0"})
    )
    await client.wait(blocker, S.JOB_STATUS_TRAINING)
    doomed = env.tmp / "doomed.jsonl"
    write_corpus(doomed)
    req = env.custom("needs-data")
    req.data_config.sources[0].path = "file://" + str(doomed)
    job_id = await client.submit(req)
    assert (await client.get(job_id)).status == S.JOB_STATUS_QUEUED
    doomed.unlink()
    gate.write_text("")
    job = await client.wait(job_id, S.JOB_STATUS_FAILED)
    assert job.error.code == "DATA_ERROR"
    assert "doomed.jsonl" in job.error.message
