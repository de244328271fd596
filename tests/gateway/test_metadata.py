"""What the gateway sends the coordinator: metadata, deadlines, converted requests (§4, §5.1)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from scaimind.v1 import common_pb2, coordinator_pb2
from tests.conftest import API_SECRET, auth
from tests.gateway.conftest import PREFIX, Gateway

TIMEOUT_S = 3.0  # settings_for's grpc_timeout_s

# Many small tests: one gateway for the module (shared_gateway resets the script per test).
pytestmark = pytest.mark.asyncio(loop_scope="module")

FULL_SUBMIT: dict[str, Any] = {
    "name": "llama-sft",
    "training_config": {
        "training_type": "LORA",
        "base_model": {
            "model_id": "meta-llama/Llama-3-8B",
            "revision": "main",
            "source": "hf",
            "tokenizer_id": "tok",
            "dtype": "bfloat16",
            "trust_remote_code": True,
            "model_kwargs": {"attn": "flash"},
        },
        "framework": {
            "type": "DEEPSPEED",
            "config": {"zero_stage": "3"},
            "distributed": {"world_size": 8, "strategy": "zero3", "config": {"a": "b"}},
        },
        "hyperparameters": {
            "learning_rate": 0.0002,
            "max_steps": 50,
            "packing": True,
            "gradient_checkpointing": False,
            "scheduler": "cosine",
        },
        "environment": {"NCCL_DEBUG": "INFO"},
        "resume_from_checkpoint": "ckpt_3",
        "max_retries": 2,
        "priority": 7,
    },
    "data_config": {
        "sources": [
            {
                "path": "scaidrive://tenant/train.jsonl",
                "type": "train",
                "format": "jsonl",
                "split": "train",
                "columns": ["prompt", "completion"],
                "sample_rate": 0.5,
                "weight": 2.0,
            },
            {"path": "hf://org/ds", "format": "parquet"},
            {"path": "/plain/eval.csv", "format": "csv", "type": "eval"},
        ],
        "preprocess": {
            "tokenizer_id": "tok",
            "chat_template": "chatml",
            "add_bos": True,
            "add_eos": False,
            "padding": "longest",
            "truncation": True,
            "field_mapping": {"instruction": "prompt"},
        },
        "max_seq_length": 2048,
        "batch_size": 4,
        "gradient_accumulation_steps": 8,
        "num_workers": 2,
        "pin_memory": True,
        "validation_split": 0.1,
        "seed": 1234567890123,
    },
    "resource_config": {
        "gpu_count": 4,
        "gpu_type": "A100",
        "num_nodes": 2,
        "cpu_cores": 16,
        "memory_gb": 128.5,
        "max_runtime_seconds": 86400,
        "node_selector": {"zone": "eu"},
    },
    "output_config": {
        "output_path": "/out",
        "checkpoint_interval_steps": 100,
        "keep_last_checkpoints": 3,
        "save_final_model": False,
        "export_format": "GGUF",
        "merge_adapter": True,
        "register_model": True,
        "model_name": "my-model",
    },
    "scheduling_config": {
        "queue_name": "batch",
        "preemptible": True,
        "max_queue_wait_seconds": 3600,
        "start_after": "2030-01-02T03:04:05.250+02:00",
        "node_affinity": ["node-1", "node-2"],
    },
    "labels": {"team": "nlp", "type": "training"},
}

MINIMAL_SUBMIT: dict[str, Any] = {
    "name": "demo",
    "training_config": {"training_type": "SFT", "base_model": {"model_id": "m"}},
    "data_config": {"sources": [{"path": "file:///data/train.jsonl"}]},
    "resource_config": {"gpu_count": 1},
}


# --- metadata and deadlines -------------------------------------------------------------------

ROUTES: list[tuple[str, str, str, Any]] = [
    ("GET", "/jobs", "ListJobs", None),
    ("POST", "/jobs", "SubmitJob", MINIMAL_SUBMIT),
    ("GET", "/jobs/job_1", "GetJob", None),
    ("POST", "/jobs/job_1/cancel", "CancelJob", None),
    ("POST", "/jobs/job_1/pause", "PauseJob", None),
    ("POST", "/jobs/job_1/resume", "ResumeJob", None),
    ("POST", "/jobs/job_1/retry", "RetryJob", None),
]


@pytest.mark.parametrize(("method", "path", "rpc", "body"), ROUTES, ids=[r[2] for r in ROUTES])
async def test_every_call_carries_metadata_and_a_deadline(
    shared_gateway: Gateway, method: str, path: str, rpc: str, body: Any
) -> None:
    client, servicer = shared_gateway
    r = await client.request(
        method, f"{PREFIX}{path}", json=body, headers=auth("tenant-x", user="alice")
    )
    assert r.status_code in (200, 201), r.text
    call = servicer.last(rpc)
    assert call.metadata["x-api-secret"] == API_SECRET
    assert call.metadata["x-tenant-id"] == "tenant-x"
    assert call.metadata["x-user-id"] == "alice"
    assert call.metadata["x-request-id"] == r.headers["x-request-id"]
    assert "x-idempotency-key" not in call.metadata
    # Downstream tokens only where data or model artefacts are touched (§4), and never the
    # caller's own bearer token.
    tokens = {"x-scaidrive-token", "x-scaiatlas-token"}
    expected = {"x-api-secret", "x-tenant-id", "x-user-id", "x-request-id"}
    if rpc in ("SubmitJob", "ResumeJob", "RetryJob"):
        expected |= tokens
    assert {k for k in call.metadata if k.startswith("x-") or k == "authorization"} == expected
    caller_token = r.request.headers["authorization"].removeprefix("Bearer ")
    assert caller_token not in call.metadata.values()
    assert call.time_remaining is not None
    # The deadline travels as a rounded grpc-timeout header, so allow a hair of slack.
    assert 0 < call.time_remaining <= TIMEOUT_S + 0.1
    assert [c.rpc for c in servicer.calls] == [rpc]


@pytest.mark.parametrize(
    ("path", "rpc", "body"),
    [("/jobs", "SubmitJob", MINIMAL_SUBMIT), ("/jobs/job_1/retry", "RetryJob", {})],
)
async def test_idempotency_key_is_forwarded(
    shared_gateway: Gateway, path: str, rpc: str, body: Any
) -> None:
    client, servicer = shared_gateway
    r = await client.post(
        f"{PREFIX}{path}", json=body, headers={**auth(), "Idempotency-Key": f"key-{rpc}"}
    )
    assert r.status_code in (200, 201), r.text
    assert servicer.last(rpc).metadata["x-idempotency-key"] == f"key-{rpc}"


async def test_malformed_idempotency_key_is_rejected(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.post(
        f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers={**auth(), "Idempotency-Key": "a b"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "Idempotency-Key"
    assert servicer.calls == []


async def test_caller_supplied_metadata_headers_are_not_forwarded(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.get(
        f"{PREFIX}/jobs",
        headers={
            **auth("tenant-a", user="bob"),
            "x-tenant-id": "tenant-evil",
            "x-user-id": "root",
            "x-api-secret": "guess",
        },
    )
    assert r.status_code == 200
    md = servicer.last("ListJobs").metadata
    assert md["x-tenant-id"] == "tenant-a"
    assert md["x-user-id"] == "bob"
    assert md["x-api-secret"] == API_SECRET


# --- submit conversion ------------------------------------------------------------------------


async def test_submit_converts_every_nested_config(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.post(f"{PREFIX}/jobs", json=FULL_SUBMIT, headers=auth())
    assert r.status_code == 201, r.text
    req: coordinator_pb2.SubmitJobRequest = servicer.last("SubmitJob").request  # type: ignore[assignment]
    assert req.name == "llama-sft"
    tc = req.training_config
    assert tc.training_type == common_pb2.TRAINING_TYPE_LORA
    bm = tc.base_model
    assert (bm.model_id, bm.revision, bm.source, bm.tokenizer_id, bm.dtype) == (
        "meta-llama/Llama-3-8B",
        "main",
        "hf",
        "tok",
        "bfloat16",
    )
    assert bm.trust_remote_code is True
    assert dict(bm.model_kwargs) == {"attn": "flash"}
    assert tc.framework.type == common_pb2.FRAMEWORK_TYPE_DEEPSPEED
    assert dict(tc.framework.config) == {"zero_stage": "3"}
    dist = tc.framework.distributed
    assert (dist.world_size, dist.backend, dist.strategy) == (8, "nccl", "zero3")
    assert dict(dist.config) == {"a": "b"}
    assert dict(tc.hyperparameters) == {
        "learning_rate": "0.0002",
        "max_steps": "50",
        "packing": "true",
        "gradient_checkpointing": "false",
        "scheduler": "cosine",
    }
    assert dict(tc.environment) == {"NCCL_DEBUG": "INFO"}
    assert tc.resume_from_checkpoint == "ckpt_3"
    assert tc.max_retries == 2
    assert tc.HasField("priority")
    assert tc.priority == 7

    dc = req.data_config
    assert [s.path for s in dc.sources] == [
        "scaidrive://tenant/train.jsonl",
        "hf://org/ds",
        "/plain/eval.csv",
    ]
    assert [s.format for s in dc.sources] == [
        common_pb2.DATA_FORMAT_JSONL,
        common_pb2.DATA_FORMAT_PARQUET,
        common_pb2.DATA_FORMAT_CSV,
    ]
    first = dc.sources[0]
    assert (first.type, first.split, list(first.columns)) == (
        "train",
        "train",
        ["prompt", "completion"],
    )
    assert (first.sample_rate, first.weight) == (0.5, 2.0)
    pp = dc.preprocess
    assert (pp.tokenizer_id, pp.chat_template, pp.padding) == ("tok", "chatml", "longest")
    assert pp.HasField("add_bos")
    assert pp.add_bos is True
    assert pp.HasField("add_eos")
    assert pp.add_eos is False
    assert pp.truncation is True
    assert dict(pp.field_mapping) == {"instruction": "prompt"}
    assert (dc.max_seq_length, dc.batch_size, dc.gradient_accumulation_steps) == (2048, 4, 8)
    assert (dc.num_workers, dc.pin_memory, dc.validation_split) == (2, True, 0.1)
    assert dc.seed == 1234567890123

    rc = req.resource_config
    assert (rc.gpu_count, rc.gpu_type, rc.num_nodes, rc.cpu_cores) == (4, "A100", 2, 16)
    assert (rc.memory_gb, rc.max_runtime_seconds) == (128.5, 86400)
    assert dict(rc.node_selector) == {"zone": "eu"}

    oc = req.output_config
    assert req.HasField("output_config")
    assert (oc.output_path, oc.checkpoint_interval_steps, oc.keep_last_checkpoints) == (
        "/out",
        100,
        3,
    )
    assert oc.HasField("save_final_model")
    assert oc.save_final_model is False
    assert oc.export_format == common_pb2.EXPORT_FORMAT_GGUF
    assert (oc.merge_adapter, oc.register_model, oc.model_name) == (True, True, "my-model")

    sc = req.scheduling_config
    assert (sc.queue_name, sc.preemptible, sc.max_queue_wait_seconds) == ("batch", True, 3600)
    assert sc.start_after.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 2, 1, 4, 5, 250000, UTC)
    assert list(sc.node_affinity) == ["node-1", "node-2"]
    assert dict(req.labels) == {"team": "nlp", "type": "training"}


async def test_submit_minimal_applies_documented_defaults(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.post(f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers=auth())
    assert r.status_code == 201, r.text
    req: coordinator_pb2.SubmitJobRequest = servicer.last("SubmitJob").request  # type: ignore[assignment]
    tc = req.training_config
    assert tc.framework.type == common_pb2.FRAMEWORK_TYPE_HF_TRAINER
    assert tc.priority == 5
    assert tc.max_retries == 0
    assert not tc.framework.HasField("distributed")
    assert req.data_config.gradient_accumulation_steps == 1
    assert req.data_config.sources[0].format == common_pb2.DATA_FORMAT_UNSPECIFIED
    assert not req.data_config.HasField("preprocess")
    assert req.resource_config.num_nodes == 1
    assert not req.HasField("output_config")
    assert not req.HasField("scheduling_config")
    assert dict(req.labels) == {}


async def test_distributed_backend_defaults_to_nccl(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    body = {
        **MINIMAL_SUBMIT,
        "training_config": {
            **MINIMAL_SUBMIT["training_config"],
            "framework": {"type": "FSDP", "distributed": {}},
        },
    }
    r = await client.post(f"{PREFIX}/jobs", json=body, headers=auth())
    assert r.status_code == 201, r.text
    fw = servicer.last("SubmitJob").request.training_config.framework  # type: ignore[attr-defined]
    assert fw.type == common_pb2.FRAMEWORK_TYPE_FSDP
    assert fw.HasField("distributed")
    assert fw.distributed.backend == "nccl"


async def test_custom_framework_with_script(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    body = {
        **MINIMAL_SUBMIT,
        "training_config": {
            **MINIMAL_SUBMIT["training_config"],
            "framework": {"type": "CUSTOM", "custom_script_path": "scripts/train.py"},
        },
    }
    r = await client.post(f"{PREFIX}/jobs", json=body, headers=auth())
    assert r.status_code == 201, r.text
    fw = servicer.last("SubmitJob").request.training_config.framework  # type: ignore[attr-defined]
    assert fw.type == common_pb2.FRAMEWORK_TYPE_CUSTOM
    assert fw.custom_script_path == "scripts/train.py"


@pytest.mark.parametrize(
    ("start_after", "expected"),
    [
        ("2030-01-01T00:00:00Z", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T00:00:00.5-05:30", datetime(2030, 1, 1, 5, 30, 0, 500000, UTC)),
    ],
)
async def test_start_after_becomes_a_utc_timestamp(
    shared_gateway: Gateway, start_after: str, expected: datetime
) -> None:
    client, servicer = shared_gateway
    body = {**MINIMAL_SUBMIT, "scheduling_config": {"start_after": start_after}}
    r = await client.post(f"{PREFIX}/jobs", json=body, headers=auth())
    assert r.status_code == 201, r.text
    sc = servicer.last("SubmitJob").request.scheduling_config  # type: ignore[attr-defined]
    assert sc.start_after.ToDatetime(tzinfo=UTC) == expected


# --- list, actions ----------------------------------------------------------------------------


async def test_list_filters_and_paging(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.get(
        f"{PREFIX}/jobs",
        params=[
            ("status", "QUEUED"),
            ("status", "TRAINING"),
            ("status", "PREEMPTED"),
            ("label", "team=nlp"),
            ("label", "expr=a=b"),
            ("label", "empty="),
            ("page_size", "7"),
            ("page_token", "opaque-token=="),
            ("order_by", "priority desc"),
        ],
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    req: coordinator_pb2.ListJobsRequest = servicer.last("ListJobs").request  # type: ignore[assignment]
    assert list(req.status_filter) == [
        common_pb2.JOB_STATUS_QUEUED,
        common_pb2.JOB_STATUS_TRAINING,
        common_pb2.JOB_STATUS_PREEMPTED,
    ]
    assert dict(req.label_filter) == {"team": "nlp", "expr": "a=b", "empty": ""}
    assert (req.page_size, req.page_token, req.order_by) == (7, "opaque-token==", "priority desc")


async def test_list_defaults(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.get(f"{PREFIX}/jobs", headers=auth())
    assert r.status_code == 200
    assert r.json() == {"data": {"jobs": [], "next_page_token": "", "total_count": 0}}
    req: coordinator_pb2.ListJobsRequest = servicer.last("ListJobs").request  # type: ignore[assignment]
    assert (list(req.status_filter), dict(req.label_filter)) == ([], {})
    assert (req.page_size, req.page_token, req.order_by) == (20, "", "")
    assert req.view == coordinator_pb2.JOB_VIEW_BASIC


async def test_job_views_are_passed_on(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    asked = [
        ("jobs", {}, "ListJobs", coordinator_pb2.JOB_VIEW_BASIC),
        ("jobs", {"view": "FULL"}, "ListJobs", coordinator_pb2.JOB_VIEW_FULL),
        ("jobs/job_5", {}, "GetJob", coordinator_pb2.JOB_VIEW_FULL),
        ("jobs/job_5", {"view": "BASIC"}, "GetJob", coordinator_pb2.JOB_VIEW_BASIC),
    ]
    for path, params, rpc, view in asked:
        r = await client.get(f"{PREFIX}/{path}", params=params, headers=auth())
        assert r.status_code == 200, r.text
        assert servicer.last(rpc).request.view == view, (path, params)  # type: ignore[attr-defined]
    for path in ("jobs", "jobs/job_5"):
        r = await client.get(f"{PREFIX}/{path}", params={"view": "ALL"}, headers=auth())
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["field"] == "view"


@pytest.mark.parametrize(
    ("body", "expected"), [(None, True), ({}, True), ({"save_checkpoint": False}, False)]
)
async def test_pause_save_checkpoint_defaults_to_true(
    shared_gateway: Gateway, body: Any, expected: bool
) -> None:
    client, servicer = shared_gateway
    r = await client.post(f"{PREFIX}/jobs/job_5/pause", json=body, headers=auth())
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"job_id": "job_5", "status": "PAUSED", "message": ""}}
    req: coordinator_pb2.PauseJobRequest = servicer.last("PauseJob").request  # type: ignore[assignment]
    assert req.job_id == "job_5"
    assert req.HasField("save_checkpoint")
    assert req.save_checkpoint is expected


async def test_cancel_reason_and_resume_checkpoint(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.post(
        f"{PREFIX}/jobs/job_5/cancel", json={"reason": "wrong data"}, headers=auth()
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "CANCELLED"
    cancel: coordinator_pb2.CancelJobRequest = servicer.last("CancelJob").request  # type: ignore[assignment]
    assert (cancel.job_id, cancel.reason) == ("job_5", "wrong data")
    r = await client.post(
        f"{PREFIX}/jobs/job_5/resume", json={"checkpoint_id": "ckpt_2"}, headers=auth()
    )
    assert r.status_code == 200, r.text
    resume: coordinator_pb2.ResumeJobRequest = servicer.last("ResumeJob").request  # type: ignore[assignment]
    assert (resume.job_id, resume.checkpoint_id) == ("job_5", "ckpt_2")


async def test_retry_with_new_resource_config(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    body = {
        "checkpoint_id": "ckpt_9",
        "modify_resources": True,
        "new_resource_config": {"gpu_count": 2, "gpu_type": "L4", "node_selector": {"z": "1"}},
    }
    r = await client.post(f"{PREFIX}/jobs/job_5/retry", json=body, headers=auth())
    assert r.status_code == 200, r.text
    assert r.json() == {
        "data": {
            "job_id": "job_child",
            "parent_job_id": "job_5",
            "status": "QUEUED",
            "message": "",
        }
    }
    req: coordinator_pb2.RetryJobRequest = servicer.last("RetryJob").request  # type: ignore[assignment]
    assert (req.job_id, req.checkpoint_id, req.modify_resources) == ("job_5", "ckpt_9", True)
    rc = req.new_resource_config
    assert req.HasField("new_resource_config")
    assert (rc.gpu_count, rc.gpu_type, rc.num_nodes) == (2, "L4", 1)
    assert dict(rc.node_selector) == {"z": "1"}


async def test_retry_without_body_sends_no_resource_config(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.post(f"{PREFIX}/jobs/job_5/retry", headers=auth())
    assert r.status_code == 200, r.text
    req: coordinator_pb2.RetryJobRequest = servicer.last("RetryJob").request  # type: ignore[assignment]
    assert (req.job_id, req.checkpoint_id, req.modify_resources) == ("job_5", "", False)
    assert not req.HasField("new_resource_config")


async def test_job_id_path_is_passed_verbatim(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.get(f"{PREFIX}/jobs/job_01J~abc.def", headers=auth())
    assert r.status_code == 200
    assert servicer.last("GetJob").request.job_id == "job_01J~abc.def"  # type: ignore[attr-defined]


async def test_concurrent_callers_keep_their_own_metadata(shared_gateway: Gateway) -> None:
    # Per-caller data travels per call: concurrent requests of different tenants never mix.
    client, servicer = shared_gateway

    async def one(i: int) -> str:
        r = await client.get(
            f"{PREFIX}/jobs/job_{i}",
            headers={**auth(f"tenant-{i}", user=f"user-{i}"), "X-Request-ID": f"rid-{i}"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["job_id"] == f"job_{i}"
        return str(r.headers["x-request-id"])

    ids = await asyncio.gather(*(one(i) for i in range(30)))
    assert ids == [f"rid-{i}" for i in range(30)]
    assert len(servicer.calls) == 30
    for call in servicer.calls:
        i = call.metadata["x-request-id"].removeprefix("rid-")
        assert call.metadata["x-tenant-id"] == f"tenant-{i}"
        assert call.metadata["x-user-id"] == f"user-{i}"
        assert call.request.job_id == f"job_{i}"  # type: ignore[attr-defined]


async def test_one_long_lived_connection_for_all_callers(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    for i in range(5):
        r = await client.get(f"{PREFIX}/jobs/job_{i}", headers=auth(f"tenant-{i}"))
        assert r.status_code == 200
    r = await client.post(f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers=auth("tenant-z"))
    assert r.status_code == 201
    peers = {c.peer for c in servicer.calls}
    assert len(servicer.calls) == 6
    assert len(peers) == 1, peers
    assert next(iter(peers)).startswith("ipv4:127.0.0.1:")
