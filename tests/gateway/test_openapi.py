"""The typed contract: payload and error schemas per route, SSE docs, the bearer scheme, examples,
the self-hosted docs pages, and response models that cover every protocol field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel

from scaimind.gateway.app import create_app
from scaimind.gateway.backend.convert import message_to_dict
from scaimind.gateway.web.schemas import ops_views, views
from scaimind.gateway.web.schemas.evaluations import SubmitEvaluationBody
from scaimind.gateway.web.schemas.examples import SUBMIT_EVALUATION_EXAMPLES, SUBMIT_JOB_EXAMPLES
from scaimind.gateway.web.schemas.jobs import SubmitJobBody
from scaimind.v1 import cluster_pb2, common_pb2, coordinator_pb2
from tests.conftest import settings_for
from tests.gateway.conftest import PREFIX, app_client

# Every response payload model and the protocol message it renders.
VIEWS: list[tuple[type[BaseModel], type[Message]]] = [
    (views.Job, common_pb2.Job),
    (views.JobList, coordinator_pb2.ListJobsResponse),
    (views.JobSubmitted, coordinator_pb2.SubmitJobResponse),
    (views.JobAction, coordinator_pb2.JobActionResponse),
    (views.JobRetried, coordinator_pb2.RetryJobResponse),
    (views.JobMetrics, coordinator_pb2.GetJobMetricsResponse),
    (views.LogEntry, coordinator_pb2.LogEntry),
    (views.MetricsSnapshot, coordinator_pb2.MetricsSnapshot),
    (views.StreamEnd, coordinator_pb2.StreamEnd),
    (ops_views.ClusterStatus, cluster_pb2.ClusterStatus),
    (ops_views.Node, cluster_pb2.Node),
    (ops_views.NodeList, cluster_pb2.ListNodesResponse),
    (ops_views.QueueStatus, cluster_pb2.GetQueueStatusResponse),
    (ops_views.Evaluation, coordinator_pb2.Evaluation),
    (ops_views.EvaluationList, coordinator_pb2.ListEvaluationsResponse),
    (ops_views.EvaluationSubmitted, coordinator_pb2.SubmitEvaluationResponse),
    (ops_views.ValidationReport, coordinator_pb2.ValidateDataResponse),
    (ops_views.DataCache, coordinator_pb2.GetDataCacheResponse),
]


def _fill(msg: Message, depth: int = 0) -> Message:
    """Set every field of `msg` (nested messages too) to a non-default value."""
    for fd in msg.DESCRIPTOR.fields:
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if is_map:
            value_fd = fd.message_type.fields_by_name["value"]
            target = getattr(msg, fd.name)
            if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                _fill(target["k"], depth + 1)
            else:
                target["k"] = _scalar(value_fd)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.full_name == "google.protobuf.Timestamp":
                sub = getattr(msg, fd.name).add() if _repeated(fd) else getattr(msg, fd.name)
                sub.FromSeconds(1_700_000_000)
            elif depth < 6:
                _fill(
                    getattr(msg, fd.name).add() if _repeated(fd) else getattr(msg, fd.name),
                    depth + 1,
                )
        elif _repeated(fd):
            getattr(msg, fd.name).append(_scalar(fd))
        else:
            setattr(msg, fd.name, _scalar(fd))
    return msg


def _repeated(fd: Any) -> bool:
    return bool(fd.is_repeated)


def _scalar(fd: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values[-1].number
    if fd.type == FieldDescriptor.TYPE_STRING:
        return "s"
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return True
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 0.5
    return 3


@pytest.mark.parametrize(("model", "message"), VIEWS, ids=lambda v: getattr(v, "__name__", ""))
def test_response_models_cover_every_protocol_field(
    model: type[BaseModel], message: type[Message]
) -> None:
    # A field added to a .proto would otherwise be dropped from responses without a word.
    full = message_to_dict(_fill(message()))
    rendered = model.model_validate(full).model_dump(mode="json")
    assert rendered == full


@pytest.fixture
def spec(tmp_path: Path) -> dict[str, Any]:
    return create_app(settings_for(tmp_path)).openapi()


def _module_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, ops in spec["paths"].items()
        if path.startswith(PREFIX)
        for method, op in ops.items()
    ]


SSE = {f"{PREFIX}/jobs/{{job_id}}/logs", f"{PREFIX}/jobs/{{job_id}}/metrics/stream"}


def test_every_route_declares_its_payload_and_its_errors(spec: dict[str, Any]) -> None:
    operations = _module_operations(spec)
    assert len(operations) == 21
    for method, path, op in operations:
        where = f"{method.upper()} {path}"
        assert op["description"], where
        assert op["operationId"].startswith("scaimind_"), where
        assert op["security"] == [{"bearer": []}], where
        responses = op["responses"]
        ok = "201" if method == "post" and path.endswith(("/jobs", "/evaluations")) else "200"
        if path in SSE:
            assert set(responses[ok]["content"]) == {"text/event-stream"}, where
        else:
            schema = responses[ok]["content"]["application/json"]["schema"]
            assert schema["$ref"].startswith("#/components/schemas/Data_"), where
        for status in ("400", "401", "403", "404", "422", "500", "503", "504"):
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorEnvelope", (where, status)
        assert ("413" in responses) is (method == "post" and not path.endswith("/enable")), where
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_every_field_has_a_description(spec: dict[str, Any]) -> None:
    missing = [
        f"{name}.{prop}"
        for name, schema in spec["components"]["schemas"].items()
        for prop, body in schema.get("properties", {}).items()
        if not body.get("description")
    ]
    assert missing == []
    params = [
        f"{method} {path} {p['name']}"
        for method, path, op in _module_operations(spec)
        for p in op.get("parameters", [])
        if not p.get("description")
    ]
    assert params == []


def test_sse_routes_document_their_event_types(spec: dict[str, Any]) -> None:
    for path in SSE:
        stream = spec["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]
        assert "data: [DONE]" in stream["example"]
        # One schema per event type (OpenAPI 3.1 has no itemSchema: `schema` is one event).
        events = {e["properties"]["event"]["const"]: e for e in stream["schema"]["oneOf"]}
        first = "log" if path.endswith("/logs") else "metrics"
        assert set(events) == {first, "end", "error", "message"}
        data = events[first]["properties"]["data"]
        assert data["contentMediaType"] == "application/json"
        assert "$ref" not in json.dumps(data["contentSchema"])


def test_the_bearer_scheme_gives_docs_an_authorize_button(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in ("/health", "/health/ready"):
        assert "security" not in spec["paths"][path]["get"]


def test_submit_examples_are_valid_requests(spec: dict[str, Any]) -> None:
    for example in SUBMIT_JOB_EXAMPLES.values():
        SubmitJobBody.model_validate(example["value"])
    for example in SUBMIT_EVALUATION_EXAMPLES.values():
        SubmitEvaluationBody.model_validate(example["value"])
    body = spec["paths"][f"{PREFIX}/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == set(SUBMIT_JOB_EXAMPLES)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_nothing_from_elsewhere(tmp_path: Path, page: str) -> None:
    async with app_client(create_app(settings_for(tmp_path))) as client:
        r = await client.get(page)
        assert r.status_code == 200
        assert "openapi.json" in r.text
        # Every script, stylesheet and icon comes from this server.
        urls = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert urls
        assert all(u.startswith("/docs/assets/") for u in urls), urls
        assert "cdn" not in r.text
        assert "googleapis" not in r.text
        for url in urls:
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 100, url


async def test_the_assets_are_upstreams_licensed_files(tmp_path: Path) -> None:
    async with app_client(create_app(settings_for(tmp_path))) as client:
        for path in ("/docs/assets/swagger-ui/LICENSE", "/docs/assets/redoc/LICENSE"):
            r = await client.get(path)
            assert r.status_code == 200
            assert "License" in r.text


async def test_docs_behind_a_root_path(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path))
    async with app_client(app) as client:
        transport = httpx.ASGITransport(app=app, root_path="/proxy")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as proxied:
            r = await proxied.get("/docs")
        assert '"/proxy/openapi.json"' in r.text or "/proxy/openapi.json" in r.text
        assert "/proxy/docs/assets/swagger-ui/swagger-ui-bundle.js" in r.text
        assert (await client.get("/openapi.json")).status_code == 200
