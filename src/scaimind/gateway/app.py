"""The FastAPI application, the module router and the lifespan that owns every resource."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final, Literal

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from scaimind import __version__
from scaimind.gateway.backend.client import CallContext, CoordinatorClient, open_channel
from scaimind.gateway.db.resources import open_cache
from scaimind.gateway.errors import CoordinatorError, NotFound
from scaimind.gateway.manifest import MANIFEST
from scaimind.gateway.metrics import open_cluster_figures
from scaimind.gateway.security.apikeys import ApiKeyStore
from scaimind.gateway.security.auth import CurrentUser, TokenVerifier, secret_file
from scaimind.gateway.security.token_exchange import open_token_exchange
from scaimind.gateway.state import State
from scaimind.gateway.streaming.resources import open_streams
from scaimind.gateway.web.body_limit import BodyLimitMiddleware
from scaimind.gateway.web.deps import get_current_user
from scaimind.gateway.web.envelope import RequestIdMiddleware, install_error_handlers, request_id_of
from scaimind.gateway.web.hot_routes import hot_routes
from scaimind.gateway.web.openapi import install_docs
from scaimind.gateway.web.request_metrics import RequestMetricsMiddleware
from scaimind.settings import Settings

logger = logging.getLogger("scaimind.gateway.app")

API_PREFIX: Final = MANIFEST.api_prefix
_API_SECRET_FILE: Final = "api-secret"
_READY_TIMEOUT_S: Final = 2.0


def module_router() -> APIRouter:
    """Every module endpoint, without a prefix; hosts include it under API_PREFIX."""
    from scaimind.gateway.web.console import router as console_router
    from scaimind.gateway.web.routes import cluster, data, evaluations, jobs, monitoring, queue

    # Stable operation ids (scaimind_list_jobs, ...) for generated clients and OpenAPI links.
    router = APIRouter(generate_unique_id_function=lambda route: f"scaimind_{route.name}")
    router.include_router(jobs.router)
    router.include_router(monitoring.router)
    router.include_router(cluster.router)
    router.include_router(queue.router)
    router.include_router(evaluations.router)
    router.include_router(data.router)
    # The console's pages and assets; before the catch-all, which would answer them 404.
    router.include_router(console_router())

    @router.api_route(
        "/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def unknown(path: str, request: Request) -> Response:
        raise NotFound(f"no such endpoint: {request.method} {request.url.path}")

    return router


def coordinator_api_secret(settings: Settings) -> str:
    """The gateway↔coordinator secret: SCAIMIND_API_SECRET, else the data dir's `api-secret`
    (made on first use), which an embedded coordinator shares."""
    if settings.api_secret:
        return settings.api_secret.get_secret_value()
    return secret_file(settings.data_dir, _API_SECRET_FILE)


async def start_embedded_coordinator(
    settings: Settings, api_secret: str, stack: AsyncExitStack
) -> str:
    from scaimind.coordinator.server import start_coordinator
    from scaimind.gateway.security.token_exchange import downstream_signing_key

    running = await start_coordinator(
        settings.coordinator_config(
            data_dir=settings.data_dir / "coordinator",
            host="127.0.0.1",
            port=0,
            api_secret=api_secret,
            # Verifies the x-scaidrive-token the gateway signs for scaidrive:// sources.
            downstream_token_key=downstream_signing_key(settings),
            # The gateway's secrets and cache database sit beside the coordinator's data dir.
            protected_dirs=(settings.data_dir,),
        )
    )
    stack.push_async_callback(running.stop)
    return f"127.0.0.1:{running.port}"


def _warn_if_plaintext(settings: Settings) -> None:
    """Say so at start when the coordinator is reached in plain text over a network."""
    if settings.tls_enabled or settings.embedded_coordinator or is_loopback(settings.grpc_host):
        return
    # The API secret, tenant ids and downstream tokens travel in the call metadata.
    logger.warning(
        "TLS to the coordinator is off and %s is not a loopback address: the API secret and "
        "downstream tokens travel in plain text; set SCAIMIND_TLS_ENABLED=true",
        settings.grpc_target,
        extra={"event": "scaimind_coordinator_plaintext"},
    )


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the module's resources on `app.state.scaimind`; safe to enter more than once.

    A host app enters it from its own lifespan (Starlette never runs a mounted sub-app's
    lifespan); a nested or repeated entry shares the resources of the first.
    """
    if isinstance(getattr(app.state, "scaimind", None), State):
        yield
        return
    settings: Settings = app.state.scaimind_settings
    async with AsyncExitStack() as stack:
        api_secret = coordinator_api_secret(settings)
        target = settings.grpc_target
        _warn_if_plaintext(settings)
        if settings.embedded_coordinator:
            target = await start_embedded_coordinator(settings, api_secret, stack)
        channel = open_channel(settings, target)
        client = CoordinatorClient(
            channel, api_secret=api_secret, timeout_s=settings.grpc_timeout_s
        )
        stack.push_async_callback(client.close)
        cache = await open_cache(settings, stack)
        app.state.scaimind = State(
            settings=settings,
            client=client,
            verifier=TokenVerifier(settings),
            cache=cache,
            # Keys live in the cache database; a server database is migrated by `migrate`.
            api_keys=ApiKeyStore(cache.engine, timeout_s=settings.cache_sync_timeout_s),
            token_exchange=await open_token_exchange(settings, stack),
            streams=open_streams(settings, stack),
            cluster_figures=open_cluster_figures(client, stack),
        )
        stack.callback(delattr, app.state, "scaimind")
        logger.info("scaimind module started; coordinator at %s", target)
        yield


def mount_module(
    app: FastAPI,
    settings: Settings,
    *,
    current_user: Callable[..., Any] | None = None,
    prefix: str = API_PREFIX,
) -> None:
    """Add the module to a host app: routes under `prefix`, error envelope, request ids.

    The host supplies its own user dependency (`current_user`, returning a `CurrentUser`) and
    must enter `scaimind.gateway.app.lifespan(app)` from its own lifespan.
    """
    app.state.scaimind_settings = settings
    install_error_handlers(app)
    if not getattr(app.state, "scaimind_request_ids", False):
        # Added first, so it runs inside the request-id middleware (its 413 carries the id).
        app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, prefix=prefix)
        app.add_middleware(RequestIdMiddleware)
        # Outermost: the latency it records covers the request id and the 413s too.
        app.add_middleware(RequestMetricsMiddleware, prefix=prefix)
        app.state.scaimind_request_ids = True
    app.include_router(module_router(), prefix=prefix)
    if current_user is not None:
        app.dependency_overrides[get_current_user] = current_user


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = Field(description='Always "ok" while the process serves.')
    version: str = Field(description="ScaiMind version.")


class Readiness(BaseModel):
    """Readiness and what it was judged on."""

    status: Literal["ok", "unavailable"] = Field(description="ok when every check is ok.")
    checks: dict[str, str] = Field(
        description="coordinator and cache: ok, or what is wrong (e.g. BACKEND_UNAVAILABLE)."
    )


def _health_routes(app: FastAPI) -> None:
    @app.get("/health", tags=["health"], response_model=Health, operation_id="health")
    async def health() -> dict[str, Any]:
        """Liveness: the process serves requests."""
        return {"status": "ok", "version": __version__}

    @app.get(
        "/health/ready",
        tags=["health"],
        operation_id="ready",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready: see `checks`."}},
    )
    async def ready(request: Request) -> JSONResponse:
        """Readiness: the coordinator (and the cache database, when configured) answer."""
        state: State | None = getattr(request.app.state, "scaimind", None)
        checks: dict[str, str] = {}
        if state is None:
            checks["module"] = "not started"
        else:
            ctx = CallContext(tenant_id="scaimind-health", request_id=request_id_of(request))
            try:
                await asyncio.wait_for(state.client.get_cluster_status(ctx), _READY_TIMEOUT_S)
                checks["coordinator"] = "ok"
            except (CoordinatorError, TimeoutError) as exc:
                checks["coordinator"] = getattr(exc, "code", "BACKEND_TIMEOUT")
            checks["cache"] = "ok" if await state.cache.ping() else "unavailable"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        state: State | None = getattr(request.app.state, "scaimind", None)
        if state is not None:
            await state.cluster_figures.refresh()

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings) -> FastAPI:
    """The standalone gateway: module under /v1/modules/scaimind, health, metrics, OpenAPI."""
    app = FastAPI(
        title=_TITLE,
        version=__version__,
        description=_DESCRIPTION,
        openapi_tags=_TAGS,
        lifespan=lifespan,
        # Served from the package's own copies of Swagger UI and ReDoc, not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    # Only the standalone app, whose routes and dependencies this module owns, gets the hot
    # routes (a host's app-wide dependencies would not run on them); in front of the module's.
    app.router.routes.extend(hot_routes(API_PREFIX))
    mount_module(app, settings)
    _health_routes(app)
    install_docs(app, title=_TITLE)
    return app


_TITLE: Final = "ScaiMind"
_DESCRIPTION: Final = f"""Training orchestration for ScaiGrid: submit, monitor and manage
training jobs, evaluations, data and the cluster.

**Authentication.** Every call under `{API_PREFIX}` needs `Authorization: Bearer <token>` (a
JWT or an `sgk_` API key): use *Authorize*. In the embedded mode, `scaimind token --data-dir DIR
--tenant T --user U` prints a token for the server on that data dir.

**Responses.** Success bodies are `{{"data": …}}`; errors are the envelope
`{{"status": "error", "error": {{"code", "message", "details"?, "retry_after"?}}, "meta":
{{"request_id"}}}}`, where `details` lists `{{field, message}}` for each rejected field.
Request bodies over `SCAIMIND_MAX_BODY_BYTES` (default 1 MiB) are refused with 413 unread;
collections and strings have caps (see each field).
"""
_TAGS: Final = [
    {"name": "jobs", "description": "Submit, list, inspect, cancel, pause, resume and retry."},
    {"name": "monitoring", "description": "Metric series, and live logs and metrics (SSE)."},
    {"name": "cluster", "description": "Nodes and capacity; drain and enable nodes."},
    {"name": "queue", "description": "Queue depth, waits and positions."},
    {"name": "evaluations", "description": "Score a job's model on benchmarks."},
    {"name": "data", "description": "Validate data sources; the dataset cache."},
    {"name": "health", "description": "Liveness and readiness (no authentication)."},
]


__all__ = [
    "API_PREFIX",
    "CurrentUser",
    "create_app",
    "lifespan",
    "module_router",
    "mount_module",
]
