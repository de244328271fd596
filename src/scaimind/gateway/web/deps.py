"""Lifespan state and the dependency aliases that hand it to handlers.

No `from __future__ import annotations` here: FastAPI must resolve the closures' annotations.
"""

import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request

from scaimind.gateway.backend.client import CallContext, CoordinatorClient
from scaimind.gateway.errors import AuthTokenInvalid, request_id_of

# Re-exported: the monitoring router imports it from here.
from scaimind.gateway.errors import ModuleNotStarted as ModuleNotStarted
from scaimind.gateway.security.auth import (
    CLUSTER_ADMIN,
    EVALUATE,
    MANAGE,
    VIEW,
    CurrentUser,
    TokenVerifier,
    require,
)
from scaimind.identity import validate_identity
from scaimind.settings import Settings

T = TypeVar("T")


@dataclass(eq=False)
class State:
    """Every long-lived resource of the module, created by `lifespan`."""

    settings: Settings
    client: CoordinatorClient
    verifier: TokenVerifier
    # Objects owned by later subsystems (cache, token exchange, stream limiter) hang here.
    extras: dict[str, Any] = field(default_factory=dict)

    def extra(self, key: str, kind: type[T]) -> T:
        """The subsystem object under `key`; ModuleNotStarted when its hook has not run."""
        value = self.extras.get(key)
        if not isinstance(value, kind):
            raise ModuleNotStarted()
        return value


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
        )
        return Caller(user=user, ctx=ctx)

    return build


# The callers of each permission, as handler parameters.
Viewer = Annotated[Caller, Depends(caller(VIEW))]
Manager = Annotated[Caller, Depends(caller(MANAGE))]
Evaluator = Annotated[Caller, Depends(caller(EVALUATE))]
ClusterAdmin = Annotated[Caller, Depends(caller(CLUSTER_ADMIN))]
