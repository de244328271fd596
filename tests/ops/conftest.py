"""Cluster/queue/evaluation/data scripts, a gateway factory and a loopback RFC 8693 IdP."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import httpx
import pytest
from fastapi import FastAPI
from google.protobuf.timestamp_pb2 import Timestamp

from scaimind.contract.downstream_tokens import METADATA_KEYS, verify_downstream_token
from scaimind.gateway.app import create_app
from scaimind.gateway.security.auth import embedded_secret
from scaimind.gateway.state import State
from scaimind.settings import Settings
from scaimind.v1 import (
    cluster_pb2,
    common_pb2,
    coordinator_pb2,
)
from tests.conftest import gateway_settings
from tests.gateway.conftest import ScriptedCoordinator, app_client, serving

PREFIX = "/v1/modules/scaimind"
DRIVE = "x-scaidrive-token"
ATLAS = "x-scaiatlas-token"
IDP_CLIENT_ID = "scaimind gateway"  # a space, to check the RFC 6749 form-encoding
IDP_CLIENT_SECRET = "idp-client-secret:/+"


def ts(seconds: int) -> Timestamp:
    """A protobuf timestamp."""
    return Timestamp(seconds=seconds)


def node(node_id: str = "node-1", status: int = cluster_pb2.NODE_STATUS_ONLINE) -> Any:
    """A fully populated Node."""
    return cluster_pb2.Node(
        node_id=node_id,
        hostname=f"{node_id}.local",
        status=status,
        gpu_type="A100-80GB",
        gpu_count=2,
        gpus_available=1,
        gpus=[
            cluster_pb2.Gpu(
                index=0,
                utilization_percent=87.5,
                memory_used_bytes=10,
                memory_total_bytes=80,
                job_id="job_7",
            ),
            cluster_pb2.Gpu(index=1, memory_total_bytes=80),
        ],
        running_job_ids=["job_7"],
        labels={"zone": "a"},
        last_heartbeat=ts(1_700_000_000),
    )


class OpsCoordinator(ScriptedCoordinator):
    """The scripted coordinator with default answers for the cluster, evaluation and data RPCs."""

    async def ListNodes(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "ListNodes",
            request,
            context,
            cluster_pb2.ListNodesResponse(nodes=[node()], next_page_token="p2", total_count=3),
        )

    async def GetNode(self, request: Any, context: Any) -> Any:
        return await self._answer("GetNode", request, context, node(request.node_id))

    async def DrainNode(self, request: Any, context: Any) -> Any:
        drained = node(request.node_id, cluster_pb2.NODE_STATUS_DRAINING)
        drained.drain_reason = request.reason
        return await self._answer("DrainNode", request, context, drained)

    async def EnableNode(self, request: Any, context: Any) -> Any:
        return await self._answer("EnableNode", request, context, node(request.node_id))

    async def GetQueueStatus(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "GetQueueStatus", request, context, cluster_pb2.GetQueueStatusResponse()
        )

    async def SubmitEvaluation(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "SubmitEvaluation",
            request,
            context,
            coordinator_pb2.SubmitEvaluationResponse(
                evaluation_id="eval_1", status=common_pb2.JOB_STATUS_QUEUED, message="queued"
            ),
        )

    async def GetEvaluation(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "GetEvaluation",
            request,
            context,
            coordinator_pb2.Evaluation(evaluation_id=request.evaluation_id, job_id="job_1"),
        )

    async def ListEvaluations(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "ListEvaluations", request, context, coordinator_pb2.ListEvaluationsResponse()
        )

    async def ValidateData(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "ValidateData", request, context, coordinator_pb2.ValidateDataResponse(valid=True)
        )

    async def GetDataCache(self, request: Any, context: Any) -> Any:
        return await self._answer(
            "GetDataCache", request, context, coordinator_pb2.GetDataCacheResponse()
        )


@pytest.fixture
async def coordinator() -> AsyncIterator[tuple[OpsCoordinator, int]]:
    """The scripted coordinator on a real grpc.aio server, 127.0.0.1:<port>."""
    servicer = OpsCoordinator()
    async with serving(servicer) as port:
        yield servicer, port


@dataclass
class Gateway:
    """The standalone app with its lifespan entered, an HTTP client and the coordinator."""

    http: httpx.AsyncClient
    coordinator: OpsCoordinator
    app: FastAPI
    settings: Settings

    @property
    def state(self) -> State:
        """The module's lifespan state."""
        state = self.app.state.scaimind
        assert isinstance(state, State)
        return state

    def assert_signed_tokens(
        self, metadata: dict[str, str], tenant: str = "tenant-a", user: str = "user-1"
    ) -> None:
        """Both downstream tokens are there and verify with the data dir's embedded key."""
        key = embedded_secret(self.settings.data_dir)
        for audience, header in METADATA_KEYS.items():
            claims = verify_downstream_token(
                metadata.get(header), key=key, audience=audience, tenant_id=tenant
            )
            assert claims["sub"] == user

    def rpcs(self) -> list[str]:
        """Names of the RPCs the coordinator received, in order."""
        return [c.rpc for c in self.coordinator.calls]


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(
    coordinator: tuple[OpsCoordinator, int], tmp_path: Path
) -> AsyncIterator[GatewayFactory]:
    """Opens gateways (settings overrides as keyword arguments); all close at teardown."""
    servicer, port = coordinator
    async with AsyncExitStack() as stack:

        async def open_gateway(**overrides: Any) -> Gateway:
            settings = gateway_settings(tmp_path, port, **overrides)
            app = create_app(settings)
            client = await stack.enter_async_context(app_client(app))
            return Gateway(client, servicer, app, settings)

        yield open_gateway


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    """A gateway in the embedded token mode (tokens signed locally)."""
    return await make_gateway()


# --- a real RFC 8693 token endpoint on loopback ----------------------------------------------

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT_TYPES = {
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:access_token",
}


@dataclass
class IdP:
    """A token endpoint that checks client auth, grant and audience, and issues opaque tokens.

    `mode`: "ok", "error" (HTTP 500), "hang" (answers only at teardown), "badjson" or
    "noaccess" (200 without access_token). `expires_in` None omits the field. Closing `gate`
    holds every answer until it is set again.
    """

    mode: str = "ok"
    expires_in: Any = 120
    requests: list[dict[str, Any]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The token endpoint."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/token"

    def audiences(self) -> list[str]:
        """Audience of every exchange request received, in order."""
        with self._lock:
            return [r["audience"] for r in self.requests]

    def start(self) -> None:
        """Serve on 127.0.0.1:<random port> in a thread."""
        self.gate.set()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                # The gateway may have given up first (timeout tests).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    idp._handle(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Release held answers and shut down."""
        self.release.set()
        self.gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(h.rfile.read(length).decode()).items()}
        if h.path != "/token":
            return _reply(h, 404, {"error": "not_found"})
        scheme, _, creds = (h.headers.get("Authorization") or "").partition(" ")
        try:
            user, _, password = base64.b64decode(creds).decode().partition(":")
        except ValueError:
            user = password = ""
        if scheme != "Basic" or (unquote_plus(user), unquote_plus(password)) != (
            IDP_CLIENT_ID,
            IDP_CLIENT_SECRET,
        ):
            return _reply(h, 401, {"error": "invalid_client"})
        if form.get("grant_type") != GRANT_TYPE:
            return _reply(h, 400, {"error": "unsupported_grant_type"})
        if not form.get("subject_token") or form.get("subject_token_type") not in SUBJECT_TYPES:
            return _reply(h, 400, {"error": "invalid_request"})
        audience = form.get("audience")
        if audience not in ("scaidrive", "scaiatlas"):
            return _reply(h, 400, {"error": "invalid_target"})
        with self._lock:
            self.requests.append(form)
        self.gate.wait(10)
        if self.mode == "error":
            return _reply(h, 500, {"error": "server_error"})
        if self.mode == "hang":
            self.release.wait(10)
            return _reply(h, 504, {"error": "too_late"})
        if self.mode == "badjson":
            return _reply(h, 200, b"{not json")
        token = f"idp.{audience}.{secrets.token_hex(8)}"
        with self._lock:
            self.issued.append(token)
        body: dict[str, Any] = {
            "access_token": token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
        }
        if self.mode == "noaccess":
            del body["access_token"]
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return _reply(h, 200, body)


def _reply(h: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(raw)))
    h.end_headers()
    h.wfile.write(raw)


@pytest.fixture
def idp() -> Iterator[IdP]:
    """A running loopback identity provider."""
    server = IdP()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def exchange_settings(idp: IdP, **overrides: Any) -> dict[str, Any]:
    """Settings overrides that point the gateway at the loopback IdP."""
    values: dict[str, Any] = {
        "token_exchange_url": idp.url,
        "token_exchange_client_id": IDP_CLIENT_ID,
        "token_exchange_client_secret": IDP_CLIENT_SECRET,
    }
    values.update(overrides)
    return values
