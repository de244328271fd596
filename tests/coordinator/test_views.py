"""Job views: ListJobs answers summaries (BASIC), GetJob the full job (FULL), either on request."""

from __future__ import annotations

import grpc
import pytest

from scaimind.v1 import common_pb2, coordinator_pb2
from tests.coordinator.conftest import Client, Env, S

BASIC = coordinator_pb2.JOB_VIEW_BASIC
FULL = coordinator_pb2.JOB_VIEW_FULL


async def _trained(env: Env, client: Client) -> common_pb2.Job:
    req = env.custom("many", env={"TOTAL_STEPS": "40", "CKPT_EVERY": "5", "STEP_SECONDS": "0"})
    req.output_config.keep_last_checkpoints = 50
    job_id = await client.submit(req)
    job = await client.wait(job_id, S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED)
    assert job.status == S.JOB_STATUS_COMPLETED, job.error
    return job


async def test_list_is_basic_and_get_is_full_unless_asked(env: Env, client: Client) -> None:
    job = await _trained(env, client)
    steps = [5, 10, 15, 20, 25, 30, 35, 40]
    # GetJob without a view: FULL, every checkpoint plus the summary fields.
    assert [c.step for c in job.checkpoints] == steps
    assert job.checkpoint_count == 8
    assert job.latest_checkpoint == job.checkpoints[-1]

    listed = await client.jobs.ListJobs(coordinator_pb2.ListJobsRequest(), metadata=client.md())
    (summary,) = listed.jobs
    assert list(summary.checkpoints) == []
    assert summary.checkpoint_count == 8
    assert summary.latest_checkpoint == job.checkpoints[-1]
    assert summary.latest_checkpoint.step == 40
    # Everything else is the same as in the full job.
    trimmed = common_pb2.Job()
    trimmed.CopyFrom(job)
    del trimmed.checkpoints[:]
    assert summary == trimmed

    full_list = await client.jobs.ListJobs(
        coordinator_pb2.ListJobsRequest(view=FULL), metadata=client.md()
    )
    assert full_list.jobs[0] == job
    basic = await client.jobs.GetJob(
        coordinator_pb2.GetJobRequest(job_id=job.job_id, view=BASIC), metadata=client.md()
    )
    assert basic == summary
    explicit = await client.jobs.GetJob(
        coordinator_pb2.GetJobRequest(job_id=job.job_id, view=FULL), metadata=client.md()
    )
    assert explicit == job


async def test_job_without_checkpoints_has_no_latest(env: Env, client: Client) -> None:
    job_id = await client.submit(env.builtin("queued", start_after=4_000_000_000))
    listed = await client.jobs.ListJobs(coordinator_pb2.ListJobsRequest(), metadata=client.md())
    (summary,) = listed.jobs
    assert summary.job_id == job_id
    assert summary.checkpoint_count == 0
    assert not summary.HasField("latest_checkpoint")


@pytest.mark.parametrize("view", [3, 99])
async def test_unknown_view_is_invalid_argument(client: Client, view: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as listed:
        await client.jobs.ListJobs(
            coordinator_pb2.ListJobsRequest(view=view),  # type: ignore[arg-type]
            metadata=client.md(),
        )
    assert listed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (listed.value.details() or "").startswith("view: ")
    with pytest.raises(grpc.aio.AioRpcError) as got:
        await client.jobs.GetJob(
            coordinator_pb2.GetJobRequest(job_id="job_x", view=view),  # type: ignore[arg-type]
            metadata=client.md(),
        )
    assert got.value.code() is grpc.StatusCode.INVALID_ARGUMENT
