"""The OpenAPI contract beyond the payload models: error responses per status, the SSE
responses, the bearer scheme, and the /docs and /redoc pages served from vendored assets.

Swagger UI and ReDoc are served by the app itself (`docs_assets/`, see its README for versions
and licences), so the pages work offline and load nothing from a CDN.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field
from starlette.staticfiles import StaticFiles

from scaimind.gateway.web.schemas.views import LogEntry, MetricsSnapshot, StreamEnd, StreamError

ASSETS_DIR: Final = Path(__file__).parent / "docs_assets"
ASSETS_PATH: Final = "/docs/assets"

BEARER: Final = HTTPBearer(
    scheme_name="bearer",
    description=(
        "A JWT (claims sub, tenant_id, role, scope) or an `sgk_…` API key. In the embedded "
        "mode, `scaimind token --data-dir DIR --tenant T --user U` prints one."
    ),
    auto_error=False,
)


class ErrorDetail(BaseModel):
    """One problem with one field."""

    field: str = Field(description="Dotted path of the field, e.g. data_config.sources[0].path.")
    message: str = Field(description="What is wrong with it (it may quote what you sent).")


class ErrorBody(BaseModel):
    """What went wrong."""

    code: str = Field(description="Stable error code, e.g. VALIDATION_ERROR, NOT_FOUND.")
    message: str = Field(description="For people; never a stack trace or a server path.")
    details: list[ErrorDetail] | None = Field(
        None, description="Field problems (validation errors only; absent otherwise)."
    )
    retry_after: int | None = Field(
        None, description="Seconds to wait before retrying (absent when a retry is pointless)."
    )


class ErrorMeta(BaseModel):
    """About the request."""

    request_id: str = Field(description="The X-Request-ID of the response; quote it to support.")


class ErrorEnvelope(BaseModel):
    """The ScaiGrid error envelope."""

    status: Literal["error"] = Field(description='Always "error".')
    error: ErrorBody = Field(description="The error: code, message, details, retry_after.")
    meta: ErrorMeta = Field(description="The request's id.")


ERROR_DESCRIPTIONS: Final[Mapping[int, str]] = {
    400: "The coordinator rejected a value (INVALID_ARGUMENT, OUT_OF_RANGE); `details` names "
    "each field and what is wrong.",
    401: "Missing (AUTH_TOKEN_MISSING), invalid or expired (AUTH_TOKEN_INVALID) bearer token.",
    403: "The caller lacks the permission (AUTHZ_PERMISSION_DENIED names it), or the "
    "coordinator refused access to a resource (PERMISSION_DENIED).",
    404: "Not found; another tenant's objects are not found either.",
    409: "The object's state does not allow this (FAILED_PRECONDITION, x-should-retry: false), "
    "or a request with this Idempotency-Key is still running (IDEMPOTENCY_KEY_IN_PROGRESS).",
    413: "The body is larger than SCAIMIND_MAX_BODY_BYTES (PAYLOAD_TOO_LARGE); it was not read.",
    422: "The request failed validation (VALIDATION_ERROR, one `details` entry per problem), "
    "or an Idempotency-Key was reused with another body (IDEMPOTENCY_KEY_REUSED).",
    429: "Too many concurrent streams for the tenant (RATE_LIMITED), or the coordinator is out "
    "of capacity (RESOURCE_EXHAUSTED); wait Retry-After seconds.",
    499: "The coordinator cancelled the call (CANCELLED).",
    500: "Internal error (INTERNAL_ERROR); the details are in the server log only.",
    501: "The coordinator does not support this operation (UNIMPLEMENTED).",
    502: "Downstream tokens could not be obtained (TOKEN_EXCHANGE_FAILED); nothing was sent.",
    503: "The coordinator (or the module) is unavailable (BACKEND_UNAVAILABLE); retry after "
    "Retry-After seconds.",
    504: "The coordinator did not answer in time (BACKEND_TIMEOUT).",
}

# What any call that reaches the coordinator may answer (its errors map onto these, §2.2).
AUTH: Final = (401, 403)
COORDINATOR: Final = (400, 404, 409, 429, 499, 500, 501, 503, 504)
MODULE: Final = (*AUTH, 422, *COORDINATOR)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: the error envelope for each status."""
    return {
        status: {"model": ErrorEnvelope, "description": ERROR_DESCRIPTIONS[status]}
        for status in sorted(set(statuses))
    }


def _inline(schema: Any, defs: Mapping[str, Any]) -> Any:
    """`schema` with its local `#/$defs/...` references replaced by the definitions."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def _event(name: str, model: type[BaseModel], *, with_id: bool = False) -> dict[str, Any]:
    """One SSE event: its `event:` name and a `data:` line holding the model as JSON."""
    payload = model.model_json_schema()
    properties: dict[str, Any] = {
        "event": {"const": name},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            # Self-contained: this schema is not a component, so it cannot refer to one.
            "contentSchema": _inline(payload, payload.get("$defs", {})),
        },
    }
    if with_id:
        properties["id"] = {"type": "string", "pattern": "^[0-9]+$"}
    return {"type": "object", "properties": properties, "required": ["event", "data"]}


_DONE_EVENT: Final = {
    "type": "object",
    "properties": {"event": {"const": "message"}, "data": {"const": "[DONE]"}},
    "required": ["data"],
}


def sse_responses(event: Literal["log", "metrics"], example: str) -> dict[int | str, Any]:
    """The 200 of a Server-Sent Events route: the schema of each event, and an example.

    OpenAPI before 3.2 has no `itemSchema`: for text/event-stream, `schema` describes one event
    (its `event`, `id` and `data` fields), which is how schemathesis validates streams too.
    """
    payload = LogEntry if event == "log" else MetricsSnapshot
    return {
        200: {
            "description": (
                f"A Server-Sent Events stream. `event: {event}` with `id:` and a JSON "
                f"{payload.__name__} as `data`; `: ping` comments as heartbeat; `event: end` "
                'with `{"job_id", "status"}` when complete; `event: error` with `{"error", '
                '"code", "retryable"}` when it fails after starting; always ending with '
                "`data: [DONE]`. Send Last-Event-ID to resume with no gap and no duplicate."
            ),
            "content": {
                "text/event-stream": {
                    "schema": {
                        "description": "One event of the stream.",
                        "oneOf": [
                            _event(event, payload, with_id=True),
                            _event("end", StreamEnd),
                            _event("error", StreamError),
                            _DONE_EVENT,
                        ],
                    },
                    "example": example,
                }
            },
        }
    }


def install_docs(app: FastAPI, *, title: str) -> None:
    """Serve /docs (Swagger UI) and /redoc (ReDoc) with the vendored assets."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="scaimind-docs-assets")

    def assets(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return f"{root}{ASSETS_PATH}", f"{root}{app.openapi_url}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        base, openapi_url = assets(request)
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{base}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{base}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{base}/swagger-ui/favicon-32x32.png",
            # The token entered under Authorize survives a reload of the page.
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        base, openapi_url = assets(request)
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{base}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{base}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
