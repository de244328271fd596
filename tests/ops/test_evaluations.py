"""POST/GET /evaluations against the scripted coordinator."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from scaimind.v1 import common_pb2, coordinator_pb2
from tests.conftest import auth
from tests.gateway.conftest import Failure
from tests.ops.conftest import PREFIX, Gateway, ts

SUBMIT: dict[str, Any] = {
    "job_id": "job_1",
    "model_uri": "/models/job_1/final",
    "checkpoint_id": "ckpt_40",
    "benchmarks": [
        {"name": "perplexity", "dataset": "file:///data/eval.jsonl", "num_samples": 50},
        {"name": "token_accuracy", "parameters": {"k": "1"}},
    ],
}


async def test_submit_evaluation_converts_and_answers_201(gw: Gateway) -> None:
    r = await gw.http.post(
        f"{PREFIX}/evaluations", json=SUBMIT, headers={**auth(), "Idempotency-Key": "ev-1"}
    )
    assert r.status_code == 201, r.text
    assert r.json() == {
        "data": {"evaluation_id": "eval_1", "status": "QUEUED", "message": "queued"}
    }
    call = gw.coordinator.last("SubmitEvaluation")
    req: Any = call.request
    assert (req.job_id, req.model_uri, req.checkpoint_id) == (
        "job_1",
        "/models/job_1/final",
        "ckpt_40",
    )
    assert [(b.name, b.dataset, b.num_samples, dict(b.parameters)) for b in req.benchmarks] == [
        ("perplexity", "file:///data/eval.jsonl", 50, {}),
        ("token_accuracy", "", 0, {"k": "1"}),
    ]
    assert call.metadata["x-idempotency-key"] == "ev-1"
    assert call.metadata["x-tenant-id"] == "tenant-a"
    gw.assert_signed_tokens(call.metadata)


async def test_submit_evaluation_minimal_body(gw: Gateway) -> None:
    body = {"job_id": "job_2", "model_uri": "m", "benchmarks": [{"name": "loss"}]}
    r = await gw.http.post(f"{PREFIX}/evaluations", json=body, headers=auth())
    assert r.status_code == 201, r.text
    call = gw.coordinator.last("SubmitEvaluation")
    assert call.request.checkpoint_id == ""  # type: ignore[attr-defined]
    assert "x-idempotency-key" not in call.metadata


async def test_submit_evaluation_unknown_benchmark_is_400(gw: Gateway) -> None:
    detail = (
        "benchmarks[0].name: unknown benchmark 'bleu' (known: loss, perplexity, token_accuracy)"
    )
    gw.coordinator.responses["SubmitEvaluation"] = Failure(grpc.StatusCode.INVALID_ARGUMENT, detail)
    body = {"job_id": "job_2", "model_uri": "m", "benchmarks": [{"name": "bleu"}]}
    r = await gw.http.post(f"{PREFIX}/evaluations", json=body, headers=auth())
    assert r.status_code == 400
    assert r.json()["error"] == {"code": "INVALID_ARGUMENT", "message": detail}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"job_id": None}, "job_id"),
        ({"job_id": ""}, "job_id"),
        ({"model_uri": 5}, "model_uri"),
        ({"benchmarks": None}, "benchmarks"),
        ({"benchmarks": []}, "benchmarks"),
        ({"benchmarks": [{"dataset": "d"}]}, "benchmarks.0.name"),
        ({"benchmarks": [{"name": ""}]}, "benchmarks.0.name"),
        ({"benchmarks": [{"name": "loss", "num_samples": -1}]}, "benchmarks.0.num_samples"),
        ({"benchmarks": [{"name": "loss", "parameters": {"k": 1}}]}, "benchmarks.0.parameters.k"),
        ({"benchmarks": [{"name": "loss", "bogus": 1}]}, "benchmarks.0.bogus"),
        ({"tenant_id": "tenant-b"}, "tenant_id"),
    ],
)
async def test_submit_evaluation_validation(
    gw: Gateway, change: dict[str, Any], field: str
) -> None:
    body = {**SUBMIT, **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = await gw.http.post(f"{PREFIX}/evaluations", json=body, headers=auth())
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["error"]["details"]], r.json()
    assert gw.coordinator.calls == []


async def test_submit_evaluation_bad_idempotency_key(gw: Gateway) -> None:
    r = await gw.http.post(
        f"{PREFIX}/evaluations", json=SUBMIT, headers={**auth(), "Idempotency-Key": "a b"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "Idempotency-Key"
    assert gw.coordinator.calls == []


async def test_list_evaluations_returns_evaluation_records_with_scores(gw: Gateway) -> None:
    scored = coordinator_pb2.Evaluation(
        evaluation_id="eval_1",
        job_id="job_1",
        model_uri="scaidrive://tenant-a/jobs/job_1/model",
        status=common_pb2.JOB_STATUS_COMPLETED,
        benchmarks=[
            coordinator_pb2.BenchmarkResult(
                name="perplexity", status=coordinator_pb2.BENCHMARK_STATUS_COMPLETED, score=3.25
            )
        ],
        created_at=ts(1_700_000_000),
        tenant_id="tenant-a",
    )
    gw.coordinator.responses["ListEvaluations"] = coordinator_pb2.ListEvaluationsResponse(
        evaluations=[scored], next_page_token="n", total_count=4
    )
    r = await gw.http.get(
        f"{PREFIX}/evaluations",
        params={"page_size": 1, "page_token": "t", "job_id": "job_1"},
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert set(data) == {"evaluations", "next_page_token", "total_count"}
    assert (data["next_page_token"], data["total_count"]) == ("n", 4)
    (record,) = data["evaluations"]
    # Each record is what GET /evaluations/{id} answers for the same evaluation.
    gw.coordinator.responses["GetEvaluation"] = scored
    one = await gw.http.get(f"{PREFIX}/evaluations/eval_1", headers=auth())
    assert record == one.json()["data"]
    assert (record["evaluation_id"], record["job_id"], record["status"]) == (
        "eval_1",
        "job_1",
        "COMPLETED",
    )
    assert [(b["name"], b["status"], b["score"]) for b in record["benchmarks"]] == [
        ("perplexity", "COMPLETED", 3.25)
    ]
    req: Any = gw.coordinator.last("ListEvaluations").request
    assert (req.job_id, req.page_size, req.page_token) == ("job_1", 1, "t")
    assert gw.coordinator.last("ListEvaluations").metadata["x-tenant-id"] == "tenant-a"
    assert "ListJobs" not in gw.rpcs()


async def test_list_evaluations_defaults_and_validation(gw: Gateway) -> None:
    assert (await gw.http.get(f"{PREFIX}/evaluations", headers=auth())).status_code == 200
    req: Any = gw.coordinator.last("ListEvaluations").request
    assert (req.job_id, req.page_size, req.page_token) == ("", 20, "")
    for bad in (
        {"page_size": 0},
        {"page_size": 101},
        {"page_token": "x" * 1025},
        {"job_id": "j" * 129},
    ):
        r = await gw.http.get(f"{PREFIX}/evaluations", params=bad, headers=auth())
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == next(iter(bad))
    assert gw.rpcs() == ["ListEvaluations"]


async def test_get_evaluation_full_record(gw: Gateway) -> None:
    gw.coordinator.responses["GetEvaluation"] = coordinator_pb2.Evaluation(
        evaluation_id="eval_1",
        job_id="job_1",
        model_uri="/models/job_1/final",
        checkpoint_id="ckpt_40",
        status=common_pb2.JOB_STATUS_COMPLETED,
        benchmarks=[
            coordinator_pb2.BenchmarkResult(
                name="perplexity",
                dataset="file:///data/eval.jsonl",
                num_samples=50,
                parameters={"k": "1"},
                status=coordinator_pb2.BENCHMARK_STATUS_COMPLETED,
                score=12.5,
                metrics={"loss": 2.5},
            ),
            coordinator_pb2.BenchmarkResult(
                name="token_accuracy",
                status=coordinator_pb2.BENCHMARK_STATUS_FAILED,
                error="dataset is empty",
            ),
        ],
        created_at=ts(1_700_000_000),
        completed_at=ts(1_700_000_060),
        tenant_id="tenant-a",
    )
    r = await gw.http.get(f"{PREFIX}/evaluations/eval_1", headers=auth())
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert {k: data[k] for k in ("evaluation_id", "job_id", "model_uri", "checkpoint_id")} == {
        "evaluation_id": "eval_1",
        "job_id": "job_1",
        "model_uri": "/models/job_1/final",
        "checkpoint_id": "ckpt_40",
    }
    assert data["status"] == "COMPLETED"
    assert data["created_at"] == "2023-11-14T22:13:20.000Z"
    assert data["completed_at"] == "2023-11-14T22:14:20.000Z"
    assert data["benchmarks"] == [
        {
            "name": "perplexity",
            "dataset": "file:///data/eval.jsonl",
            "num_samples": 50,
            "parameters": {"k": "1"},
            "status": "COMPLETED",
            "score": 12.5,
            "metrics": {"loss": 2.5},
            "error": "",
        },
        {
            "name": "token_accuracy",
            "dataset": "",
            "num_samples": 0,
            "parameters": {},
            "status": "FAILED",
            "score": 0.0,
            "metrics": {},
            "error": "dataset is empty",
        },
    ]
    assert gw.coordinator.last("GetEvaluation").request.evaluation_id == "eval_1"  # type: ignore[attr-defined]


async def test_get_evaluation_of_another_tenant_is_404(gw: Gateway) -> None:
    gw.coordinator.responses["GetEvaluation"] = Failure(
        grpc.StatusCode.NOT_FOUND, "evaluation eval_9 not found"
    )
    r = await gw.http.get(f"{PREFIX}/evaluations/eval_9", headers=auth("tenant-b"))
    assert r.status_code == 404
    assert gw.coordinator.last("GetEvaluation").metadata["x-tenant-id"] == "tenant-b"
