"""Priority order, queue positions and preemption with automatic retry on a 1-slot inventory."""

from __future__ import annotations

import itertools

from tests.conftest import auth, wait_for

from .conftest import PREFIX, Stack, parse_time


async def test_higher_priority_queued_later_starts_first(one_slot: Stack) -> None:
    s = one_slot
    go = s.gate("go")
    gated = {"GATE": str(go), "GATE_STEP": "1", "TOTAL_STEPS": "3"}
    blocker = await s.submit(s.body("blocker", env=gated, priority=5))
    await s.wait(blocker, "TRAINING", step=1)
    low = await s.submit(s.body("low", env=gated, priority=1))
    mid = await s.submit(s.body("mid", env=gated, priority=5))
    high = await s.submit(s.body("high", env=gated, priority=9))

    jobs = {j: await s.job(j) for j in (low, mid, high)}
    assert [jobs[j]["queue_position"] for j in (high, mid, low)] == [1, 2, 3]
    assert all(jobs[j]["status"] == "QUEUED" for j in jobs)
    assert jobs[high]["queue_name"] == "default"
    waits = [jobs[j]["estimated_wait_seconds"] for j in (high, mid, low)]
    assert waits == sorted(waits), waits
    # Non-preemptible: the running job keeps its slot although higher-priority work waits.
    assert (await s.job(blocker))["status"] == "TRAINING"

    r = await s.http.get(f"{PREFIX}/queue", params={"queue_name": "default"}, headers=auth())
    assert r.status_code == 200, r.text
    queue = r.json()["data"]["queues"][0]
    assert [(q["job_id"], q["position"], q["priority"]) for q in queue["jobs"]] == [
        (high, 1, 9),
        (mid, 2, 5),
        (low, 3, 1),
    ]
    assert queue["depth"] == 3
    assert queue["running"] == 1

    go.write_text("")
    done = [await s.wait(j, "COMPLETED") for j in (blocker, high, mid, low)]
    starts = [parse_time(j["started_at"]) for j in done]
    assert starts == sorted(starts)
    # One slot: each job started only after the one before it had finished.
    for before, after in itertools.pairwise(done):
        assert parse_time(before["completed_at"]) <= parse_time(after["started_at"])


async def test_preempted_job_checkpoints_and_its_automatic_retry_completes(
    one_slot: Stack,
) -> None:
    s = one_slot
    low_gate, high_gate = s.gate("low"), s.gate("high")
    low = await s.submit(
        s.body(
            "low",
            env={"GATE": str(low_gate), "GATE_STEP": "4", "TOTAL_STEPS": "8"},
            priority=1,
            preemptible=True,
            max_retries=1,
        )
    )
    await s.wait(low, "TRAINING", step=4)
    high = await s.submit(
        s.body(
            "high", env={"GATE": str(high_gate), "GATE_STEP": "1", "TOTAL_STEPS": "3"}, priority=8
        )
    )
    preempted = await s.wait(low, "PREEMPTED")
    assert preempted["checkpoints"][-1]["step"] == 4  # written on the preemption signal
    assert "preempted" in preempted["status_message"]
    await s.wait(high, "TRAINING", step=1)

    async def child_of_low() -> dict[str, object] | None:
        jobs = [j for j in await s.all_jobs() if j["parent_job_id"] == low]
        return jobs[0] if len(jobs) == 1 else None

    child = await wait_for(child_of_low, within=10)
    child_id = str(child["job_id"])
    assert child["retry_count"] == 1
    assert child["status"] == "QUEUED"  # the high-priority job holds the only slot
    assert child["name"] == "low"
    assert any(f"automatically retried as job {child_id}" in m for m in await s.messages(low))

    high_gate.write_text("")
    low_gate.write_text("")
    done_high = await s.wait(high, "COMPLETED")
    done_child = await s.wait(child_id, "COMPLETED")
    assert parse_time(done_high["completed_at"]) <= parse_time(done_child["started_at"])
    assert "custom script starting at step 5 of 8" in await s.messages(child_id)
    assert [p for p, _ in await s.losses(child_id)] == [5, 6, 7, 8]
    # The preempted parent stays PREEMPTED (its child carries on); max_retries is used up.
    assert (await s.job(low))["status"] == "PREEMPTED"
    assert len([j for j in await s.all_jobs() if j["parent_job_id"] == low]) == 1
