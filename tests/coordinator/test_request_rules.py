"""The coordinator holds direct gRPC callers to the gateway's caps, with structured details."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from scaimind.contract.identity import validate_identity
from scaimind.contract.limits import first_violation
from scaimind.gateway.backend.convert import dict_to_message
from scaimind.v1 import cluster_pb2, coordinator_pb2
from tests.limits_cases import CAP_CASES, CapCase, names_field

from .conftest import Client, Env

_REQUESTS: dict[str, Any] = {
    "submit": coordinator_pb2.SubmitJobRequest,
    "evaluation": coordinator_pb2.SubmitEvaluationRequest,
    "cancel": coordinator_pb2.CancelJobRequest,
    "drain": cluster_pb2.DrainNodeRequest,
}


def _request(case: CapCase, n: int) -> Any:
    body = case.body(n)
    if case.kind == "cancel":
        body["job_id"] = "job_1"
    if case.kind == "drain":
        body["node_id"] = "node-local"
    return dict_to_message(body, _REQUESTS[case.kind])


async def _call(client: Client, case: CapCase, request: Any) -> Any:
    stub: Any = client.cluster if case.kind == "drain" else client.jobs
    method = {
        "submit": "SubmitJob",
        "evaluation": "SubmitEvaluation",
        "cancel": "CancelJob",
        "drain": "DrainNode",
    }[case.kind]
    return await getattr(stub, method)(request, metadata=client.md(), timeout=10)


def violations_of(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations a failed call carried."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no grpc-status-details-bin"
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out


@pytest.mark.parametrize("case", CAP_CASES, ids=lambda c: c.id)
def test_the_same_caps_as_the_gateway(case: CapCase) -> None:
    assert first_violation(_request(case, case.cap)) is None
    violation = first_violation(_request(case, case.cap + 1))
    assert violation is not None
    assert names_field(violation.field, case.coordinator_field), violation
    assert f"at most {case.cap}" in violation.message


@pytest.mark.parametrize("case", CAP_CASES, ids=lambda c: c.id)
async def test_a_direct_caller_over_a_cap_gets_a_field_violation(
    client: Client, case: CapCase
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(client, case, _request(case, case.cap + 1))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = violations_of(err.value)
    assert names_field(field, case.coordinator_field), field
    assert f"at most {case.cap}" in description
    assert err.value.details() == f"{field}: {description}"


@pytest.mark.parametrize(
    ("setter", "field"),
    [
        (lambda r: setattr(r, "name", "a\x00b"), "name"),
        (lambda r: setattr(r, "name", "two\nlines"), "name"),
        (lambda r: r.labels.update({"team": "\x1b[31m"}), "labels['team']"),
        (
            lambda r: r.training_config.environment.update({"A\nB": "v"}),
            "training_config.environment",
        ),
        (lambda r: setattr(r.data_config.sources[0], "path", "/x\x00"), "data_config.sources[0]"),
    ],
    ids=["NUL", "newline", "escape", "newline in an environment name", "NUL in a path"],
)
async def test_control_characters_are_refused_naming_the_field(
    client: Client, setter: Any, field: str
) -> None:
    req = _request(CAP_CASES[0], 1)
    setter(req)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.SubmitJob(req, metadata=client.md(), timeout=10)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    [(named, description)] = violations_of(err.value)
    assert named.startswith(field), named
    assert "control characters" in description


def _token(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        _token({"o": "created_at desc", "v": {"a": 1}, "id": "x"}),
        _token({"o": "created_at desc", "v": [1, 2], "id": "x"}),
        _token({"o": "created_at desc", "v": 1, "id": {"x": 1}}),
        _token([1, 2, 3]),
        _token("text"),
        _token({"o": "created_at desc"}),
        "!!!",
    ],
    ids=["value object", "value list", "id object", "list", "string", "no value", "not base64"],
)
async def test_any_page_token_is_invalid_argument(client: Client, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.ListJobs(
            coordinator_pb2.ListJobsRequest(page_token=token), metadata=client.md(), timeout=10
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert violations_of(err.value) == [("page_token", "invalid")]


@pytest.mark.parametrize(
    ("tenant", "user"),
    # (Control characters cannot travel as metadata at all: grpc refuses to send them.)
    [(" tenant-a ", "user-1"), ("t" * 129, "u"), ("tenant-a", " u")],
    ids=["padded", "too long", "padded user"],
)
async def test_an_identity_is_refused_never_normalised(
    env: Env, client: Client, tenant: str, user: str
) -> None:
    # The coordinator used to strip the tenant: " tenant-a " saw tenant-a's jobs.
    await client.submit(env.builtin("mine", hyperparameters={"max_steps": "1"}))
    md = [("x-api-secret", client.secret), ("x-tenant-id", tenant), ("x-user-id", user)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.ListJobs(coordinator_pb2.ListJobsRequest(), metadata=md, timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED, err.value.details()


@pytest.mark.parametrize(
    "value",
    ["", " a", "a ", "a\x00", "a\x7f", "\ud800", "x" * 129],
    ids=["empty", "leading", "trailing", "NUL", "DEL", "surrogate", "129 chars"],
)
def test_validate_identity_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        validate_identity(value, "tenant_id")


def test_validate_identity_accepts() -> None:
    for value in ("acme", "x" * 128, "tenant a", "josé"):
        assert validate_identity(value, "tenant_id") == value
