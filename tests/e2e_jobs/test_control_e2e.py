"""Cancel, pause/resume, failure and retry of real jobs, driven and observed over HTTP."""

from __future__ import annotations

from .conftest import Stack


async def assert_refused(s: Stack, job_id: str, verb: str, state: str) -> None:
    """POST /jobs/{id}/{verb} is 409 FAILED_PRECONDITION naming the job's state."""
    r = await s.action(job_id, verb)
    assert r.status_code == 409, r.text
    assert r.headers["x-should-retry"] == "false"
    error = r.json()["error"]
    assert error["code"] == "FAILED_PRECONDITION"
    assert f"job {job_id} is {state}" in error["message"], error


async def test_cancel_in_every_reachable_non_terminal_state(one_slot: Stack) -> None:
    s = one_slot
    # PREEMPTED: a preemptible low-priority job is pushed out by a high-priority one.
    low = await s.submit(
        s.body(
            "low", env={"GATE": str(s.gate("low")), "GATE_STEP": "2"}, priority=1, preemptible=True
        )
    )
    await s.wait(low, "TRAINING", step=2)
    high = await s.submit(
        s.body("high", env={"GATE": str(s.gate("high")), "GATE_STEP": "3"}, priority=9)
    )
    await s.wait(low, "PREEMPTED")
    await s.wait(high, "TRAINING", step=3)
    # QUEUED: behind the running job on the single slot.
    queued = await s.submit(s.body("queued", priority=1))
    job = await s.job(queued)
    assert job["status"] == "QUEUED"
    assert job["queue_position"] == 1

    # Only running jobs pause, only paused ones resume, only failed/preempted ones retry.
    await assert_refused(s, queued, "pause", "QUEUED")
    await assert_refused(s, queued, "resume", "QUEUED")
    await assert_refused(s, queued, "retry", "QUEUED")
    await assert_refused(s, low, "pause", "PREEMPTED")
    await assert_refused(s, low, "resume", "PREEMPTED")
    for job_id, state in ((queued, "QUEUED"), (low, "PREEMPTED")):
        assert (await s.job(job_id))["status"] == state
        resp = await s.ok(job_id, "cancel", {"reason": f"not needed while {state}"})
        assert resp == {"job_id": job_id, "status": "CANCELLED", "message": resp["message"]}
        job = await s.job(job_id)
        assert job["status"] == "CANCELLED"
        assert f"not needed while {state}" in job["status_message"]
        assert job["completed_at"]
        await assert_refused(s, job_id, "cancel", "CANCELLED")

    # PAUSED: the high-priority job, paused with a checkpoint, then cancelled (no body at all).
    paused = await s.ok(high, "pause")
    assert paused["status"] == "PAUSED"
    assert (await s.ok(high, "cancel"))["status"] == "CANCELLED"
    await assert_refused(s, high, "cancel", "CANCELLED")
    await assert_refused(s, high, "resume", "CANCELLED")

    # TRAINING: the slot is free again, so a new job runs; cancelling kills its process.
    running = await s.submit(s.body("running", env={"GATE": str(s.gate("run")), "GATE_STEP": "1"}))
    await s.wait(running, "TRAINING", step=1)
    assert (await s.ok(running, "cancel", {}))["status"] == "CANCELLED"
    await assert_refused(s, running, "cancel", "CANCELLED")
    # The killed process never turns the cancelled job into anything else, and frees the slot.
    for gate in ("low", "high", "run"):
        s.gate(gate).write_text("")
    after = await s.submit(s.body("after", env={"TOTAL_STEPS": "2"}))
    await s.wait(after, "COMPLETED")
    for job_id in (queued, low, high, running):
        assert (await s.job(job_id))["status"] == "CANCELLED"

    # Terminal states other than CANCELLED refuse every action, naming the state.
    await assert_refused(s, after, "cancel", "COMPLETED")
    await assert_refused(s, after, "pause", "COMPLETED")
    await assert_refused(s, after, "resume", "COMPLETED")
    await assert_refused(s, after, "retry", "COMPLETED")


async def test_pause_resume_continues_from_the_checkpoint_step(two_slots: Stack) -> None:
    s = two_slots
    gate = s.gate("go")
    job_id = await s.submit(
        s.body("pausable", env={"TOTAL_STEPS": "15", "GATE": str(gate), "GATE_STEP": "7"})
    )
    await s.wait(job_id, "TRAINING", step=7)
    await assert_refused(s, job_id, "resume", "TRAINING")
    resp = await s.ok(job_id, "pause", {"save_checkpoint": True})
    assert resp["status"] == "PAUSED"
    assert "step 7" in resp["message"]
    job = await s.job(job_id)
    assert job["status"] == "PAUSED"
    assert job["checkpoints"][-1]["step"] == 7
    assert job["progress"]["current_step"] == 7
    await assert_refused(s, job_id, "pause", "PAUSED")
    await assert_refused(s, job_id, "retry", "PAUSED")

    gate.write_text("")
    resp = await s.ok(job_id, "resume")
    assert resp["status"] == "QUEUED"
    job = await s.wait(job_id, "COMPLETED")
    assert job["progress"]["current_step"] == 15
    assert job["retry_count"] == 0

    # The step counter did not restart: one point per step, 1..15, none repeated.
    losses = await s.losses(job_id)
    assert [step for step, _ in losses] == list(range(1, 16))
    log = await s.messages(job_id)
    assert log.count("custom script starting at step 1 of 15") == 1
    assert "custom script starting at step 8 of 15" in log
    assert any("PAUSED → QUEUED" in m for m in log)


async def test_paused_and_resumed_builtin_run_equals_uninterrupted_run(two_slots: Stack) -> None:
    s = two_slots
    hp = {"max_steps": 250, "seed": 11, "learning_rate": 0.01}
    straight = await s.submit(s.body("straight", custom=False, hyperparameters=hp))
    paused = await s.submit(s.body("paused", custom=False, hyperparameters=hp))
    await s.wait(paused, "TRAINING", check=lambda j: j["progress"]["current_step"] >= 5)
    resp = await s.ok(paused, "pause")
    assert resp["status"] == "PAUSED", resp
    job = await s.job(paused)
    at = job["checkpoints"][-1]["step"]
    assert 5 <= at < 250
    assert job["progress"]["current_step"] >= at
    await s.ok(paused, "resume", {"checkpoint_id": ""})
    await s.wait(paused, "COMPLETED", within=45)
    await s.wait(straight, "COMPLETED", within=45)

    resumed = await s.losses(paused)
    assert [step for step, _ in resumed] == list(range(1, 251))
    # Bit-for-bit: the same seed gives the same losses with or without the interruption.
    assert resumed == await s.losses(straight)
    resume_from = f"resuming from {job['checkpoints'][-1]['path']}"
    assert any(resume_from in m for m in await s.messages(paused))


async def test_failing_script_fails_with_exit_code_then_retry_makes_a_child(
    two_slots: Stack,
) -> None:
    s = two_slots
    parent = await s.submit(
        s.body("fails", env={"TOTAL_STEPS": "12", "FAIL_AT": "8", "CKPT_EVERY": "5"})
    )
    job = await s.wait(parent, "FAILED")
    assert job["error"]["code"] == "EXIT_CODE"
    assert "exit code 3" in job["error"]["message"]
    # The tail of the process output, so the user sees why without opening the logs.
    assert "boom: something went wrong" in job["error"]["message"]
    assert job["completed_at"]
    assert [c["step"] for c in job["checkpoints"]] == [5]
    await assert_refused(s, parent, "cancel", "FAILED")
    await assert_refused(s, parent, "pause", "FAILED")
    log = await s.logs(parent)
    assert any(e["level"] == "ERROR" and "exit code 3" in e["message"] for e in log)

    retry = await s.ok(parent, "retry", {})
    child = retry["job_id"]
    assert child != parent
    assert retry["parent_job_id"] == parent
    job = await s.wait(child, "COMPLETED")
    assert job["parent_job_id"] == parent
    assert job["retry_count"] == 1
    assert job["name"] == "fails"
    assert "custom script starting at step 6 of 12" in await s.messages(child)  # from step 5
    assert [p for p, _ in await s.losses(child)] == list(range(6, 13))
    children = [j for j in await s.all_jobs() if j["parent_job_id"] == parent]
    assert [j["job_id"] for j in children] == [child]
    # The parent stays FAILED; retrying the COMPLETED child is refused.
    assert (await s.job(parent))["status"] == "FAILED"
    await assert_refused(s, child, "retry", "COMPLETED")
