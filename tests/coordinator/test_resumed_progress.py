"""A job that resumes from a checkpoint shows that checkpoint's step from the start."""

from __future__ import annotations

from scaimind.v1 import coordinator_pb2

from .conftest import Client, Env, S


async def test_a_retried_job_starts_at_its_checkpoints_step(env: Env, client: Client) -> None:
    # Checkpoints every 5 steps, fails at step 8; the child resumes from the step-5 checkpoint.
    parent = await client.submit(
        env.custom(
            "fails",
            env={"TOTAL_STEPS": "12", "FAIL_AT": "8", "CKPT_EVERY": "5", "STEP_SECONDS": "0.2"},
        )
    )
    failed = await client.wait(parent, S.JOB_STATUS_FAILED, S.JOB_STATUS_COMPLETED)
    assert failed.status == S.JOB_STATUS_FAILED
    assert [c.step for c in failed.checkpoints] == [5]

    retry = await client.jobs.RetryJob(
        coordinator_pb2.RetryJobRequest(job_id=parent), metadata=client.md(), timeout=10
    )
    # Before its process reports anything (it takes 0.2 s a step), the child is at step 5 of 12,
    # not at 0: a dashboard never sees a resumed job fall back to the beginning.
    child = await client.get(retry.job_id)
    assert (child.progress.current_step, child.progress.total_steps) == (5, 12)
    steps = [child.progress.current_step]
    while child.status not in (S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED):
        # A new step, or the end (the last step may have been seen before the job completed).
        child = await client.wait(
            retry.job_id,
            check=lambda j: (
                j.progress.current_step != steps[-1]
                or j.status in (S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED)
            ),
        )
        steps.append(child.progress.current_step)
    assert child.status == S.JOB_STATUS_COMPLETED, child.error
    assert min(steps) == 5
    assert steps[-1] == 12
