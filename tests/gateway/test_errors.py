"""Coordinator failures → the table of docs/API.md "Coordinator errors", via the mounted path."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import grpc
import httpx
import pytest

from tests.conftest import auth, make_token
from tests.gateway.conftest import PREFIX, Failure, Gateway

# Many small tests: one gateway for the module (shared_gateway resets the script per test).
pytestmark = pytest.mark.asyncio(loop_scope="module")

REQUEST_ID_RE = re.compile(r"^req_[0-9a-f]{26}$")


@dataclass(frozen=True)
class Row:
    """One row of the table in docs/API.md, "Coordinator errors"."""

    http: int
    code: str
    passes_detail: bool
    should_retry: str | None = None


_INTERNAL = Row(500, "INTERNAL_ERROR", False)
TABLE: dict[grpc.StatusCode, Row] = {
    grpc.StatusCode.NOT_FOUND: Row(404, "NOT_FOUND", True),
    grpc.StatusCode.INVALID_ARGUMENT: Row(400, "INVALID_ARGUMENT", True),
    grpc.StatusCode.OUT_OF_RANGE: Row(400, "OUT_OF_RANGE", True),
    grpc.StatusCode.PERMISSION_DENIED: Row(403, "PERMISSION_DENIED", True),
    grpc.StatusCode.UNAUTHENTICATED: Row(401, "UNAUTHENTICATED", True),
    grpc.StatusCode.ALREADY_EXISTS: Row(409, "ALREADY_EXISTS", True, "false"),
    grpc.StatusCode.FAILED_PRECONDITION: Row(409, "FAILED_PRECONDITION", True, "false"),
    grpc.StatusCode.ABORTED: Row(409, "ABORTED", True, "true"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: Row(429, "RESOURCE_EXHAUSTED", True),
    grpc.StatusCode.CANCELLED: Row(499, "CANCELLED", False),
    grpc.StatusCode.DEADLINE_EXCEEDED: Row(504, "BACKEND_TIMEOUT", False),
    grpc.StatusCode.UNAVAILABLE: Row(503, "BACKEND_UNAVAILABLE", False),
    grpc.StatusCode.UNIMPLEMENTED: Row(501, "UNIMPLEMENTED", False),
    grpc.StatusCode.INTERNAL: _INTERNAL,
    grpc.StatusCode.UNKNOWN: _INTERNAL,
    grpc.StatusCode.DATA_LOSS: _INTERNAL,
}
ALL_FAILURES = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]
# Reads retry UNAVAILABLE until their deadline; test_backend_down covers that row for reads.
READ_FAILURES = [c for c in ALL_FAILURES if c is not grpc.StatusCode.UNAVAILABLE]
DETAIL = "job job_1 is COMPLETED; only running jobs can be paused"


def _row(code: grpc.StatusCode) -> Row:
    # Any code missing from the table is "any other": 500 INTERNAL_ERROR.
    return TABLE.get(code, _INTERNAL)


def assert_envelope(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    """Check the ScaiGrid error envelope and return its `error` object."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"status", "error", "meta"}
    assert body["status"] == "error"
    assert body["meta"] == {"request_id": r.headers["x-request-id"]}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert set(error) <= {"code", "message", "details", "retry_after"}
    assert "Traceback" not in r.text
    return dict(error)


async def test_the_table_covers_every_failure_code() -> None:
    assert len(ALL_FAILURES) == 16
    assert set(TABLE) == set(ALL_FAILURES)


@pytest.mark.parametrize("grpc_code", ALL_FAILURES, ids=lambda c: c.name)
async def test_each_grpc_code_maps_to_its_row(
    shared_gateway: Gateway, grpc_code: grpc.StatusCode
) -> None:
    client, servicer = shared_gateway
    row = _row(grpc_code)
    # A mutation, so UNAVAILABLE is not retried and every code reaches the table once.
    servicer.responses["CancelJob"] = Failure(grpc_code, DETAIL)
    r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=auth())
    error = assert_envelope(r, row.http, row.code)
    assert len([c for c in servicer.calls if c.rpc == "CancelJob"]) == 1
    if row.passes_detail:
        assert error["message"] == DETAIL
    else:
        assert DETAIL not in r.text
    assert r.headers.get("x-should-retry") == row.should_retry
    assert "details" not in error
    if grpc_code is grpc.StatusCode.UNAVAILABLE:
        assert int(r.headers["retry-after"]) > 0
        assert error["retry_after"] == int(r.headers["retry-after"])
    else:
        assert "retry-after" not in r.headers
        assert "retry_after" not in error
    assert REQUEST_ID_RE.match(r.headers["x-request-id"])


@pytest.mark.parametrize("grpc_code", READ_FAILURES, ids=lambda c: c.name)
async def test_each_grpc_code_on_a_read(
    shared_gateway: Gateway, grpc_code: grpc.StatusCode
) -> None:
    client, servicer = shared_gateway
    row = _row(grpc_code)
    servicer.responses["GetJob"] = Failure(grpc_code, DETAIL)
    r = await client.get(f"{PREFIX}/jobs/job_1", headers=auth())
    error = assert_envelope(r, row.http, row.code)
    assert (error["message"] == DETAIL) is row.passes_detail
    assert len([c for c in servicer.calls if c.rpc == "GetJob"]) == 1


async def test_resource_exhausted_with_retry_after_from_the_coordinator(
    shared_gateway: Gateway,
) -> None:
    client, servicer = shared_gateway
    servicer.responses["SubmitJob"] = Failure(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "tenant quota of 4 GPUs reached",
        (("retry-after", "7"),),
    )
    r = await client.post(f"{PREFIX}/jobs", json=SUBMIT, headers=auth())
    error = assert_envelope(r, 429, "RESOURCE_EXHAUSTED")
    assert r.headers["retry-after"] == "7"
    assert error["retry_after"] == 7
    assert error["message"] == "tenant quota of 4 GPUs reached"


async def test_resource_exhausted_with_unparsable_retry_after(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    servicer.responses["CancelJob"] = Failure(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", (("retry-after", "soon"),)
    )
    r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=auth())
    error = assert_envelope(r, 429, "RESOURCE_EXHAUSTED")
    assert "retry-after" not in r.headers
    assert "retry_after" not in error


async def test_empty_detail_gets_a_generic_message(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    servicer.responses["CancelJob"] = Failure(grpc.StatusCode.FAILED_PRECONDITION, "")
    r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=auth())
    error = assert_envelope(r, 409, "FAILED_PRECONDITION")
    assert error["message"]


async def test_servicer_exception_is_a_generic_500(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway

    def explode(request: object) -> object:
        raise RuntimeError("boom at /srv/coordinator/store.py line 12")

    servicer.responses["GetJob"] = explode
    r = await client.get(f"{PREFIX}/jobs/job_1", headers=auth())
    assert_envelope(r, 500, "INTERNAL_ERROR")
    assert "boom" not in r.text
    assert "/srv" not in r.text


# --- X-Request-ID ---------------------------------------------------------------------------


@pytest.mark.parametrize("rid", ["abc-123", "req_client.side:42", "A" * 128])
async def test_well_formed_request_id_is_echoed_everywhere(
    shared_gateway: Gateway, rid: str
) -> None:
    client, servicer = shared_gateway
    servicer.responses["CancelJob"] = Failure(grpc.StatusCode.NOT_FOUND, "job job_1 not found")
    r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers={**auth(), "X-Request-ID": rid})
    assert r.headers["x-request-id"] == rid
    assert r.json()["meta"]["request_id"] == rid
    assert servicer.last("CancelJob").metadata["x-request-id"] == rid


@pytest.mark.parametrize(
    "rid", ["", "has space", "A" * 129, "semi;colon", 'quote"d', "ünïcode"], ids=repr
)
async def test_malformed_request_id_is_replaced(shared_gateway: Gateway, rid: str) -> None:
    client, servicer = shared_gateway
    headers = [(k.encode(), v.encode()) for k, v in auth().items()]
    r = await client.get(
        f"{PREFIX}/jobs/job_1", headers=[*headers, (b"x-request-id", rid.encode())]
    )
    assert r.status_code == 200
    generated = r.headers["x-request-id"]
    assert REQUEST_ID_RE.match(generated)
    assert servicer.last("GetJob").metadata["x-request-id"] == generated


async def test_request_ids_differ_per_request(shared_gateway: Gateway) -> None:
    client, _ = shared_gateway
    ids = {(await client.get(f"{PREFIX}/jobs/job_1", headers=auth())).headers["x-request-id"]}
    ids.add((await client.get(f"{PREFIX}/jobs/job_1", headers=auth())).headers["x-request-id"])
    assert len(ids) == 2


async def test_gateway_side_errors_carry_the_request_id(shared_gateway: Gateway) -> None:
    client, _ = shared_gateway
    cases: list[tuple[str, str, dict[str, str], object]] = [
        ("GET", "/jobs", {}, None),  # 401
        ("POST", "/jobs", auth(role="tenant_viewer"), None),  # 403
        ("POST", "/jobs", auth(), {}),  # 422
        ("GET", "/nope", auth(), None),  # 404
    ]
    for method, path, creds, body in cases:
        headers = {**creds, "X-Request-ID": "trace-1"}
        r = await client.request(method, f"{PREFIX}{path}", headers=headers, json=body)
        assert r.status_code >= 400
        assert r.headers["x-request-id"] == "trace-1"
        assert r.json()["meta"]["request_id"] == "trace-1"


# --- sanitisation ---------------------------------------------------------------------------

NOISY = {
    "python_traceback": (
        "Traceback (most recent call last):\n"
        '  File "/opt/scaimind/store.py", line 42, in get\n'
        "KeyError: 'job_1'"
    ),
    "file_line": 'failed in File "store.py", line 42',
    "exception_dump": "ValueError: invalid literal for int() with base 10: 'x'",
    "exception_repr": "lookup failed: KeyError('job_1')",
    "class_repr": "unexpected <class 'asyncio.exceptions.CancelledError'>",
    "sql": "could not run SELECT x FROM jobs WHERE tenant_id = $1",
    "sql_insert": "INSERT INTO jobs (job_id) VALUES ('job_1') failed",
    "asyncpg": "asyncpg.exceptions.UniqueViolationError: duplicate key value",
    "sqlite": "sqlite3.OperationalError: database is locked",
    "sqlalchemy": "sqlalchemy.exc.IntegrityError (psycopg.errors.UniqueViolation)",
    "psycopg": "psycopg2 connection refused",
    "go_goroutine": "goroutine 1 [running]:\nmain.main()",
    "go_panic": "panic: runtime error: index out of range [3] with length 3",
    "java_frame": "java.lang.IllegalStateException\n\tat com.x.Y(Y.java:10)",
    "server_path": "cannot open /var/lib/scaimind/coordinator/state.db",
    "home_path": "permission denied: '/home/scaimind/.scaimind/jwt-secret'",
    "windows_path": "cannot open C:\\scaimind\\state.db",
    "source_location": "failed at /work/main/src/scaimind/coordinator/store.py:88",
    "relative_source_location": "assertion failed (scaimind/coordinator/store.py:88)",
}


@pytest.mark.parametrize("detail", NOISY.values(), ids=NOISY.keys())
async def test_noisy_details_never_reach_the_body(
    shared_gateway: Gateway, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, servicer = shared_gateway
    servicer.responses["PauseJob"] = Failure(grpc.StatusCode.FAILED_PRECONDITION, detail)
    token = make_token()
    caplog.set_level(logging.INFO)
    r = await client.post(
        f"{PREFIX}/jobs/job_1/pause",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "rid-7"},
    )
    error = assert_envelope(r, 409, "FAILED_PRECONDITION")
    assert error["message"] != detail
    for fragment in detail.split():
        if len(fragment) > 6:
            assert fragment not in r.text, fragment
    records = [
        rec for rec in caplog.records if getattr(rec, "event", None) == "scaimind_coordinator_error"
    ]
    assert len(records) == 1
    rec = records[0]
    assert rec.__dict__["grpc_code"] == "FAILED_PRECONDITION"
    assert rec.__dict__["raw_detail"] == detail
    assert rec.__dict__["rpc"] == "PauseJob"
    assert rec.__dict__["request_id"] == "rid-7"
    assert rec.__dict__["tenant_id"] == "tenant-a"
    for record in caplog.records:
        assert token not in record.getMessage()
        assert all(token not in str(v) for v in record.__dict__.values())


BENIGN = [
    DETAIL,
    "job job_9 not found",
    "gpu_type 'H100' is not in the node inventory (known: A100, L4)",
    "priority must be between 0 and 10",
    "data source file:///data/train.jsonl: no such file",
    "queue 'batch' is full: 100 jobs waiting",
    "model 'Modèle-α/ß' not found in scaiatlas",
]


@pytest.mark.parametrize("detail", BENIGN)
async def test_benign_details_pass_verbatim(
    shared_gateway: Gateway, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, servicer = shared_gateway
    servicer.responses["PauseJob"] = Failure(grpc.StatusCode.FAILED_PRECONDITION, detail)
    caplog.set_level(logging.INFO)
    r = await client.post(f"{PREFIX}/jobs/job_1/pause", headers=auth())
    error = assert_envelope(r, 409, "FAILED_PRECONDITION")
    assert error["message"] == detail
    assert [
        rec.__dict__["raw_detail"]
        for rec in caplog.records
        if getattr(rec, "event", None) == "scaimind_coordinator_error"
    ] == [detail]


@pytest.mark.parametrize(
    "grpc_code",
    [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL],
    ids=lambda c: c.name,
)
async def test_fixed_message_codes_log_the_original(
    shared_gateway: Gateway, grpc_code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    client, servicer = shared_gateway
    raw = "connection pool exhausted on shard 3"
    servicer.responses["CancelJob"] = Failure(grpc_code, raw)
    caplog.set_level(logging.INFO)
    r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=auth())
    assert raw not in r.text
    records = [
        rec for rec in caplog.records if getattr(rec, "event", None) == "scaimind_coordinator_error"
    ]
    assert [(rec.__dict__["grpc_code"], rec.__dict__["raw_detail"]) for rec in records] == [
        (grpc_code.name, raw)
    ]
    assert records[0].__dict__["request_id"] == r.headers["x-request-id"]


SUBMIT = {
    "name": "demo",
    "training_config": {"training_type": "SFT", "base_model": {"model_id": "m"}},
    "data_config": {"sources": [{"path": "file:///data/train.jsonl"}]},
    "resource_config": {"gpu_count": 1},
}
