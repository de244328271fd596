"""Evaluations end to end: HTTP → gateway → reference coordinator → evaluator process."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tests.conftest import auth, wait_for
from tests.e2e_ops.conftest import PREFIX, Ops


async def _evaluation(ops: Ops, eval_id: str, tenant: str = "tenant-a") -> dict[str, Any]:
    r = await ops.http.get(f"{PREFIX}/evaluations/{eval_id}", headers=auth(tenant))
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


async def test_trained_job_evaluated_to_numeric_scores(ops: Ops) -> None:
    job_id = (await ops.submit("tiny", max_steps=10, validation_split=0.2))["data"]["job_id"]
    job = await ops.wait_status(job_id, "COMPLETED", "FAILED", within=40)
    assert job["status"] == "COMPLETED", job
    body = {
        "job_id": job_id,
        "model_uri": job["final_model_uri"],
        "benchmarks": [
            {"name": "perplexity"},
            {"name": "token_accuracy", "num_samples": 5},
            {"name": "loss", "dataset": str(ops.corpus)},
        ],
    }
    headers = {**auth(), "Idempotency-Key": "eval-once"}
    r = await ops.http.post(f"{PREFIX}/evaluations", json=body, headers=headers)
    assert r.status_code == 201, r.text
    eval_id = r.json()["data"]["evaluation_id"]
    assert eval_id.startswith("eval_")
    # The same key answers the same evaluation.
    again = await ops.http.post(f"{PREFIX}/evaluations", json=body, headers=headers)
    assert again.json()["data"]["evaluation_id"] == eval_id

    async def done() -> dict[str, Any] | None:
        ev = await _evaluation(ops, eval_id)
        return ev if ev["status"] in ("COMPLETED", "FAILED") else None

    ev = await wait_for(done, within=40)
    assert ev["status"] == "COMPLETED", ev
    assert ev["job_id"] == job_id
    assert ev["created_at"]
    assert ev["completed_at"]
    by_name = {b["name"]: b for b in ev["benchmarks"]}
    assert [b["name"] for b in ev["benchmarks"]] == ["perplexity", "token_accuracy", "loss"]
    for b in ev["benchmarks"]:
        assert b["status"] == "COMPLETED", b
        assert isinstance(b["score"], float)
        assert math.isfinite(b["score"])
        assert b["score"] > 0
    ppl, loss = by_name["perplexity"], by_name["loss"]
    assert ppl["score"] > 1.0
    assert 0.0 < by_name["token_accuracy"]["score"] <= 1.0
    assert by_name["token_accuracy"]["metrics"]["num_samples"] == 5
    assert abs(math.exp(ppl["metrics"]["loss"]) - ppl["score"]) < 1e-6 * ppl["score"]
    assert loss["metrics"]["num_samples"] == 60  # the whole corpus named as its dataset

    # GET /evaluations lists the evaluation records themselves, scores included.
    listed = await ops.http.get(f"{PREFIX}/evaluations", headers=auth())
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"]["evaluations"] == [ev]
    # It is also a job labelled type=evaluation whose parent is the evaluated job.
    as_job = await ops.job(eval_id)
    assert as_job["labels"]["type"] == "evaluation"
    assert as_job["parent_job_id"] == job_id

    # Another tenant cannot see it; evaluate-only callers can.
    other = await ops.http.get(f"{PREFIX}/evaluations/{eval_id}", headers=auth("tenant-b"))
    assert other.status_code == 404
    evaluator = auth(role="tenant_user", scope="scaimind:evaluate")
    assert (
        await ops.http.get(f"{PREFIX}/evaluations/{eval_id}", headers=evaluator)
    ).status_code == 200
    viewer = auth(role="tenant_viewer")
    denied = await ops.http.post(f"{PREFIX}/evaluations", json=body, headers=viewer)
    assert denied.status_code == 403
    assert "scaimind:evaluate" in denied.json()["error"]["message"]

    # A named checkpoint of the job is evaluated too; one that does not exist is a 409.
    ckpt = job["checkpoints"][-1]["checkpoint_id"]
    named = {**body, "checkpoint_id": ckpt, "benchmarks": [{"name": "loss"}]}
    r = await ops.http.post(f"{PREFIX}/evaluations", json=named, headers=auth())
    assert r.status_code == 201, r.text
    missing = {**named, "checkpoint_id": f"{job_id}-step-999999"}
    r = await ops.http.post(f"{PREFIX}/evaluations", json=missing, headers=auth())
    assert r.status_code == 409
    assert "COMPLETED" in r.json()["error"]["message"]


async def test_evaluation_refusals(ops: Ops, tmp_path: Path) -> None:
    gate = tmp_path / "never"
    job_id = (await ops.submit("no-model", gate=gate))["data"]["job_id"]
    await ops.wait_status(job_id, "TRAINING")
    body = {"job_id": job_id, "benchmarks": [{"name": "loss"}]}

    # A model this coordinator cannot read is refused, never replaced by another one.
    for uri in ("scaiatlas://models/x", "s3://bucket/other", "final"):
        r = await ops.http.post(
            f"{PREFIX}/evaluations", json={**body, "model_uri": uri}, headers=auth()
        )
        assert r.status_code == 400, (uri, r.text)
        assert "model_uri" in r.json()["error"]["message"]

    # No final model and no checkpoint yet: 409 naming the state.
    r = await ops.http.post(f"{PREFIX}/evaluations", json=body, headers=auth())
    assert r.status_code == 409, r.text
    message = r.json()["error"]["message"]
    assert "TRAINING" in message
    assert "no model" in message

    # An unknown benchmark is a 400 listing the known ones.
    bad = {**body, "benchmarks": [{"name": "loss"}, {"name": "bleu"}]}
    r = await ops.http.post(f"{PREFIX}/evaluations", json=bad, headers=auth())
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "benchmarks[1].name" in message
    assert "bleu" in message
    for known in ("perplexity", "loss", "token_accuracy"):
        assert known in message

    # A directory that holds no model: the evaluation runs and fails per benchmark; it is
    # not retried (a new evaluation is submitted instead).
    empty = ops.root / "empty-model"
    empty.mkdir()
    not_a_model = {**body, "model_uri": empty.as_uri()}
    r = await ops.http.post(f"{PREFIX}/evaluations", json=not_a_model, headers=auth())
    assert r.status_code == 201, r.text
    eval_id = r.json()["data"]["evaluation_id"]
    failed = await ops.wait_status(eval_id, "FAILED", "COMPLETED")
    assert failed["status"] == "FAILED"
    ev = await _evaluation(ops, eval_id)
    assert ev["status"] == "FAILED"
    assert ev["benchmarks"][0]["status"] == "FAILED"
    assert "cannot load model" in ev["benchmarks"][0]["error"]
    r = await ops.http.post(f"{PREFIX}/jobs/{eval_id}/retry", json={}, headers=auth())
    assert r.status_code == 409
    assert "evaluation" in r.json()["error"]["message"]

    # Another tenant's job does not exist for the caller; nor does an unknown evaluation.
    r = await ops.http.post(f"{PREFIX}/evaluations", json=body, headers=auth("tenant-b"))
    assert r.status_code == 404
    r = await ops.http.get(f"{PREFIX}/evaluations/eval_0000000000000000", headers=auth())
    assert r.status_code == 404


async def test_evaluations_listed_newest_first_paged_and_by_job(ops: Ops) -> None:
    first = (await ops.submit("first", max_steps=10))["data"]["job_id"]
    second = (await ops.submit("second", max_steps=10))["data"]["job_id"]
    for job_id in (first, second):
        assert (await ops.wait_status(job_id, "COMPLETED", "FAILED", within=40))[
            "status"
        ] == "COMPLETED"
    submitted = []
    for job_id in (first, second, first):
        body = {"job_id": job_id, "benchmarks": [{"name": "loss", "num_samples": 5}]}
        r = await ops.http.post(f"{PREFIX}/evaluations", json=body, headers=auth())
        assert r.status_code == 201, r.text
        submitted.append(r.json()["data"]["evaluation_id"])

    async def all_done() -> list[dict[str, Any]] | None:
        r = await ops.http.get(f"{PREFIX}/evaluations", headers=auth())
        evals = r.json()["data"]["evaluations"]
        return evals if all(e["status"] in ("COMPLETED", "FAILED") for e in evals) else None

    evals = await wait_for(all_done, within=60)
    assert [e["evaluation_id"] for e in evals] == submitted[::-1]
    for e in evals:
        assert e["status"] == "COMPLETED", e
        (bench,) = e["benchmarks"]
        assert bench["name"] == "loss"
        assert bench["status"] == "COMPLETED"
        assert math.isfinite(bench["score"])
        assert bench["score"] > 0
        # The model actually scored: the job's final model, not what was (not) asked for.
        assert e["model_uri"] == f"scaidrive://tenant-a/jobs/{e['job_id']}/model"

    # Pages of 2, newest first, with the total; the token leads to the rest.
    r = await ops.http.get(f"{PREFIX}/evaluations", params={"page_size": 2}, headers=auth())
    page = r.json()["data"]
    assert [e["evaluation_id"] for e in page["evaluations"]] == submitted[:0:-1]
    assert page["total_count"] == 3
    assert page["next_page_token"]
    r = await ops.http.get(
        f"{PREFIX}/evaluations",
        params={"page_size": 2, "page_token": page["next_page_token"]},
        headers=auth(),
    )
    rest = r.json()["data"]
    assert [e["evaluation_id"] for e in rest["evaluations"]] == submitted[:1]
    assert rest["next_page_token"] == ""

    # Only one job's evaluations.
    r = await ops.http.get(f"{PREFIX}/evaluations", params={"job_id": first}, headers=auth())
    mine = r.json()["data"]
    assert [e["evaluation_id"] for e in mine["evaluations"]] == [submitted[2], submitted[0]]
    assert mine["total_count"] == 2

    # Another tenant sees none of them, not even by naming the job.
    for params in ({}, {"job_id": first}):
        r = await ops.http.get(f"{PREFIX}/evaluations", params=params, headers=auth("tenant-b"))
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"evaluations": [], "next_page_token": "", "total_count": 0}

    # A page token of another listing is refused, naming page_token.
    jobs = await ops.http.get(f"{PREFIX}/jobs", params={"page_size": 1}, headers=auth())
    token = jobs.json()["data"]["next_page_token"]
    r = await ops.http.get(f"{PREFIX}/evaluations", params={"page_token": token}, headers=auth())
    assert r.status_code == 400, r.text
    assert "page_token" in r.json()["error"]["message"]
