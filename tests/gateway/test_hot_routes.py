"""The hot routes answer exactly what the FastAPI routes answer, and only take plain requests.

Each case goes to two apps on the same scripted coordinator: the standalone app, and the same
app with its hot routes taken out (FastAPI answers everything). Status, body (request ids
aside), content type and the gRPC request and metadata the coordinator received must be equal;
and the case says whether the hot route or FastAPI served it in the standalone app.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from starlette.types import Message, Receive, Scope, Send

from scaimind.gateway.app import create_app, lifespan, mount_module
from scaimind.gateway.web.hot_routes import HotRoute
from scaimind.gateway.web.routes import jobs
from scaimind.v1 import common_pb2, coordinator_pb2
from tests.conftest import gateway_settings, make_token
from tests.gateway.conftest import PREFIX, Failure, ScriptedCoordinator, app_client

VIEWER = make_token(role="tenant_viewer")
ADMIN = make_token()
FORGED = make_token(secret="another-secret-another-secret-another-secret-0123")


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    hot: bool  # served by the hot route in the standalone app
    token: str | None = ADMIN
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


JOBS = f"{PREFIX}/jobs"
JSON = "application/json"


def cancel(
    name: str,
    *,
    hot: bool,
    body: bytes | None = None,
    content_type: str | None = None,
    job: str = "job_1",
    token: str | None = ADMIN,
    query: str = "",
) -> Case:
    """A POST /jobs/{job}/cancel case."""
    headers = {"content-type": content_type} if content_type else {}
    path = f"{JOBS}/{job}/cancel{query}"
    return Case(name, "POST", path, hot, token=token, content=body, headers=headers)


CASES = [
    Case("get", "GET", f"{JOBS}/job_1", hot=True),
    Case("get basic", "GET", f"{JOBS}/job_1?view=BASIC", hot=True),
    Case("get full", "GET", f"{JOBS}/job_1?view=FULL", hot=True),
    Case("get by a viewer", "GET", f"{JOBS}/job_1", hot=True, token=VIEWER),
    Case("get unknown job", "GET", f"{JOBS}/job_missing", hot=True),
    Case("get without token", "GET", f"{JOBS}/job_1", hot=True, token=None),
    Case("get with forged token", "GET", f"{JOBS}/job_1", hot=True, token=FORGED),
    Case("get bad view", "GET", f"{JOBS}/job_1?view=basic", hot=False),
    Case("get other query", "GET", f"{JOBS}/job_1?view=FULL&x=1", hot=False),
    Case("get id too long", "GET", f"{JOBS}/{'j' * 129}", hot=False),
    Case("get longest id", "GET", f"{JOBS}/{'j' * 128}", hot=True),
    Case("get encoded slash", "GET", f"{JOBS}/job%2F1", hot=False),
    Case("list", "GET", JOBS, hot=True),
    Case("list by a viewer", "GET", JOBS, hot=True, token=VIEWER),
    Case("list without token", "GET", JOBS, hot=True, token=None),
    Case("list page size", "GET", f"{JOBS}?page_size=5", hot=False),
    Case("list trailing slash", "GET", f"{JOBS}/", hot=False),
    cancel("cancel {}", hot=True, body=b"{}", content_type=JSON),
    cancel("cancel no body", hot=True),
    cancel(
        "cancel reason",
        hot=True,
        body=b'{"reason": "wrong data"}',
        content_type="application/json; charset=utf-8",
    ),
    # FastAPI takes a body without a content type as bytes (a 422 for a model).
    cancel("cancel no content type", hot=False, body=b"{}"),
    cancel("cancel terminal", hot=True, body=b"{}", content_type=JSON, job="job_done"),
    cancel("cancel by a viewer", hot=True, token=VIEWER),
    cancel("cancel without token", hot=True, token=None),
    cancel("cancel reason not a string", hot=False, body=b'{"reason": 5}', content_type=JSON),
    cancel("cancel unknown field", hot=False, body=b'{"reasons": "x"}', content_type=JSON),
    cancel(
        "cancel reason too long",
        hot=False,
        body=b'{"reason": "' + b"r" * 5000 + b'"}',
        content_type=JSON,
    ),
    cancel("cancel lone surrogate", hot=False, body=b'{"reason": "\\ud800"}', content_type=JSON),
    cancel(
        "cancel duplicate key", hot=True, body=b'{"reason": "a", "reason": "b"}', content_type=JSON
    ),
    cancel("cancel not json", hot=False, body=b"{nope"),
    cancel("cancel null", hot=False, body=b"null"),
    cancel("cancel bad body without token", hot=False, token=None, body=b"{nope"),
    cancel("cancel text body", hot=False, body=b"{}", content_type="text/plain"),
    cancel("cancel with query", hot=False, body=b"{}", query="?x=1"),
    Case("pause is not hot", "POST", f"{JOBS}/job_1/pause", hot=False, content=b"{}"),
]


class RouteSpy:
    """The app, noting which route the router chose (it writes it into the request's scope)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.route: object = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.route = scope.get("route")


def script(servicer: ScriptedCoordinator) -> None:
    def get(request: coordinator_pb2.GetJobRequest) -> Any:
        if request.job_id == "job_missing":
            return Failure(grpc.StatusCode.NOT_FOUND, "job not found: job_missing")
        return common_pb2.Job(job_id=request.job_id, status=common_pb2.JOB_STATUS_TRAINING)

    def cancel(request: coordinator_pb2.CancelJobRequest) -> Any:
        if request.job_id == "job_done":
            return Failure(grpc.StatusCode.FAILED_PRECONDITION, "job job_done is COMPLETED")
        return coordinator_pb2.JobActionResponse(job_id=request.job_id, status=5)

    servicer.responses["GetJob"] = get
    servicer.responses["CancelJob"] = cancel


@dataclass
class Apps:
    """The standalone app (behind the spy) and the same app without its hot routes."""

    hot_client: httpx.AsyncClient
    plain_client: httpx.AsyncClient
    spy: RouteSpy
    plain: FastAPI
    servicer: ScriptedCoordinator


@pytest.fixture
async def apps(scripted: tuple[ScriptedCoordinator, int], tmp_path: Path) -> AsyncIterator[Apps]:
    servicer, port = scripted
    script(servicer)
    settings = gateway_settings(tmp_path, port)
    hot, plain = create_app(settings), create_app(settings)
    plain.router.routes[:] = [r for r in plain.router.routes if not isinstance(r, HotRoute)]
    assert len(plain.router.routes) == len(hot.router.routes) - 3
    spy = RouteSpy(hot)
    async with (
        lifespan(hot),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=spy, raise_app_exceptions=False),
            base_url="http://test",
        ) as hot_client,
        app_client(plain) as plain_client,
    ):
        yield Apps(hot_client, plain_client, spy, plain, servicer)


_REQUEST_ID = re.compile(rb"req_[0-9a-f]{26}")


async def _send(client: httpx.AsyncClient, case: Case) -> httpx.Response:
    headers = dict(case.headers)
    if case.token is not None:
        headers["authorization"] = f"Bearer {case.token}"
    return await client.request(case.method, case.path, content=case.content, headers=headers)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_hot_route_answers_as_fastapi_does(
    apps: Apps,
    case: Case,
) -> None:
    hot_client, plain_client, spy, servicer = (
        apps.hot_client,
        apps.plain_client,
        apps.spy,
        apps.servicer,
    )
    answers, received = [], []
    for client in (hot_client, plain_client):
        servicer.calls.clear()
        answers.append(await _send(client, case))
        received.append(
            [
                (c.rpc, c.request, {k: v for k, v in c.metadata.items() if k != "x-request-id"})
                for c in servicer.calls
            ]
        )
    hot, plain = answers
    assert isinstance(spy.route, HotRoute) is case.hot, spy.route
    assert hot.status_code == plain.status_code, (hot.text, plain.text)
    assert hot.status_code < 500, hot.text
    assert _REQUEST_ID.sub(b"req_", hot.content) == _REQUEST_ID.sub(b"req_", plain.content)
    assert hot.headers["content-type"] == plain.headers["content-type"]
    assert received[0] == received[1]
    if case.name == "cancel reason":
        assert received[0][0][1].reason == "wrong data"


async def test_a_host_user_dependency_turns_the_hot_routes_off(
    apps: Apps,
) -> None:
    hot_client, spy = apps.hot_client, apps.spy
    from scaimind.gateway.security.auth import CurrentUser
    from scaimind.gateway.web.deps import get_current_user

    async def host_user() -> CurrentUser:
        return CurrentUser(tenant_id="host-tenant", user_id="u", permissions=frozenset())

    spy.app.dependency_overrides[get_current_user] = host_user
    answer = await hot_client.get(f"{JOBS}/job_1")
    # The host's user (no permissions) is asked, not the bearer token (there is none).
    assert answer.status_code == 403, answer.text
    assert not isinstance(spy.route, HotRoute)


def test_the_hot_routes_know_every_parameter_of_their_handlers() -> None:
    # The hot routes pass these and let the rest take their defaults (the first page, the
    # default view): a new parameter or dependency on a handler, or one on its router, must be
    # taken into web/hot_routes.py (or the route left out of it) before this passes again.
    expected = {
        jobs.get_job: ["job_id", "who", "client", "cache", "view"],
        jobs.list_jobs: [
            "who",
            "client",
            "cache",
            "status",
            "page_size",
            "page_token",
            "order_by",
            "label",
            "view",
        ],
        jobs.cancel_job: ["job_id", "who", "client", "body"],
    }
    for handler, parameters in expected.items():
        assert list(inspect.signature(handler).parameters) == parameters, handler.__name__
    assert jobs.router.dependencies == []


def test_a_host_app_gets_no_hot_routes(tmp_path: Path) -> None:
    async def gate() -> None:
        raise HTTPException(403, "the host's gate")

    host = FastAPI(dependencies=[Depends(gate)])
    mount_module(host, gateway_settings(tmp_path, 1))
    assert not [r for r in host.router.routes if isinstance(r, HotRoute)]


async def _asgi(app: FastAPI, method: str, path: str, messages: list[Message]) -> int:
    """Status of `app`'s answer to a request whose receive yields `messages`, then a
    disconnect; the app must not raise."""
    sent: list[Message] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"authorization", f"Bearer {ADMIN}".encode()),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
    }

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return next(int(m["status"]) for m in sent if m["type"] == "http.response.start")


@pytest.mark.parametrize(
    ("method", "path", "messages"),
    [
        # The client goes away in the middle of the cancel's body (FastAPI: 400).
        (
            "POST",
            f"{JOBS}/job_1/cancel",
            [{"type": "http.request", "body": b'{"rea', "more_body": True}],
        ),
        # A lone surrogate in the path (uvicorn never makes one; another server might).
        ("GET", f"{JOBS}/\udcff", []),
        ("POST", f"{JOBS}/\udcff/cancel", [{"type": "http.request", "body": b"{}"}]),
    ],
    ids=["disconnect mid-body", "surrogate id", "surrogate id cancel"],
)
async def test_odd_requests_get_fastapis_answer(
    apps: Apps,
    method: str,
    path: str,
    messages: list[Message],
) -> None:
    hot_status = await _asgi(apps.spy.app, method, path, list(messages))
    plain_status = await _asgi(apps.plain, method, path, list(messages))
    assert hot_status == plain_status
    assert 400 <= hot_status < 500
    assert not apps.servicer.calls


async def test_a_chunked_cancel_body_over_the_limit_is_413_unread_on_the_hot_route(
    apps: Apps,
) -> None:
    # The hot route reads the cancel's body itself: the body limit still bounds what it holds.
    async def endless() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 65_536  # 4 MiB in all, against the default limit of 1 MiB

    answer = await apps.hot_client.post(
        f"{JOBS}/job_1/cancel",
        content=endless(),
        headers={"authorization": f"Bearer {ADMIN}", "content-type": JSON},
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert isinstance(apps.spy.route, HotRoute)
    assert not apps.servicer.calls
