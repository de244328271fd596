"""The dependencies that hand the lifespan's resources and the caller to handlers.

No `from __future__ import annotations` here: FastAPI must resolve the closures' annotations.
"""

import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials

from scaimind.contract.identity import validate_identity
from scaimind.gateway.backend.client import CallContext, CoordinatorClient
from scaimind.gateway.db.jobs import JobCache
from scaimind.gateway.errors import (
    AuthTokenInvalid,
    AuthTokenMissing,
    ModuleNotStarted,
    PermissionMissing,
)
from scaimind.gateway.security.auth import (
    API_KEY_PREFIX,
    CLUSTER_ADMIN,
    EVALUATE,
    MANAGE,
    VIEW,
    CurrentUser,
)
from scaimind.gateway.security.token_exchange import DownstreamTokens
from scaimind.gateway.state import State
from scaimind.gateway.streaming.feeds import FeedHub
from scaimind.gateway.streaming.limiter import StreamLimiter
from scaimind.gateway.web.envelope import request_id_of
from scaimind.gateway.web.idempotency import Idempotency
from scaimind.gateway.web.openapi import BEARER


def state_of(request: Request) -> State:
    """The module state of the app serving this request."""
    state = getattr(request.app.state, "scaimind", None)
    if not isinstance(state, State):
        raise ModuleNotStarted()
    return state


# Dependencies are coroutines even when they do no I/O: FastAPI runs a plain `def` dependency
# in a worker thread, and each such hop waits for the GIL behind a busy event loop (thousands
# of open streams made GET /jobs/{id} p99 several times its idle figure, bench/streams.py).
async def module_state(request: Request) -> State:
    """Dependency: the module state of the app serving this request."""
    return state_of(request)


async def get_client(request: Request) -> CoordinatorClient:
    """The coordinator client."""
    return state_of(request).client


StateDep = Annotated[State, Depends(module_state)]
ClientDep = Annotated[CoordinatorClient, Depends(get_client)]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a request safely: the same key and body within 24 h return the "
        "first response (Idempotent-Replayed: true) and create nothing.",
    ),
]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AuthTokenMissing()
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthTokenInvalid("Authorization header must be 'Bearer <token>'")
    return token.strip()


async def get_current_user(
    request: Request,
    # Declares the bearer scheme in OpenAPI (the Authorize button); the header is read below,
    # where a missing or malformed one gets its own error.
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> CurrentUser:
    """The standalone user dependency; hosts override it with their own."""
    state = state_of(request)
    token = _bearer(request)
    if token.startswith(API_KEY_PREFIX):
        return await state.api_keys.authenticate(token, state.verifier.grants)
    return await state.verifier.verify(token)


CurrentUserDep = Annotated[CurrentUser, Depends(get_current_user)]


def require(
    *permissions: str,
) -> Callable[[CurrentUser], Coroutine[Any, Any, CurrentUser]]:
    """A dependency that passes when the caller holds any of `permissions`."""
    if not permissions:
        raise ValueError("require() needs at least one permission")

    async def check(user: CurrentUserDep) -> CurrentUser:
        return permit(user, permissions)

    return check


def permit(user: CurrentUser, permissions: tuple[str, ...]) -> CurrentUser:
    """`user`, when it holds any of `permissions`; PermissionMissing otherwise."""
    if not any(user.has(p) for p in permissions):
        raise PermissionMissing(f"missing permission: {' or '.join(permissions)}")
    return user


async def get_job_cache(state: StateDep) -> JobCache:
    """The job cache (routers schedule best-effort syncs on it)."""
    return state.cache.jobs


async def idempotency(
    response: Response, state: StateDep, idempotency_key: IdempotencyKeyHeader = None
) -> Idempotency:
    """The Idempotency-Key handling of this request."""
    return Idempotency(state.cache, idempotency_key, response)


async def stream_limiter(state: StateDep) -> StreamLimiter:
    """The per-tenant stream limiter of this process."""
    return state.streams.limiter


async def feed_hub(state: StateDep) -> FeedHub:
    """The shared log feeds of this process."""
    return state.streams.feeds


JobCacheDep = Annotated[JobCache, Depends(get_job_cache)]
IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
Limiter = Annotated[StreamLimiter, Depends(stream_limiter)]
Hub = Annotated[FeedHub, Depends(feed_hub)]


_METADATA_SAFE = re.compile(r"[\x20-\x7e]+")


@dataclass(frozen=True, slots=True)
class Caller:
    """An authorised caller and the gRPC call context made for it."""

    user: CurrentUser
    ctx: CallContext


def caller(*permissions: str) -> Callable[..., Coroutine[Any, Any, Caller]]:
    """Dependency: require one of `permissions`, then build the call context."""
    check = require(*permissions)

    async def build(request: Request, user: Annotated[CurrentUser, Depends(check)]) -> Caller:
        return caller_of(request, user)

    return build


def caller_of(request: Request, user: CurrentUser) -> Caller:
    """The caller and its call context, once `user` passed the permission check."""
    try:
        # The coordinator applies the same rule, so both sides see the same tenant (" acme "
        # was acme to the coordinator and another tenant to the stream cap and the ledger).
        validate_identity(user.tenant_id, "tenant_id")
        if user.user_id:
            validate_identity(user.user_id, "user id")
    except ValueError as exc:
        raise AuthTokenInvalid(f"the caller's {exc}") from None
    # Both travel as gRPC metadata, which only carries printable ASCII: anything else made
    # the channel raise inside the call (a 500).
    if not all(_METADATA_SAFE.fullmatch(v) for v in (user.tenant_id, user.user_id) if v):
        raise AuthTokenInvalid("the caller's tenant_id and user id must be printable ASCII")
    ctx = CallContext(
        tenant_id=user.tenant_id,
        user_id=user.user_id or None,
        request_id=request_id_of(request),
        # Minted only when a call that touches data or models asks (the client decides).
        downstream=DownstreamTokens(state_of(request).token_exchange, user),
    )
    return Caller(user=user, ctx=ctx)


# The callers of each permission, as handler parameters.
Viewer = Annotated[Caller, Depends(caller(VIEW))]
Manager = Annotated[Caller, Depends(caller(MANAGE))]
Evaluator = Annotated[Caller, Depends(caller(EVALUATE))]
ClusterAdmin = Annotated[Caller, Depends(caller(CLUSTER_ADMIN))]
