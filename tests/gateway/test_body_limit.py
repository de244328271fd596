"""The body limit: 413 with the envelope, before the body is read and before authentication."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaimind.gateway.app import create_app
from scaimind.gateway.web.body_limit import DRAIN_FACTOR
from tests.conftest import auth, settings_for
from tests.gateway.conftest import PREFIX, Gateway, running_gateway

LIMIT = 4096


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


async def _call(app: Any, scope: dict[str, Any], receive: Any) -> tuple[int, dict[str, str], Any]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, json.loads(body)


def _assert_413(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 413
    assert body["status"] == "error"
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert str(LIMIT) in body["error"]["message"]
    assert body["meta"]["request_id"] == headers["x-request-id"]


async def test_a_declared_length_over_the_limit_is_refused_unread_and_unauthenticated(
    tmp_path: Path,
) -> None:
    app = create_app(settings_for(tmp_path, max_body_bytes=LIMIT))

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    # No Authorization header at all: the limit comes before authentication.
    scope = _scope(f"{PREFIX}/jobs", [(b"content-length", str(48 * 1024 * 1024).encode())])
    _assert_413(*await _call(app, scope, receive))


async def test_a_chunked_body_is_cut_at_the_limit(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path, max_body_bytes=LIMIT))
    chunk = b"x" * 1000
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        assert reads < 100, "kept reading"
        # An endless chunked body (no Content-Length).
        return {"type": "http.request", "body": chunk, "more_body": True}

    scope = _scope(f"{PREFIX}/jobs", [(b"transfer-encoding", b"chunked")])
    _assert_413(*await _call(app, scope, receive))
    # Past the limit the body is dropped, not kept, and only up to DRAIN_FACTOR times the limit
    # (so a client that sends everything before reading still gets to see the 413).
    assert reads == LIMIT * DRAIN_FACTOR // len(chunk) + 1


async def test_a_chunked_body_over_the_limit_is_413_for_an_authenticated_caller(
    scripted: Any, tmp_path: Path
) -> None:
    servicer, port = scripted
    settings = settings_for(tmp_path, grpc_host="127.0.0.1", grpc_port=port, max_body_bytes=LIMIT)

    async def body() -> Any:
        for _ in range(10):
            yield b" " * 1000

    async with running_gateway(settings) as client:
        r = await client.post(
            f"{PREFIX}/jobs",
            content=body(),
            headers={**auth(), "Content-Type": "application/json"},
        )
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert servicer.calls == []


@pytest.mark.asyncio(loop_scope="module")
async def test_a_body_within_the_limit_is_served(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.post(
        f"{PREFIX}/jobs/job_1/cancel", json={"reason": "x" * 1000}, headers=auth()
    )
    assert r.status_code == 200, r.text
    assert servicer.last("CancelJob").request.reason == "x" * 1000  # type: ignore[attr-defined]


@pytest.mark.asyncio(loop_scope="module")
async def test_the_default_limit_is_one_mebibyte(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    over = httpx.Request(
        "POST",
        f"http://test{PREFIX}/jobs",
        content=b" " * (1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )
    r = await client.send(over)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert servicer.calls == []
