"""A scripted coordinator on a real grpc.aio server (port 0) and the gateway in front of it."""

from __future__ import annotations

import asyncio
import inspect
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from google.protobuf.message import Message

from scaimind.gateway.app import create_app, lifespan
from scaimind.gateway.db.migrate import upgrade
from scaimind.settings import Settings
from scaimind.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
)
from tests.conftest import gateway_settings


@dataclass
class Received:
    """One call the scripted coordinator received."""

    rpc: str
    request: Message
    metadata: dict[str, str]
    time_remaining: float | None
    # The client's address ("ipv4:127.0.0.1:PORT"): one value means one connection.
    peer: str = ""


@dataclass
class Failure:
    """A scripted failure: abort with this code, detail and trailing metadata."""

    code: grpc.StatusCode
    detail: str = ""
    trailing: tuple[tuple[str, str], ...] = ()


Script = Callable[[Message], Any]

PREFIX = "/v1/modules/scaimind"
Gateway = tuple[httpx.AsyncClient, "ScriptedCoordinator"]


@dataclass
class ScriptedCoordinator(
    coordinator_pb2_grpc.CoordinatorServiceServicer, cluster_pb2_grpc.ClusterServiceServicer
):
    """Records every call; answers from `responses` (a message, a Failure or a callable)."""

    calls: list[Received] = field(default_factory=list)
    responses: dict[str, Any] = field(default_factory=dict)

    def record(
        self, rpc: str, request: Message, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Note a call as received."""
        self.calls.append(
            Received(
                rpc=rpc,
                request=request,
                metadata=dict(context.invocation_metadata() or ()),
                time_remaining=context.time_remaining(),
                peer=context.peer(),
            )
        )

    async def _answer(
        self,
        rpc: str,
        request: Message,
        context: grpc.aio.ServicerContext[Any, Any],
        default: Message,
    ) -> Any:
        self.record(rpc, request, context)
        answer = self.responses.get(rpc, default)
        if callable(answer) and not isinstance(answer, Message):
            answer = answer(request)
            if inspect.isawaitable(answer):
                answer = await answer
        if isinstance(answer, Failure):
            if answer.trailing:
                context.set_trailing_metadata(answer.trailing)
            await context.abort(answer.code, answer.detail)
        return answer

    def last(self, rpc: str) -> Received:
        """The most recent call of an RPC."""
        for call in reversed(self.calls):
            if call.rpc == rpc:
                return call
        raise AssertionError(f"{rpc} was never called; calls: {[c.rpc for c in self.calls]}")

    async def SubmitJob(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "SubmitJob",
            request,
            context,
            coordinator_pb2.SubmitJobResponse(
                job_id="job_1", status=common_pb2.JOB_STATUS_QUEUED, message="queued"
            ),
        )

    async def ListJobs(self, request: Any, context: Any) -> Any:
        return await self._answer("ListJobs", request, context, coordinator_pb2.ListJobsResponse())

    async def GetJob(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "GetJob",
            request,
            context,
            common_pb2.Job(job_id=request.job_id, status=common_pb2.JOB_STATUS_TRAINING),
        )

    async def _action(self, rpc: str, request: Any, context: Any, status: int) -> Any:
        default = coordinator_pb2.JobActionResponse(job_id=request.job_id, status=status)
        return await self._answer(rpc, request, context, default)

    async def CancelJob(self, request: Any, context: Any) -> Any:
        return await self._action("CancelJob", request, context, common_pb2.JOB_STATUS_CANCELLED)

    async def PauseJob(self, request: Any, context: Any) -> Any:
        return await self._action("PauseJob", request, context, common_pb2.JOB_STATUS_PAUSED)

    async def ResumeJob(self, request: Any, context: Any) -> Any:
        return await self._action("ResumeJob", request, context, common_pb2.JOB_STATUS_QUEUED)

    async def RetryJob(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "RetryJob",
            request,
            context,
            coordinator_pb2.RetryJobResponse(
                job_id="job_child",
                parent_job_id=request.job_id,
                status=common_pb2.JOB_STATUS_QUEUED,
            ),
        )

    async def GetClusterStatus(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "GetClusterStatus", request, context, cluster_pb2.ClusterStatus(cluster_name="test")
        )


@asynccontextmanager
async def serving(servicer: ScriptedCoordinator) -> AsyncIterator[int]:
    """`servicer` as both services on a real grpc.aio server; yields its 127.0.0.1 port."""
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(servicer, server)
    cluster_pb2_grpc.add_ClusterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


@pytest.fixture(scope="session")
def migrated_cache_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache database migrated once per session, to be copied by each test."""
    path = tmp_path_factory.mktemp("cache-template") / "cache.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(autouse=True)
def cache_db(migrated_cache_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's gateway gets its own copy of a migrated cache database.

    Migrating a fresh SQLite file costs ~60 ms of CPU per gateway; a copy keeps the isolation
    for a fraction of that. Tests that want the default URL remove the variable.
    """
    path = tmp_path / "cache.db"
    shutil.copyfile(migrated_cache_db, path)
    monkeypatch.setenv("SCAIMIND_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedCoordinator, int]]:
    """A scripted coordinator listening on 127.0.0.1:<port>."""
    servicer = ScriptedCoordinator()  # type: ignore[abstract]  # unscripted RPCs: UNIMPLEMENTED
    async with serving(servicer) as port:
        yield servicer, port


class Hang:
    """A script that never answers until released (at teardown), to provoke deadlines."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, request: Message) -> Any:
        self.entered += 1
        await self.release.wait()
        raise AssertionError("a hung call was released before its deadline")


@asynccontextmanager
async def app_client(
    app: FastAPI, *, base_url: str = "http://test", http_timeout_s: float = 5.0
) -> AsyncIterator[httpx.AsyncClient]:
    """`app` with the module's lifespan entered, behind an httpx client (app errors → 500)."""
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url=base_url, timeout=http_timeout_s
        ) as client:
            yield client


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The standalone app for `settings`, lifespan entered, behind an httpx client."""
    async with app_client(create_app(settings)) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def module_gateway(
    tmp_path_factory: pytest.TempPathFactory, migrated_cache_db: Path
) -> AsyncIterator[Gateway]:
    """One scripted coordinator and gateway per test module (for modules of many small tests).

    Tests using it run on the module's event loop (`pytest.mark.asyncio(loop_scope="module")`)
    and get it through `shared_gateway`, which forgets the previous test's calls and script.
    """
    servicer = ScriptedCoordinator()  # type: ignore[abstract]
    tmp = tmp_path_factory.mktemp("module-gateway")
    shutil.copyfile(migrated_cache_db, tmp / "cache.db")
    async with serving(servicer) as port:
        settings = gateway_settings(
            tmp,
            port,
            database_url=f"sqlite+aiosqlite:///{tmp / 'cache.db'}",
        )
        async with running_gateway(settings) as client:
            yield client, servicer


@pytest.fixture
def shared_gateway(module_gateway: Gateway) -> Gateway:
    """The module's gateway with a clean script and call log."""
    servicer = module_gateway[1]
    servicer.calls.clear()
    servicer.responses.clear()
    return module_gateway


@pytest.fixture
async def gateway(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> AsyncIterator[Gateway]:
    """The standalone app, lifespan entered, talking to the scripted coordinator."""
    servicer, port = scripted
    async with running_gateway(gateway_settings(tmp_path, port)) as client:
        yield client, servicer
