"""An unreachable, flaky or hung coordinator: 503/504 within the deadline; reads retried only."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.message import Message

from scaimind.v1 import common_pb2, coordinator_pb2
from tests.conftest import auth, closed_port, gateway_settings
from tests.gateway.conftest import (
    PREFIX,
    Failure,
    Hang,
    ScriptedCoordinator,
    running_gateway,
)
from tests.gateway.test_metadata import MINIMAL_SUBMIT

TIMEOUT_S = 0.5


class FailFirst:
    """Fail the first `n` calls with `failure`, then answer `then`."""

    def __init__(self, n: int, failure: Failure, then: Message) -> None:
        self.n = n
        self.failure = failure
        self.then = then
        self.calls = 0

    def __call__(self, request: Message) -> Any:
        self.calls += 1
        return self.failure if self.calls <= self.n else self.then


@pytest.fixture
async def fast_gateway(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, ScriptedCoordinator]]:
    """The gateway with a short deadline in front of the scripted coordinator."""
    servicer, port = scripted
    settings = gateway_settings(tmp_path, port, grpc_timeout_s=TIMEOUT_S)
    async with running_gateway(settings) as client:
        yield client, servicer


@pytest.fixture
async def down_gateway(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway pointed at a closed port."""
    settings = gateway_settings(tmp_path, closed_port(), grpc_timeout_s=TIMEOUT_S)
    async with running_gateway(settings) as client:
        yield client


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "BACKEND_UNAVAILABLE"
    retry_after = int(r.headers["retry-after"])
    assert retry_after > 0
    assert error["retry_after"] == retry_after


@pytest.mark.parametrize("path", ["/jobs", "/jobs/job_1"])
async def test_unreachable_coordinator_read(down_gateway: httpx.AsyncClient, path: str) -> None:
    started = time.monotonic()
    r = await down_gateway.get(f"{PREFIX}{path}", headers=auth())
    elapsed = time.monotonic() - started
    assert_unavailable(r)
    assert elapsed <= TIMEOUT_S + 1.0, elapsed


async def test_unreachable_coordinator_mutation(down_gateway: httpx.AsyncClient) -> None:
    # That it is a single attempt is shown by test_mutations_are_not_retried (calls counted).
    started = time.monotonic()
    r = await down_gateway.post(f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers=auth())
    elapsed = time.monotonic() - started
    assert_unavailable(r)
    assert elapsed <= TIMEOUT_S + 1.0, elapsed


@pytest.mark.parametrize(
    ("path", "rpc", "then"),
    [
        ("/jobs", "ListJobs", coordinator_pb2.ListJobsResponse(total_count=3)),
        ("/jobs/job_1", "GetJob", common_pb2.Job(job_id="job_1")),
    ],
)
async def test_reads_are_retried_on_unavailable(
    fast_gateway: tuple[httpx.AsyncClient, ScriptedCoordinator],
    path: str,
    rpc: str,
    then: Message,
) -> None:
    client, servicer = fast_gateway
    script = FailFirst(2, Failure(grpc.StatusCode.UNAVAILABLE, "restarting"), then)
    servicer.responses[rpc] = script
    r = await client.get(f"{PREFIX}{path}", headers=auth())
    assert r.status_code == 200, r.text
    assert script.calls == 3
    calls = [c for c in servicer.calls if c.rpc == rpc]
    # Every attempt belongs to the same request and shares one overall deadline.
    assert len({c.metadata["x-request-id"] for c in calls}) == 1
    remaining = [c.time_remaining for c in calls]
    assert all(t is not None for t in remaining)
    assert remaining == sorted(remaining, reverse=True)  # type: ignore[type-var]


@pytest.mark.parametrize("rpc", ["ListJobs", "GetJob"])
async def test_reads_not_retried_on_other_codes(
    fast_gateway: tuple[httpx.AsyncClient, ScriptedCoordinator], rpc: str
) -> None:
    client, servicer = fast_gateway
    servicer.responses[rpc] = Failure(grpc.StatusCode.INTERNAL, "oops")
    path = "/jobs" if rpc == "ListJobs" else "/jobs/job_1"
    r = await client.get(f"{PREFIX}{path}", headers=auth())
    assert r.status_code == 500
    assert len(servicer.calls) == 1


async def test_read_unavailable_throughout_gives_503_within_the_deadline(
    fast_gateway: tuple[httpx.AsyncClient, ScriptedCoordinator],
) -> None:
    client, servicer = fast_gateway
    servicer.responses["ListJobs"] = Failure(grpc.StatusCode.UNAVAILABLE, "down")
    started = time.monotonic()
    r = await client.get(f"{PREFIX}/jobs", headers=auth())
    elapsed = time.monotonic() - started
    assert_unavailable(r)
    assert elapsed <= TIMEOUT_S + 1.0
    assert len(servicer.calls) > 1


MUTATIONS = [
    ("/jobs", "SubmitJob", MINIMAL_SUBMIT),
    ("/jobs/job_1/cancel", "CancelJob", None),
    ("/jobs/job_1/pause", "PauseJob", None),
    ("/jobs/job_1/resume", "ResumeJob", None),
    ("/jobs/job_1/retry", "RetryJob", None),
]


@pytest.mark.parametrize(("path", "rpc", "body"), MUTATIONS, ids=[m[1] for m in MUTATIONS])
async def test_mutations_are_not_retried(
    fast_gateway: tuple[httpx.AsyncClient, ScriptedCoordinator],
    path: str,
    rpc: str,
    body: Any,
) -> None:
    client, servicer = fast_gateway
    script = FailFirst(
        1,
        Failure(grpc.StatusCode.UNAVAILABLE, "restarting"),
        coordinator_pb2.JobActionResponse(),
    )
    servicer.responses[rpc] = script
    r = await client.post(f"{PREFIX}{path}", json=body, headers=auth())
    assert_unavailable(r)
    assert script.calls == 1
    assert [c.rpc for c in servicer.calls] == [rpc]


@pytest.fixture
def hang() -> Any:
    """A hanging script, released at teardown so the server can stop."""
    script = Hang()
    yield script
    script.release.set()


@pytest.mark.parametrize(
    ("method", "path", "rpc", "body"),
    [
        ("GET", "/jobs", "ListJobs", None),
        ("GET", "/jobs/job_1", "GetJob", None),
        ("POST", "/jobs", "SubmitJob", MINIMAL_SUBMIT),
        ("POST", "/jobs/job_1/cancel", "CancelJob", None),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_hung_coordinator_gives_504_within_the_deadline(
    fast_gateway: tuple[httpx.AsyncClient, ScriptedCoordinator],
    hang: Hang,
    method: str,
    path: str,
    rpc: str,
    body: Any,
) -> None:
    client, servicer = fast_gateway
    servicer.responses[rpc] = hang
    started = time.monotonic()
    r = await client.request(method, f"{PREFIX}{path}", json=body, headers=auth())
    elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text
    error = r.json()["error"]
    assert error["code"] == "BACKEND_TIMEOUT"
    assert "retry_after" not in error
    assert TIMEOUT_S - 0.1 <= elapsed <= TIMEOUT_S + 1.0, elapsed
    assert hang.entered == 1  # a timed-out call is not retried, even for reads
