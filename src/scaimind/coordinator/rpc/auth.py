"""The RPC layer's admission: the shared secret, the caller from metadata, the common request
caps, and the error translation every handler is wrapped in."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from scaimind.contract import metadata as keys
from scaimind.contract.identity import validate_identity
from scaimind.contract.limits import first_violation
from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.data.scaidrive import TOKEN_METADATA
from scaimind.coordinator.jobs.runtime import CallerContext
from scaimind.coordinator.status import StatusError, invalid

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")
Q = TypeVar("Q")


def metadata(context: Ctx) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key.lower()] = value
    return out


class Auth:
    """Checks x-api-secret and extracts the caller from metadata."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self._secret = config.api_secret
        self._open = config.allow_unauthenticated and not config.api_secret

    def caller(self, context: Ctx) -> CallerContext:
        """The authenticated caller, or UNAUTHENTICATED."""
        md = metadata(context)
        if not self._open:
            given = md.get(keys.API_SECRET, "")
            if not given or not hmac.compare_digest(given.encode(), (self._secret or "").encode()):
                raise StatusError(
                    grpc.StatusCode.UNAUTHENTICATED, "invalid or missing x-api-secret"
                )
        tenant = md.get(keys.TENANT_ID, "")
        if not tenant:
            raise StatusError(
                grpc.StatusCode.UNAUTHENTICATED, f"{keys.TENANT_ID} metadata is required"
            )
        user = md.get(keys.USER_ID, "")
        try:
            # Refused, never normalised: the gateway must see the same tenant as we do.
            validate_identity(tenant, keys.TENANT_ID)
            if user:
                validate_identity(user, keys.USER_ID)
        except ValueError as e:
            raise StatusError(grpc.StatusCode.UNAUTHENTICATED, str(e)) from None
        return CallerContext(
            tenant_id=tenant,
            user_id=user,
            idempotency_key=md.get(keys.IDEMPOTENCY_KEY, ""),
            scaidrive_token=md.get(TOKEN_METADATA, ""),
        )


def admit(auth: Auth, request: Any, context: Ctx) -> None:
    """Authenticate, then hold the request to the caps every caller shares (contract.limits)."""
    auth.caller(context)
    violation = first_violation(request)
    if violation is not None:
        raise invalid(f"{violation.field}: {violation.message}", field=violation.field)


def unary(
    fn: Callable[[Any, Q, Ctx], Awaitable[R]],
) -> Callable[[Any, Q, Ctx], Awaitable[R]]:
    """Translate StatusError (and unexpected errors) into the RPC status."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Q, context: Ctx) -> R:
        try:
            admit(self.auth, request, context)
            return await fn(self, request, context)
        except StatusError as e:
            await context.abort(e.code, e.message, e.trailing_metadata())
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal coordinator error")
        raise AssertionError("unreachable")  # abort always raises

    return wrapper


def stream(
    fn: Callable[[Any, Q, Ctx], AsyncGenerator[R, None]],
) -> Callable[[Any, Q, Ctx], AsyncGenerator[R, None]]:
    """Like unary, for server-streaming handlers."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Q, context: Ctx) -> AsyncGenerator[R, None]:
        try:
            admit(self.auth, request, context)
            # aclosing: a client that goes away closes the inner generator right away.
            async with contextlib.aclosing(fn(self, request, context)) as items:
                async for item in items:
                    yield item
        except StatusError as e:
            await context.abort(e.code, e.message, e.trailing_metadata())
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
            raise
        except Exception:
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal coordinator error")

    return wrapper
