"""Proto ↔ JSON conversion: enum names, RFC 3339 times, int64 numbers, presence (convert.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from scaimind.gateway.backend.convert import (
    dict_to_message,
    enum_name,
    enum_value,
    format_time,
    message_to_dict,
)
from scaimind.v1 import common_pb2, coordinator_pb2
from tests.conftest import auth
from tests.gateway.conftest import PREFIX, Gateway

JAN_1_2026 = 1767225600  # 2026-01-01T00:00:00Z
BIG = 2**53 + 1  # not representable as a double: must survive as an exact JSON integer


def ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def full_job() -> common_pb2.Job:
    job = common_pb2.Job(
        job_id="job_7",
        name="llama",
        tenant_id="tenant-a",
        user_id="user-1",
        status=common_pb2.JOB_STATUS_TRAINING,
        status_message="step 10/50",
        training_config=common_pb2.TrainingConfig(
            training_type=common_pb2.TRAINING_TYPE_QLORA,
            base_model=common_pb2.BaseModel(model_id="m"),
            framework=common_pb2.FrameworkConfig(type=common_pb2.FRAMEWORK_TYPE_MEGATRON),
            hyperparameters={"lr": "0.1"},
        ),
        data_config=common_pb2.DataConfig(
            sources=[common_pb2.DataSource(path="a.jsonl", format=common_pb2.DATA_FORMAT_JSONL)],
            seed=BIG,
        ),
        resource_config=common_pb2.ResourceConfig(gpu_count=2, max_runtime_seconds=BIG),
        output_config=common_pb2.OutputConfig(export_format=common_pb2.EXPORT_FORMAT_ONNX),
        scheduling_config=common_pb2.SchedulingConfig(start_after=ts(JAN_1_2026 + 60)),
        labels={"team": "nlp"},
        progress=common_pb2.JobProgress(
            current_step=10, total_steps=50, current_epoch=1, total_epochs=2, percent=20.0
        ),
        latest_metrics={"loss": 1.25},
        checkpoints=[
            common_pb2.Checkpoint(
                checkpoint_id="ckpt_1",
                step=10,
                created_at=ts(JAN_1_2026, 5_000_000),
                path="/ckpt/1",
                size_bytes=BIG,
                metrics={"loss": 1.5},
            )
        ],
        assigned_nodes=["node-1"],
        queue_name="default",
        estimated_wait_seconds=BIG,
        error=common_pb2.JobError(code="EXIT_CODE", message="exit 1"),
        created_at=ts(JAN_1_2026, 123_456_789),
        started_at=ts(JAN_1_2026 + 1),
        updated_at=ts(0),
    )
    return job


async def test_get_job_response_shape(gateway: Gateway) -> None:
    client, servicer = gateway
    servicer.responses["GetJob"] = full_job()
    r = await client.get(f"{PREFIX}/jobs/job_7", headers=auth())
    assert r.status_code == 200, r.text
    # Parse the raw text, so "a number" means a JSON number, not a string holding digits.
    data = json.loads(r.text)["data"]
    assert set(data) == {f.name for f in common_pb2.Job.DESCRIPTOR.fields}
    assert data["status"] == "TRAINING"
    assert data["training_config"]["training_type"] == "QLORA"
    assert data["training_config"]["framework"]["type"] == "MEGATRON"
    assert data["training_config"]["framework"]["distributed"] is None
    assert data["training_config"]["priority"] is None  # optional, unset
    assert data["training_config"]["max_retries"] == 0  # plain scalar, unset: zero value
    assert data["training_config"]["hyperparameters"] == {"lr": "0.1"}
    assert data["data_config"]["sources"][0]["format"] == "jsonl"
    assert data["data_config"]["preprocess"] is None
    assert data["output_config"]["export_format"] == "ONNX"
    assert data["output_config"]["save_final_model"] is None
    assert data["scheduling_config"]["start_after"] == "2026-01-01T00:01:00.000Z"
    assert data["created_at"] == "2026-01-01T00:00:00.123Z"
    assert data["started_at"] == "2026-01-01T00:00:01.000Z"
    assert data["updated_at"] == "1970-01-01T00:00:00.000Z"  # set to the epoch: not null
    assert data["completed_at"] is None
    assert data["checkpoints"][0]["created_at"] == "2026-01-01T00:00:00.005Z"
    for value in (
        data["estimated_wait_seconds"],
        data["checkpoints"][0]["size_bytes"],
        data["data_config"]["seed"],
        data["resource_config"]["max_runtime_seconds"],
    ):
        assert value == BIG
        assert type(value) is int
    assert f'"estimated_wait_seconds":{BIG}' in r.text.replace(" ", "")
    assert data["progress"] == {
        "current_step": 10,
        "total_steps": 50,
        "current_epoch": 1,
        "total_epochs": 2,
        "percent": 20.0,
    }
    assert data["latest_metrics"] == {"loss": 1.25}
    assert data["checkpoints"][0]["metrics"] == {"loss": 1.5}
    assert data["assigned_nodes"] == ["node-1"]
    assert data["labels"] == {"team": "nlp"}
    assert data["error"] == {"code": "EXIT_CODE", "message": "exit 1"}
    # Unset scalars are present with their zero value.
    assert data["parent_job_id"] == ""
    assert data["retry_count"] == 0
    assert data["queue_position"] == 0
    assert data["final_model_uri"] == ""


async def test_empty_job_has_every_field(gateway: Gateway) -> None:
    client, servicer = gateway
    servicer.responses["GetJob"] = common_pb2.Job()
    data = (await client.get(f"{PREFIX}/jobs/job_0", headers=auth())).json()["data"]
    assert set(data) == {f.name for f in common_pb2.Job.DESCRIPTOR.fields}
    assert data["status"] is None  # UNSPECIFIED
    for message_field in ("training_config", "progress", "error", "created_at", "updated_at"):
        assert data[message_field] is None
    assert data["labels"] == {}
    assert data["checkpoints"] == []
    assert data["estimated_wait_seconds"] == 0


async def test_list_response_shape(gateway: Gateway) -> None:
    client, servicer = gateway
    servicer.responses["ListJobs"] = coordinator_pb2.ListJobsResponse(
        jobs=[full_job(), common_pb2.Job(job_id="job_8", status=common_pb2.JOB_STATUS_QUEUED)],
        next_page_token="next==",
        total_count=12,
    )
    r = await client.get(f"{PREFIX}/jobs", headers=auth())
    body = r.json()
    assert set(body) == {"data"}
    assert set(body["data"]) == {"jobs", "next_page_token", "total_count"}
    assert [j["job_id"] for j in body["data"]["jobs"]] == ["job_7", "job_8"]
    assert [j["status"] for j in body["data"]["jobs"]] == ["TRAINING", "QUEUED"]
    assert body["data"]["next_page_token"] == "next=="
    assert body["data"]["total_count"] == 12


async def test_submit_response_shape(gateway: Gateway) -> None:
    from tests.gateway.test_metadata import MINIMAL_SUBMIT

    client, servicer = gateway
    servicer.responses["SubmitJob"] = coordinator_pb2.SubmitJobResponse(
        job_id="job_9", status=common_pb2.JOB_STATUS_PENDING, estimated_wait_seconds=BIG
    )
    r = await client.post(f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers=auth())
    assert r.status_code == 201
    assert r.json() == {
        "data": {
            "job_id": "job_9",
            "status": "PENDING",
            "message": "",
            "estimated_wait_seconds": BIG,
        }
    }


# --- unit level --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enum", "name", "number"),
    [
        (common_pb2.JobStatus.DESCRIPTOR, "QUEUED", common_pb2.JOB_STATUS_QUEUED),
        (common_pb2.JobStatus.DESCRIPTOR, "JOB_STATUS_QUEUED", common_pb2.JOB_STATUS_QUEUED),
        (common_pb2.JobStatus.DESCRIPTOR, "queued", common_pb2.JOB_STATUS_QUEUED),
        (common_pb2.DataFormat.DESCRIPTOR, "jsonl", common_pb2.DATA_FORMAT_JSONL),
        (common_pb2.DataFormat.DESCRIPTOR, "PARQUET", common_pb2.DATA_FORMAT_PARQUET),
        (
            common_pb2.TrainingType.DESCRIPTOR,
            "CONTINUED_PRETRAIN",
            common_pb2.TRAINING_TYPE_CONTINUED_PRETRAIN,
        ),
    ],
)
def test_enum_value(enum: object, name: str, number: int) -> None:
    assert enum_value(enum, name) == number


@pytest.mark.parametrize("name", ["UNSPECIFIED", "JOB_STATUS_UNSPECIFIED", "RUNNING", ""])
def test_enum_value_rejects_unknown_and_unspecified(name: str) -> None:
    with pytest.raises(ValueError, match="JobStatus"):
        enum_value(common_pb2.JobStatus.DESCRIPTOR, name)


def test_enum_name() -> None:
    assert enum_name(common_pb2.JobStatus.DESCRIPTOR, common_pb2.JOB_STATUS_PREEMPTED) == (
        "PREEMPTED"
    )
    assert enum_name(common_pb2.DataFormat.DESCRIPTOR, common_pb2.DATA_FORMAT_CSV) == "csv"
    assert enum_name(common_pb2.JobStatus.DESCRIPTOR, 0) is None
    assert enum_name(common_pb2.JobStatus.DESCRIPTOR, 999) is None


def test_format_time_is_rfc3339_utc_with_millis() -> None:
    value = format_time(ts(JAN_1_2026, 999_999_999))
    assert value == "2026-01-01T00:00:00.999Z"
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() is not None
    assert parsed.astimezone(UTC).year == 2026


def test_dict_to_message_rejects_unknown_fields_and_skips_none() -> None:
    with pytest.raises(ValueError, match="no field 'bogus'"):
        dict_to_message({"bogus": 1}, coordinator_pb2.CancelJobRequest)
    msg = dict_to_message({"job_id": "j", "reason": None}, coordinator_pb2.CancelJobRequest)
    assert (msg.job_id, msg.reason) == ("j", "")


def test_empty_object_marks_a_sub_message_present() -> None:
    msg = dict_to_message(
        {"framework": {"distributed": {}}, "base_model": {"model_id": "m"}},
        common_pb2.TrainingConfig,
    )
    assert msg.HasField("framework")
    assert msg.framework.HasField("distributed")
    assert not msg.HasField("priority")
    assert message_to_dict(msg)["framework"]["distributed"]["world_size"] == 0


def test_round_trip() -> None:
    data = {
        "name": "x",
        "training_config": {
            "training_type": "DPO",
            "base_model": {"model_id": "m", "model_kwargs": {"a": "b"}},
            "priority": 0,
        },
        "data_config": {"sources": [{"path": "p", "format": "text", "columns": ["a"]}]},
        "scheduling_config": {"start_after": "2026-01-01T00:00:00.250Z", "node_affinity": ["n"]},
        "labels": {"k": "v"},
    }
    back = message_to_dict(dict_to_message(data, coordinator_pb2.SubmitJobRequest))
    assert back["training_config"]["training_type"] == "DPO"
    assert back["training_config"]["priority"] == 0  # explicitly set zero keeps its presence
    assert back["training_config"]["base_model"]["model_kwargs"] == {"a": "b"}
    assert back["data_config"]["sources"][0]["format"] == "text"
    assert back["data_config"]["sources"][0]["columns"] == ["a"]
    assert back["scheduling_config"]["start_after"] == "2026-01-01T00:00:00.250Z"
    assert back["scheduling_config"]["node_affinity"] == ["n"]
    assert back["labels"] == {"k": "v"}
    assert back["output_config"] is None


async def test_non_finite_doubles_are_null_not_invalid_json(gateway: Gateway) -> None:
    # A diverged run reports loss=NaN; JSON has no NaN, so the body must still parse strictly.
    client, servicer = gateway
    servicer.responses["GetJob"] = common_pb2.Job(
        job_id="job_nan",
        latest_metrics={"loss": float("nan"), "grad_norm": float("inf"), "lr": 0.1},
        progress=common_pb2.JobProgress(percent=float("-inf")),
    )
    r = await client.get(f"{PREFIX}/jobs/job_nan", headers=auth())
    assert r.status_code == 200, r.text

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads(r.text, parse_constant=reject)["data"]
    assert data["latest_metrics"] == {"loss": None, "grad_norm": None, "lr": 0.1}
    assert data["progress"]["percent"] is None


def _odd_message() -> type:
    """A message type no protocol file has: fields named like Python keywords, a reference to
    itself, a map of messages, an optional enum and repeated enums."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    file = descriptor_pb2.FileDescriptorProto(name="odd_test.proto", package="oddtest")
    file.syntax = "proto3"
    colour = file.enum_type.add(name="Colour")
    for number, name in enumerate(["COLOUR_UNSPECIFIED", "COLOUR_RED", "COLOUR_BLUE"]):
        colour.value.add(name=name, number=number)
    node = file.message_type.add(name="Node")
    entry = node.nested_type.add(name="ChildrenEntry")
    entry.options.map_entry = True
    node.oneof_decl.add(name="_tint")
    fields = [
        (node, "from", f.TYPE_STRING, "", one),
        (node, "class", f.TYPE_INT64, "", one),
        (node, "next", f.TYPE_MESSAGE, ".oddtest.Node", one),
        (node, "colours", f.TYPE_ENUM, ".oddtest.Colour", many),
        (node, "children", f.TYPE_MESSAGE, ".oddtest.Node.ChildrenEntry", many),
        (entry, "key", f.TYPE_STRING, "", one),
        (entry, "value", f.TYPE_MESSAGE, ".oddtest.Node", one),
    ]
    for number, (owner, name, kind, type_name, label) in enumerate(fields, start=1):
        field = owner.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
    # An optional enum: proto3 `optional`, a synthetic one-field oneof.
    node.field.add(
        name="tint",
        number=99,
        type=f.TYPE_ENUM,
        type_name=".oddtest.Colour",
        label=one,
        proto3_optional=True,
        oneof_index=0,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("oddtest.Node"))


def test_compiled_converter_handles_keywords_recursion_maps_and_presence() -> None:
    node_type = _odd_message()
    node = node_type()
    setattr(node, "from", "here")
    setattr(node, "class", BIG)
    node.colours.extend([1, 2, 7])  # 7: a number this gateway does not know
    node.next.MergeFrom(node_type(tint=2))
    node.children["a"].MergeFrom(node_type(colours=[2]))
    leaf = {"from": "", "class": 0, "next": None, "colours": [], "children": {}, "tint": None}
    assert message_to_dict(node) == {
        "from": "here",
        "class": BIG,
        "next": {**leaf, "tint": "BLUE"},
        "colours": ["RED", "BLUE", None],
        "children": {"a": {**leaf, "colours": ["BLUE"]}},
        "tint": None,
    }
    # Twice: the second call runs the converters bound after the first.
    assert message_to_dict(node) == message_to_dict(node)
