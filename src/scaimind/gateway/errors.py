"""The exception hierarchy, the gRPC→HTTP table, sanitisation and the error envelope.

The contract is docs/API.md, "Errors".

Routers never see `grpc` types: the coordinator client translates every failure at the boundary
with `translate_rpc_error`, and the handlers here turn any `ScaiMindError` into the envelope.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.protobuf.message import Message
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from scaimind.gateway.backend.status import rpc_details, sent_strings

logger = logging.getLogger("scaimind.gateway.errors")

REQUEST_ID_HEADER: Final = "x-request-id"
_REQUEST_ID_HEADER_BYTES: Final = REQUEST_ID_HEADER.encode()
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


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


@dataclass(frozen=True, slots=True)
class _Mapping:
    http: int
    code: str
    # None: pass the (sanitised) coordinator detail through; else this fixed message.
    fixed_message: str | None
    retryable: bool
    headers: Mapping[str, str] | None = None


_GENERIC = "the training coordinator reported an internal error; the request was not completed"
_UNAVAILABLE_RETRY_AFTER_S: Final = 5

# The canonical google.rpc mapping, with our deviations commented.
GRPC_TO_HTTP: Final[Mapping[grpc.StatusCode, _Mapping]] = {
    grpc.StatusCode.NOT_FOUND: _Mapping(404, "NOT_FOUND", None, False),
    grpc.StatusCode.INVALID_ARGUMENT: _Mapping(400, "INVALID_ARGUMENT", None, False),
    # Canonical: 400 with code OUT_OF_RANGE too; we keep the distinct error code for clients.
    grpc.StatusCode.OUT_OF_RANGE: _Mapping(400, "OUT_OF_RANGE", None, False),
    grpc.StatusCode.PERMISSION_DENIED: _Mapping(403, "PERMISSION_DENIED", None, False),
    grpc.StatusCode.UNAUTHENTICATED: _Mapping(401, "UNAUTHENTICATED", None, False),
    grpc.StatusCode.ALREADY_EXISTS: _Mapping(
        409, "ALREADY_EXISTS", None, False, {"x-should-retry": "false"}
    ),
    # Canonical is 400; a state conflict ("job is COMPLETED") is a 409 to HTTP clients.
    grpc.StatusCode.FAILED_PRECONDITION: _Mapping(
        409, "FAILED_PRECONDITION", None, False, {"x-should-retry": "false"}
    ),
    # Canonical 409; we add x-should-retry: true because ABORTED means "retry the whole call".
    grpc.StatusCode.ABORTED: _Mapping(409, "ABORTED", None, True, {"x-should-retry": "true"}),
    grpc.StatusCode.RESOURCE_EXHAUSTED: _Mapping(429, "RESOURCE_EXHAUSTED", None, True),
    # Canonical 499 "client closed request"; the detail is ours, not the coordinator's.
    grpc.StatusCode.CANCELLED: _Mapping(
        499, "CANCELLED", "the request was cancelled before the coordinator finished it", True
    ),
    # Canonical 504; code renamed so clients see it is the backend, not the gateway, that timed out.
    grpc.StatusCode.DEADLINE_EXCEEDED: _Mapping(
        504,
        "BACKEND_TIMEOUT",
        "the training coordinator did not answer in time; please retry",
        True,
    ),
    # Canonical 503; renamed and given a Retry-After.
    grpc.StatusCode.UNAVAILABLE: _Mapping(
        503,
        "BACKEND_UNAVAILABLE",
        "the training coordinator is unavailable right now; please retry shortly",
        True,
    ),
    # Canonical 501; fixed message because the detail would name internal RPCs.
    grpc.StatusCode.UNIMPLEMENTED: _Mapping(
        501, "UNIMPLEMENTED", "this operation is not supported by the training coordinator", False
    ),
}
_FALLBACK = _Mapping(500, "INTERNAL_ERROR", _GENERIC, False)

# Infrastructure noise that must never reach a client.
_NOISE = re.compile(
    r"Traceback \(most recent call last\)"
    r'|File "[^"]*", line \d+'
    r"|\b\w+(Error|Exception): |\b\w+(?:Error|Exception)\(|<class '"
    r"|\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|sqlalchemy\.|psycopg|asyncpg\.|sqlite3\.|pymysql\.|aiomysql\."
    r"|\tat |^\s*at [\w$.]+\([\w$]+\.java:\d+\)|goroutine \d+|panic: |\.go:\d+"
    r"|(?:^|[\s'\"(=])/(?:home|root|usr|opt|var|srv|tmp|etc|app|proc)/\S+"
    # Source locations give away the server's layout wherever it is installed.
    r"|(?:^|[\s'\"(=])/\S+\.(?:py|pyc|so|go|java|rs|js|ts)\b|[\w./-]+\.(?:py|go|java|rs|js|ts):\d+"
    r"|[A-Za-z]:\\\\?[\w\\]+"
    # Hosts: IPv4 addresses, and host:port of a dotted name or localhost.
    r"|\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):\d{2,5}\b",
    re.MULTILINE,
)


# What may precede and follow a value the caller sent for it to count as that value (a path in
# a message is masked only whole: "/srv" sent does not vouch for "/srv/scaimind/state.db").
_BEFORE: Final = r"(?<![^\s'\"(=,\[])"
_AFTER: Final = r"(?=$|[\s'\",;)\]]|[.:](?:$|\s))"
_MASK: Final = "\x00"


def sanitize(detail: str | None, sent: frozenset[str] = frozenset()) -> str | None:
    """Return the detail if it is safe to show a client, else None.

    Values the caller sent (`sent`) may be echoed back (their own path, their own job name);
    everything else in the detail is checked for infrastructure noise.
    """
    if not detail:
        return None
    checked = detail
    for value in sorted((v for v in sent if v in checked), key=len, reverse=True):
        checked = re.sub(_BEFORE + re.escape(value) + _AFTER, _MASK, checked)
    if _NOISE.search(checked):
        return None
    return detail.strip()[:1000] or None


_FIELD_RE = re.compile(r"[\x20-\x7e]{1,256}")


def _violation_details(
    violations: Sequence[tuple[str, str]], sent: frozenset[str]
) -> list[dict[str, str]]:
    details = []
    for field, description in violations:
        if not _FIELD_RE.fullmatch(field) or sanitize(field, sent) is None:
            field = "request"
        details.append({"field": field, "message": sanitize(description, sent) or "invalid value"})
    return details


def _resource_message(
    grpc_code: grpc.StatusCode, resource: tuple[str, str] | None, sent: frozenset[str]
) -> str | None:
    # The text said more than it may; ResourceInfo still says what was not found.
    if resource is None or grpc_code is not grpc.StatusCode.NOT_FOUND:
        return None
    kind, name = resource
    return sanitize(f"{kind} {name} not found", sent)


def _generic_message(mapping: _Mapping) -> str:
    return f"the training coordinator rejected the request ({mapping.code})"


def _retry_after(metadata: Sequence[tuple[str, str | bytes]] | None) -> int | None:
    for key, value in metadata or ():
        if key.lower() == "retry-after":
            try:
                return max(0, int(float(value)))
            except (TypeError, ValueError):
                return None
    return None


def translate_rpc_error(
    exc: grpc.aio.AioRpcError,
    *,
    rpc: str,
    request_id: str | None,
    tenant_id: str | None,
    request: Message | None = None,
) -> CoordinatorError:
    """Map a gRPC failure to a CoordinatorError and write the structured log record.

    Field violations become `details` with the caller's own values kept; the message is the
    first violation, or the coordinator's text when it passes the sanitiser (the last line of
    defence for coordinators that send no details).
    """
    grpc_code = exc.code()
    raw = exc.details() or ""
    mapping = GRPC_TO_HTTP.get(grpc_code, _FALLBACK)
    rich = rpc_details(exc)
    details: list[dict[str, str]] | None = None
    if mapping.fixed_message is not None:
        message = mapping.fixed_message
    else:
        sent = sent_strings(request)
        if rich.violations:
            details = _violation_details(rich.violations, sent)
            first = details[0]
            message = f"{first['field']}: {first['message']}"
            if len(details) > 1:
                message += f" (and {len(details) - 1} more)"
        else:
            message = (
                sanitize(raw, sent)
                or _resource_message(grpc_code, rich.resource, sent)
                or _generic_message(mapping)
            )
    retry_after: int | None = None
    if grpc_code is grpc.StatusCode.UNAVAILABLE:
        retry_after = rich.retry_after or _UNAVAILABLE_RETRY_AFTER_S
    elif grpc_code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        trailing = exc.trailing_metadata()
        retry_after = rich.retry_after
        if retry_after is None:
            retry_after = _retry_after(list(trailing) if trailing else None)  # type: ignore[arg-type]
    logger.warning(
        "coordinator error on %s: %s",
        rpc,
        grpc_code.name,
        extra={
            "event": "scaimind_coordinator_error",
            "grpc_code": grpc_code.name,
            "raw_detail": raw,
            "reason": rich.reason,
            "rpc": rpc,
            "request_id": request_id,
            "tenant_id": tenant_id,
        },
    )
    return CoordinatorError(
        grpc_code,
        mapping.http,
        mapping.code,
        message,
        retryable=mapping.retryable,
        retry_after=retry_after,
        headers=mapping.headers,
        details=details,
    )


# --- envelope -------------------------------------------------------------------------------


def new_request_id() -> str:
    """A fresh request id (`req_` + 26 url-safe characters)."""
    return "req_" + secrets.token_hex(13)


def request_id_of(request: Request) -> str:
    """The id the middleware assigned to this request."""
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else new_request_id()


def error_body(
    request_id: str,
    code: str,
    message: str,
    *,
    details: Sequence[Mapping[str, str]] | None = None,
    retry_after: int | None = None,
) -> dict[str, Any]:
    """The ScaiGrid error envelope."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = list(details)
    if retry_after is not None:
        error["retry_after"] = retry_after
    return {"status": "error", "error": error, "meta": {"request_id": request_id}}


def error_response(request: Request, exc: ScaiMindError) -> JSONResponse:
    """Render a ScaiMindError as the envelope."""
    request_id = request_id_of(request)
    body = error_body(
        request_id, exc.code, exc.message, details=exc.details, retry_after=exc.retry_after
    )
    # Set here as well as by the middleware: Starlette sends the response of the catch-all
    # Exception handler from ServerErrorMiddleware, which sits outside every user middleware.
    headers = {**exc.response_headers(), REQUEST_ID_HEADER: request_id}
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def _field_path(loc: Sequence[int | str]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


def _validation_details(exc: RequestValidationError) -> list[dict[str, str]]:
    details = []
    for err in exc.errors():
        field = _field_path(err.get("loc", ()))
        message = str(err.get("msg", "invalid value"))
        if err.get("type") == "json_invalid":
            field = "body"
            message = f"malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse')}"
        message = message.removeprefix("Value error, ")
        details.append({"field": field, "message": message})
    return details


_STATUS_CODES: Final[Mapping[int, str]] = {
    400: "BAD_REQUEST",
    401: "AUTH_TOKEN_MISSING",
    403: "AUTHZ_PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def _unparsable_body(exc: StarletteHTTPException) -> str | None:
    """Why FastAPI could not parse a JSON body (it answers those with a bare 400), or None."""
    cause = exc.__cause__
    if exc.status_code != 400 or not isinstance(cause, ValueError | RecursionError):
        return None
    if isinstance(cause, RecursionError):
        return "malformed JSON: nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return "malformed JSON: not UTF-8"
    if "digits" in str(cause):
        return "malformed JSON: a number has too many digits"
    return "malformed JSON: cannot parse"


def install_error_handlers(app: FastAPI) -> None:
    """Register the envelope handlers on an app (safe to call twice)."""
    if getattr(app.state, "scaimind_error_handlers", False):
        return
    app.state.scaimind_error_handlers = True

    async def on_scaimind_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ScaiMindError)
        return error_response(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, RequestInvalid(details=_validation_details(exc)))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        unparsable = _unparsable_body(exc)
        if unparsable is not None:
            return error_response(
                request, RequestInvalid(details=[{"field": "body", "message": unparsable}])
            )
        code = _STATUS_CODES.get(exc.status_code, "HTTP_ERROR")
        detail = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404:
            detail = f"no such endpoint: {request.method} {request.url.path}"
        err = ScaiMindError(detail, headers=exc.headers)
        err.status_code, err.code = exc.status_code, code
        return error_response(request, err)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception(
            "unhandled error", extra={"event": "scaimind_unhandled_error", "path": request.url.path}
        )
        return error_response(request, ScaiMindError())

    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
        ScaiMindError: on_scaimind_error,
        RequestValidationError: on_validation_error,
        StarletteHTTPException: on_http_error,
        Exception: on_unexpected,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)


class RequestIdMiddleware:
    """Pure ASGI middleware: assign a request id and echo it as X-Request-ID on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for key, value in scope.get("headers", ()):
            if key == _REQUEST_ID_HEADER_BYTES:
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _REQUEST_ID_RE.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k != _REQUEST_ID_HEADER_BYTES
                ]
                headers.append((_REQUEST_ID_HEADER_BYTES, request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
