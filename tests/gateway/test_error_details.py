"""Structured coordinator errors (google.rpc details) rendered as `details: [{field, message}]`.

The scripted coordinator aborts with the status the reference coordinator's own error type
builds (`scaimind.coordinator.status.StatusError`), so encoding and decoding meet here.
"""

from __future__ import annotations

import copy
from typing import Any

import grpc
import pytest

from scaimind.coordinator.status import StatusError
from tests.conftest import auth
from tests.gateway.conftest import PREFIX, Failure, Gateway
from tests.limits_cases import submit_body

pytestmark = pytest.mark.asyncio(loop_scope="module")

USER_PATH = "/home/alice/datasets/missing.jsonl"


def rich(error: StatusError, detail: str | None = None) -> Failure:
    """A scripted failure carrying `error`'s details trailer."""
    return Failure(
        error.code, error.message if detail is None else detail, error.trailing_metadata()
    )


def body_with_path(path: str) -> dict[str, Any]:
    body = copy.deepcopy(submit_body())
    body["data_config"]["sources"][0]["path"] = path
    return body


async def test_a_field_violation_keeps_the_users_own_path(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    servicer.responses["SubmitJob"] = rich(
        StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"data_config.sources[0].path: file not found: {USER_PATH}",
        )
    )
    r = await client.post(f"{PREFIX}/jobs", json=body_with_path(USER_PATH), headers=auth())
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["details"] == [
        {"field": "data_config.sources[0].path", "message": f"file not found: {USER_PATH}"}
    ]
    assert error["message"] == f"data_config.sources[0].path: file not found: {USER_PATH}"


@pytest.mark.parametrize(
    "description",
    [
        "file not found: /srv/scaimind/coordinator/storage/acme/x.jsonl",
        'Traceback (most recent call last):\n  File "/app/x.py", line 3',
        "could not reach db.internal:5432",
        "connection refused by 10.0.3.7",
        "sqlalchemy.exc.OperationalError: no such table",
        # The caller sent "/srv" (below): that vouches for "/srv", not for a longer path.
        "not readable: /srv/scaimind/state.db",
    ],
)
async def test_server_text_in_a_violation_never_passes(
    shared_gateway: Gateway, description: str
) -> None:
    client, servicer = shared_gateway
    servicer.responses["SubmitJob"] = rich(
        StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            description,
            field="data_config.sources[0].path",
        )
    )
    body = body_with_path("scaidrive://acme/x.jsonl")
    body["labels"] = {"where": "/srv"}
    r = await client.post(f"{PREFIX}/jobs", json=body, headers=auth())
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["details"] == [
        {"field": "data_config.sources[0].path", "message": "invalid value"}
    ]
    for secret in ("/srv/scaimind", "Traceback", "db.internal", "10.0.3.7", "sqlalchemy"):
        assert secret not in r.text


async def test_an_unstructured_message_may_echo_the_callers_values(
    shared_gateway: Gateway,
) -> None:
    client, servicer = shared_gateway
    checkpoint = "/tmp/ckpt/step-000010"
    servicer.responses["ResumeJob"] = Failure(
        grpc.StatusCode.FAILED_PRECONDITION, f"checkpoint {checkpoint} no longer exists on disk"
    )
    r = await client.post(
        f"{PREFIX}/jobs/job_1/resume", json={"checkpoint_id": checkpoint}, headers=auth()
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["message"] == f"checkpoint {checkpoint} no longer exists on disk"

    # The same text about a path the caller did not send is still withheld.
    r = await client.post(f"{PREFIX}/jobs/job_1/resume", json={}, headers=auth())
    assert r.status_code == 409, r.text
    assert checkpoint not in r.text


async def test_retry_info_becomes_retry_after(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    servicer.responses["CancelJob"] = rich(
        StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue is full", retry_after=7)
    )
    r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=auth())
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "7"
    assert r.json()["error"]["retry_after"] == 7


async def test_resource_info_names_what_was_not_found_when_the_text_cannot(
    shared_gateway: Gateway,
) -> None:
    client, servicer = shared_gateway
    servicer.responses["GetJob"] = rich(
        StatusError(
            grpc.StatusCode.NOT_FOUND,
            "job job_9 not found in /var/lib/scaimind/coordinator.db",
            resource=("job", "job_9"),
        )
    )
    r = await client.get(f"{PREFIX}/jobs/job_9", headers=auth())
    assert r.status_code == 404, r.text
    assert r.json()["error"]["message"] == "job job_9 not found"


@pytest.mark.parametrize(
    "trailer",
    [
        (("grpc-status-details-bin", b"\xff\x00not a status"),),
        # A well-formed status whose code contradicts the call's.
        StatusError(grpc.StatusCode.NOT_FOUND, "x: y").trailing_metadata(),
    ],
    ids=["garbage", "contradicting"],
)
async def test_unusable_details_are_ignored_not_a_500(
    shared_gateway: Gateway, trailer: Any
) -> None:
    client, servicer = shared_gateway
    servicer.responses["CancelJob"] = Failure(
        grpc.StatusCode.INVALID_ARGUMENT, "reason: too long", trailer
    )
    r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=auth())
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"] == "reason: too long"
    assert "details" not in error
