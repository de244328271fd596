"""Schema validation: 422 VALIDATION_ERROR with dotted field paths, and nothing sent upstream."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from tests.conftest import auth
from tests.gateway.conftest import PREFIX, Gateway
from tests.gateway.test_metadata import MINIMAL_SUBMIT

# Many small tests: one gateway for the module (shared_gateway resets the script per test).
pytestmark = pytest.mark.asyncio(loop_scope="module")

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def with_(path: str, value: Any, base: dict[str, Any] = MINIMAL_SUBMIT) -> dict[str, Any]:
    """A copy of `base` with the dotted `path` set to `value` (or removed when value is DELETE)."""
    body = copy.deepcopy(base)
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if value is DELETE:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return body


DELETE: Any = object()


def validation_fields(r: httpx.Response) -> list[str]:
    """Assert a 422 envelope and return the `field` of each detail."""
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert "retry_after" not in body["error"]
    details = body["error"]["details"]
    assert details
    for d in details:
        assert set(d) == {"field", "message"}
        assert d["message"]
    return [d["field"] for d in details]


async def submit(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post(f"{PREFIX}/jobs", json=body, headers=auth())


@pytest.mark.parametrize(
    "field",
    [
        "name",
        "training_config",
        "training_config.training_type",
        "training_config.base_model",
        "training_config.base_model.model_id",
        "data_config",
        "data_config.sources",
        "data_config.sources.0.path",
        "resource_config",
        "resource_config.gpu_count",
    ],
)
async def test_each_required_field_is_named(shared_gateway: Gateway, field: str) -> None:
    client, servicer = shared_gateway
    r = await submit(client, with_(field, DELETE))
    assert validation_fields(r) == [field]
    assert servicer.calls == []


async def test_all_missing_fields_reported_at_once(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await submit(client, {"training_config": {"base_model": {}}, "data_config": {}})
    assert set(validation_fields(r)) == {
        "name",
        "training_config.training_type",
        "training_config.base_model.model_id",
        "data_config.sources",
        "resource_config",
    }
    assert servicer.calls == []


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("training_config.priority", -1, False),
        ("training_config.priority", 0, True),
        ("training_config.priority", 10, True),
        ("training_config.priority", 11, False),
        ("training_config.max_retries", -1, False),
        ("training_config.max_retries", 0, True),
        ("data_config.validation_split", -0.1, False),
        ("data_config.validation_split", 0, True),
        ("data_config.validation_split", 1, True),
        ("data_config.validation_split", 1.1, False),
        ("data_config.sources.0.sample_rate", 0, False),
        ("data_config.sources.0.sample_rate", 0.01, True),
        ("data_config.sources.0.sample_rate", 1, True),
        ("data_config.sources.0.sample_rate", 1.5, False),
        ("data_config.sources", [], False),
        ("resource_config.gpu_count", -1, False),
        ("resource_config.gpu_count", 0, True),
        ("resource_config.num_nodes", 0, False),
        ("name", "", False),
        ("name", "x" * 256, True),
        ("name", "x" * 257, False),
        ("training_config.base_model.model_id", "", False),
        ("data_config.sources.0.path", "", False),
        # Protocol limits: int32/int64 fields must be rejected here, not crash the converter.
        ("resource_config.gpu_count", INT32_MAX, True),
        ("resource_config.gpu_count", INT32_MAX + 1, False),
        ("data_config.max_seq_length", INT32_MAX + 1, False),
        ("data_config.batch_size", 2**40, False),
        ("data_config.seed", INT64_MAX, True),
        ("data_config.seed", INT64_MAX + 1, False),
        ("resource_config.max_runtime_seconds", INT64_MAX + 1, False),
        ("training_config.framework.distributed.world_size", INT32_MAX + 1, False),
        ("output_config.checkpoint_interval_steps", INT32_MAX + 1, False),
        ("scheduling_config.max_queue_wait_seconds", INT64_MAX + 1, False),
    ],
    ids=lambda v: str(v)[:20],
)
async def test_range_edges(shared_gateway: Gateway, field: str, value: Any, ok: bool) -> None:
    client, servicer = shared_gateway
    r = await submit(client, with_(field, value))
    if ok:
        assert r.status_code == 201, r.text
        assert len(servicer.calls) == 1
    else:
        fields = validation_fields(r)
        assert len(fields) == 1
        assert fields[0].startswith(field), fields
        assert servicer.calls == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("training_config.training_type", "PRETRAIN"),
        ("training_config.training_type", "sft-ish"),
        ("training_config.framework.type", "KERAS"),
        ("data_config.sources.0.format", "xlsx"),
        ("output_config.export_format", "ZIP"),
        ("training_config.priority", "high"),
        ("resource_config.gpu_count", 1.5),
        ("training_config.hyperparameters", {"lr": {"nested": 1}}),
        ("training_config.hyperparameters", {"lr": None}),
        ("labels", {"team": 5}),
        ("labels", ["team"]),
        ("scheduling_config.start_after", "tomorrow"),
        ("scheduling_config.node_affinity", "node-1"),
        ("data_config.sources.0.columns", "a,b"),
    ],
    ids=lambda v: str(v)[:30],
)
async def test_wrong_types_and_unknown_enum_values(
    shared_gateway: Gateway, field: str, value: Any
) -> None:
    client, servicer = shared_gateway
    fields = validation_fields(await submit(client, with_(field, value)))
    assert all(f.startswith(field) for f in fields), fields
    assert servicer.calls == []


async def test_naive_start_after_is_rejected_not_a_500(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await submit(client, with_("scheduling_config.start_after", "2030-01-01T00:00:00"))
    assert validation_fields(r) == ["scheduling_config.start_after"]
    assert servicer.calls == []


@pytest.mark.parametrize(
    "field",
    [
        "tenant_id",
        "training_config.learning_rate",
        "training_config.base_model.modelid",
        "data_config.sources.0.uri",
        "resource_config.gpus",
        "output_config.bogus",
        "scheduling_config.bogus",
    ],
)
async def test_unknown_fields_are_rejected(shared_gateway: Gateway, field: str) -> None:
    client, servicer = shared_gateway
    assert validation_fields(await submit(client, with_(field, "x"))) == [field]
    assert servicer.calls == []


async def test_custom_framework_needs_a_script(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await submit(client, with_("training_config.framework", {"type": "CUSTOM"}))
    [field] = validation_fields(r)
    assert field == "training_config.framework.custom_script_path"
    assert "custom_script_path" in r.json()["error"]["details"][0]["message"]
    assert servicer.calls == []


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"name": "x",', "application/json"),
        (b"not json at all", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b"null", "application/json"),
    ],
)
async def test_malformed_or_non_object_json(
    shared_gateway: Gateway, content: bytes, content_type: str
) -> None:
    client, servicer = shared_gateway
    r = await client.post(
        f"{PREFIX}/jobs", content=content, headers={**auth(), "Content-Type": content_type}
    )
    assert validation_fields(r)
    assert servicer.calls == []


async def test_malformed_json_names_the_body(shared_gateway: Gateway) -> None:
    client, _ = shared_gateway
    r = await client.post(
        f"{PREFIX}/jobs",
        content=b'{"name": ',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert validation_fields(r) == ["body"]
    assert "malformed JSON" in r.json()["error"]["details"][0]["message"]


async def test_missing_submit_body(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.post(f"{PREFIX}/jobs", headers=auth())
    assert validation_fields(r)
    assert servicer.calls == []


# --- query parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "ok"),
    [
        ({"page_size": "0"}, False),
        ({"page_size": "1"}, True),
        ({"page_size": "100"}, True),
        ({"page_size": "101"}, False),
        ({"page_size": "ten"}, False),
        ({"status": "RUNNING"}, False),
        ({"status": "queued"}, False),
        ({"status": "QUEUED"}, True),
        ({"label": "no-equals-sign"}, False),
        ({"label": "=value"}, False),
        ({"label": "k=v"}, True),
    ],
    ids=str,
)
async def test_list_query_validation(
    shared_gateway: Gateway, params: dict[str, str], ok: bool
) -> None:
    client, servicer = shared_gateway
    r = await client.get(f"{PREFIX}/jobs", params=params, headers=auth())
    if ok:
        assert r.status_code == 200, r.text
        assert len(servicer.calls) == 1
    else:
        [name] = params
        fields = validation_fields(r)
        assert len(fields) == 1
        assert fields[0].split(".")[0] == name
        assert servicer.calls == []


# --- optional bodies -----------------------------------------------------------------------------

ACTIONS = ["cancel", "pause", "resume", "retry"]


OPTIONAL_BODY_STYLES: dict[str, dict[str, Any]] = {
    "absent": {},
    "empty": {"content": b""},
    "empty-json": {"content": b"", "headers": {"Content-Type": "application/json"}},
    "object": {"json": {}},
}


@pytest.mark.parametrize("action", ACTIONS)
async def test_optional_bodies(shared_gateway: Gateway, action: str) -> None:
    client, servicer = shared_gateway
    for style, kwargs in OPTIONAL_BODY_STYLES.items():
        servicer.calls.clear()
        extra = dict(kwargs)
        headers = {**auth(), **extra.pop("headers", {})}
        r = await client.post(f"{PREFIX}/jobs/job_1/{action}", headers=headers, **extra)
        assert r.status_code == 200, (style, r.text)
        assert len(servicer.calls) == 1, style


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("cancel", {"reason": 5}, "reason"),
        ("cancel", {"reason": "x" * 1025}, "reason"),
        ("cancel", {"why": "x"}, "why"),
        ("pause", {"save_checkpoint": "maybe"}, "save_checkpoint"),
        ("resume", {"checkpoint": "c"}, "checkpoint"),
        # Named, not "body" (a model-level check used to name the whole body).
        ("retry", {"modify_resources": True}, "new_resource_config"),
        ("retry", {"modify_resources": True, "new_resource_config": None}, "new_resource_config"),
        # Optional bodies are held to the character rules too (a lone surrogate was a 500).
        ("resume", {"checkpoint_id": "\ud800"}, "checkpoint_id"),
        ("retry", {"checkpoint_id": "\ud800"}, "checkpoint_id"),
        ("cancel", {"reason": "a\x00b"}, "reason"),
        ("retry", {"modify_resources": True, "new_resource_config": {}}, "new_resource_config"),
        ("retry", {"new_resource_config": {"gpu_count": -1}}, "new_resource_config.gpu_count"),
    ],
    ids=str,
)
async def test_action_body_validation(
    shared_gateway: Gateway, action: str, body: dict[str, Any], field: str
) -> None:
    client, servicer = shared_gateway
    # json.dumps escapes a lone surrogate as \ud800, as a client in another language may send.
    r = await client.post(
        f"{PREFIX}/jobs/job_1/{action}",
        content=json.dumps(body),
        headers={**auth(), "Content-Type": "application/json"},
    )
    fields = validation_fields(r)
    assert len(fields) == 1
    assert fields[0] == field or fields[0].startswith(f"{field}."), fields
    assert servicer.calls == []


async def test_modify_resources_without_config_names_the_missing_field(
    shared_gateway: Gateway,
) -> None:
    client, _ = shared_gateway
    r = await client.post(
        f"{PREFIX}/jobs/job_1/retry", json={"modify_resources": True}, headers=auth()
    )
    validation_fields(r)
    assert "new_resource_config" in r.json()["error"]["details"][0]["message"]


async def test_malformed_action_body(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.post(
        f"{PREFIX}/jobs/job_1/pause",
        content=b"{oops",
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert validation_fields(r) == ["body"]
    assert servicer.calls == []
