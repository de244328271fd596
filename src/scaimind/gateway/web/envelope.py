"""The error envelope and request ids: what every error response looks like (docs/API.md)."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from scaimind.gateway.errors import RequestInvalid, ScaiMindError
from scaimind.gateway.web.responses import render

logger = logging.getLogger("scaimind.gateway.errors")

REQUEST_ID_HEADER: Final = "x-request-id"
_REQUEST_ID_HEADER_BYTES: Final = REQUEST_ID_HEADER.encode()
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


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


def error_response(request: Request, exc: ScaiMindError) -> Response:
    """Render a ScaiMindError as the envelope."""
    request_id = request_id_of(request)
    body = error_body(
        request_id, exc.code, exc.message, details=exc.details, retry_after=exc.retry_after
    )
    # Set here as well as by the middleware: Starlette sends the response of the catch-all
    # Exception handler from ServerErrorMiddleware, which sits outside every user middleware.
    headers = {**exc.response_headers(), REQUEST_ID_HEADER: request_id}
    # Rendered like every success body (web/responses.py): one JSON encoder for the API.
    return Response(
        render(body), status_code=exc.status_code, headers=headers, media_type="application/json"
    )


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

    async def on_scaimind_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ScaiMindError)
        return error_response(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, RequestInvalid(details=_validation_details(exc)))

    async def on_http_error(request: Request, exc: Exception) -> Response:
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

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception(
            "unhandled error", extra={"event": "scaimind_unhandled_error", "path": request.url.path}
        )
        return error_response(request, ScaiMindError())

    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
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
