"""The error table: every error the gateway answers with, its HTTP status, code and message.

The contract is docs/API.md, "Errors". Routers never see `grpc` types: the coordinator client
translates every failure at the boundary (`backend.status.translate_rpc_error`), and the
handlers in `web.envelope` turn any `ScaiMindError` into the envelope.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


class ScaiMindError(Exception):
    """An error the gateway answers with the ScaiGrid envelope."""

    status_code: int = 500
    code: str = "INTERNAL_ERROR"
    default_message: str = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Sequence[Mapping[str, str]] | None = None,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = list(details) if details else None
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        super().__init__(self.message)

    def response_headers(self) -> dict[str, str]:
        """Headers that go with this error's response."""
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class AuthTokenMissing(ScaiMindError):
    """No bearer token was sent."""

    status_code = 401
    code = "AUTH_TOKEN_MISSING"
    default_message = "missing bearer token: send 'Authorization: Bearer <token>'"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class AuthTokenInvalid(ScaiMindError):
    """The bearer token could not be verified."""

    status_code = 401
    code = "AUTH_TOKEN_INVALID"
    default_message = "invalid bearer token"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class PermissionMissing(ScaiMindError):
    """The caller is authenticated but lacks a permission."""

    status_code = 403
    code = "AUTHZ_PERMISSION_DENIED"
    default_message = "permission denied"


class RequestInvalid(ScaiMindError):
    """The request failed schema validation."""

    status_code = 422
    code = "VALIDATION_ERROR"
    default_message = "request validation failed"


class IdempotencyKeyReused(ScaiMindError):
    """An Idempotency-Key was reused with a different body."""

    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "this Idempotency-Key was already used with a different request body"


class RateLimited(ScaiMindError):
    """Too many concurrent streams (or requests) for the tenant."""

    status_code = 429
    code = "RATE_LIMITED"
    default_message = "too many concurrent streams for this tenant; retry later"


class TokenExchangeFailed(ScaiMindError):
    """Minting downstream tokens failed; nothing was sent to the coordinator."""

    status_code = 502
    code = "TOKEN_EXCHANGE_FAILED"
    default_message = "could not obtain downstream access tokens from the identity provider"


class IdempotencyKeyInProgress(ScaiMindError):
    """A request with this Idempotency-Key is still running and did not finish in time."""

    status_code = 409
    code = "IDEMPOTENCY_KEY_IN_PROGRESS"
    default_message = "a request with this Idempotency-Key is still in progress; retry shortly"

    def __init__(self) -> None:
        super().__init__(retry_after=1, headers={"x-should-retry": "true"})


class ModuleNotStarted(ScaiMindError):
    """The module's lifespan was not entered by the host app."""

    status_code = 503
    code = "BACKEND_UNAVAILABLE"
    default_message = "the ScaiMind module is not started"


class ApiKeysUnavailable(ScaiMindError):
    """The API-key database did not answer, so the key could be neither accepted nor refused."""

    status_code = 503
    code = "BACKEND_UNAVAILABLE"
    default_message = "API keys cannot be verified right now; retry shortly"

    def __init__(self) -> None:
        super().__init__(retry_after=5)


class PayloadTooLarge(ScaiMindError):
    """The request body is larger than SCAIMIND_MAX_BODY_BYTES; it was not read."""

    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "request body too large"


class NotFound(ScaiMindError):
    """Unknown path or resource."""

    status_code = 404
    code = "NOT_FOUND"
    default_message = "not found"


class CoordinatorError(ScaiMindError):
    """A translated coordinator (gRPC) failure; carries the original status code."""

    def __init__(
        self,
        grpc_code: grpc.StatusCode,
        status_code: int,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
        details: Sequence[Mapping[str, str]] | None = None,
    ) -> None:
        self.grpc_code = grpc_code
        self.status_code = status_code
        self.code = code
        self.retryable = retryable
        super().__init__(message, details=details, retry_after=retry_after, headers=headers)
