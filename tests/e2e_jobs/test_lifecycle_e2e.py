"""Submit → COMPLETED with a real loss curve, and listing/filtering/paging, all over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from tests.conftest import auth

from .conftest import FAR_FUTURE, PREFIX, Stack, parse_time


async def test_builtin_job_completes_with_falling_loss(two_slots: Stack) -> None:
    s = two_slots
    body = s.body(
        "sft-tiny",
        custom=False,
        hyperparameters={"max_steps": 40, "learning_rate": 0.01, "seed": 3},
        checkpoint_interval_steps=10,
        validation_split=0.2,
        labels={"team": "nlp"},
    )
    r = await s.http.post(f"{PREFIX}/jobs", json=body, headers=auth())
    assert r.status_code == 201, r.text
    submitted = r.json()["data"]
    assert submitted["status"] in ("QUEUED", "PENDING", "SCHEDULING")
    job_id = submitted["job_id"]

    job = await s.wait(job_id, "COMPLETED", within=45)
    assert job["name"] == "sft-tiny"
    assert job["tenant_id"] == "tenant-a"
    assert job["user_id"] == "user-1"
    assert job["labels"] == {"team": "nlp"}
    assert job["error"] is None or not job["error"]["code"]
    assert job["progress"]["current_step"] == job["progress"]["total_steps"] == 40
    assert job["progress"]["percent"] == 100.0
    assert {"loss", "learning_rate"} <= set(job["latest_metrics"])
    assert [c["step"] for c in job["checkpoints"]] == [10, 20, 30, 40]
    for ckpt in job["checkpoints"]:
        assert ckpt["checkpoint_id"]
        parse_time(ckpt["created_at"])
    # The tenant's storage area names it; the server's data dir never shows.
    assert job["final_model_uri"] == f"scaidrive://tenant-a/jobs/{job['job_id']}/model"
    assert s.host_path(job["final_model_uri"]).is_dir()
    assert str(s.root / "coordinator") not in json.dumps(job)
    assert job["assigned_nodes"] == ["node-a"]
    created = parse_time(job["created_at"])
    started = parse_time(job["started_at"])
    completed = parse_time(job["completed_at"])
    updated = parse_time(job["updated_at"])
    assert created <= started <= completed <= updated

    losses = await s.losses(job_id)
    assert [step for step, _ in losses] == list(range(1, 41))
    first = sum(v for _, v in losses[:5]) / 5
    last = sum(v for _, v in losses[-5:]) / 5
    assert last < first, (first, last)
    assert job["latest_metrics"]["loss"] == losses[-1][1]

    # The state machine as the log tells it, from PENDING to COMPLETED.
    transitions = [m for m in await s.messages(job_id) if "→" in m]
    assert transitions[0].startswith("PENDING → QUEUED"), transitions
    assert any(t.startswith("PREPARING → TRAINING") for t in transitions), transitions
    assert any(t.startswith("TRAINING → EVALUATING") for t in transitions), transitions
    assert transitions[-1].startswith("EXPORTING → COMPLETED"), transitions


async def test_list_filters_and_pages_over_many_jobs(two_slots: Stack) -> None:
    s = two_slots
    # 25 jobs held QUEUED by start_after; two groups by label; 5 cancelled, 3 completed.
    waiting = await asyncio.gather(
        *(
            s.submit(s.body(f"wait-{i}", start_after=FAR_FUTURE, labels={"group": "ab"[i % 2]}))
            for i in range(25)
        )
    )
    for job_id in waiting[:5]:
        assert (await s.ok(job_id, "cancel", {"reason": "trim"}))["status"] == "CANCELLED"
    done = [
        await s.submit(s.body(f"done-{i}", env={"TOTAL_STEPS": "2"}, labels={"group": "c"}))
        for i in range(3)
    ]
    for job_id in done:
        await s.wait(job_id, "COMPLETED")
    every = set(waiting) | set(done)

    page = await s.list_jobs()
    assert page["total_count"] == 28
    assert len(page["jobs"]) == 20  # default page_size
    assert page["next_page_token"]

    # Paging: each job exactly once, whatever the page size; total_count stays the same.
    for size in (1, 7, 28, 100):
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await s.list_jobs(page_size=size, page_token=token)
            assert page["total_count"] == 28
            assert len(page["jobs"]) <= size
            seen.extend(j["job_id"] for j in page["jobs"])
            pages += 1
            token = page["next_page_token"]
            if not token:
                break
        assert Counter(seen) == Counter(every), size
        assert pages == -(-28 // size)

    # Status filter, repeated: an OR of statuses.
    finished = await s.list_jobs(status=["CANCELLED", "COMPLETED"], page_size=100)
    assert finished["total_count"] == 8
    assert {j["job_id"] for j in finished["jobs"]} == set(waiting[:5]) | set(done)
    queued = await s.list_jobs(status="QUEUED", page_size=100)
    assert {j["job_id"] for j in queued["jobs"]} == set(waiting[5:])
    assert all(j["status"] == "QUEUED" for j in queued["jobs"])
    assert (await s.list_jobs(status="FAILED"))["total_count"] == 0

    # Label filter, alone and combined with a status filter and paging.
    group_a = {j for i, j in enumerate(waiting) if i % 2 == 0}
    listed_a = await s.all_jobs(label="group=a")
    assert {j["job_id"] for j in listed_a} == group_a
    assert all(j["labels"]["group"] == "a" for j in listed_a)
    small = await s.list_jobs(label="group=a", status="QUEUED", page_size=4)
    assert small["total_count"] == len([j for j in group_a if j not in waiting[:5]])
    assert len(small["jobs"]) == 4
    assert (await s.list_jobs(label="group=nope"))["total_count"] == 0

    # Bad filters are validation errors naming the parameter, not 500s.
    for params in ({"status": "DONE"}, {"page_size": 0}, {"page_size": 101}, {"label": "x"}):
        r = await s.http.get(f"{PREFIX}/jobs", params=params, headers=auth())
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
