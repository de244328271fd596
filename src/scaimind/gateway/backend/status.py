"""A failed coordinator call as the gateway's error: the gRPC→HTTP table and sanitisation.

`translate_rpc_error` is the one place a gRPC status becomes a `CoordinatorError`.
`rpc_details` decodes the google.rpc details of `grpc-status-details-bin` (grpcio-status);
`sent_strings` collects the caller's own values from the request, which `sanitize` lets an
error message echo back.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from scaimind.gateway.errors import CoordinatorError

logger = logging.getLogger("scaimind.gateway.errors")

# Collecting more than this many values per error costs more than it is worth.
_MAX_SENT_VALUES: Final = 2000
_MAX_VIOLATIONS: Final = 50
_MAX_RETRY_DELAY_S: Final = 86_400


def sent_strings(request: Message | None) -> frozenset[str]:
    """Every string the caller put in a request message (field values, map keys and values)."""
    found: set[str] = set()
    pending: list[Message] = [request] if request is not None else []
    while pending and len(found) < _MAX_SENT_VALUES:
        msg = pending.pop()
        for fd, value in msg.ListFields():
            items = value.items() if isinstance(value, Mapping) else None
            if items is not None:
                for key, item in items:
                    found.add(str(key))
                    if isinstance(item, str):
                        found.add(item)
                    elif isinstance(item, Message):
                        pending.append(item)
            elif fd.is_repeated:
                for item in value:
                    if isinstance(item, str):
                        found.add(item)
                    elif isinstance(item, Message):
                        pending.append(item)
            elif isinstance(value, str):
                found.add(value)
            elif isinstance(value, Message):
                pending.append(value)
    return frozenset(v for v in found if v)


@dataclass(frozen=True, slots=True)
class RpcDetails:
    """What the coordinator said in google.rpc details (grpc-status-details-bin)."""

    violations: tuple[tuple[str, str], ...] = ()
    reason: str | None = None
    retry_after: int | None = None
    resource: tuple[str, str] | None = None


def rpc_details(exc: grpc.aio.AioRpcError) -> RpcDetails:
    """The structured details of a failed call; empty when there are none or they are unusable."""
    try:
        # AioRpcError answers code(), details() and trailing_metadata() like a grpc.Call.
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except (ValueError, DecodeError):
        # A status that contradicts the call, or bytes that are no Status: ignore, not fail.
        return RpcDetails()
    if status is None:
        return RpcDetails()
    violations: list[tuple[str, str]] = []
    reason = retry_after = resource = None
    for packed in status.details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
        elif packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason = info.reason
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            retry_after = max(0, min(retry.retry_delay.seconds, _MAX_RETRY_DELAY_S))
        elif packed.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            res = error_details_pb2.ResourceInfo()
            packed.Unpack(res)
            resource = (res.resource_type, res.resource_name)
    return RpcDetails(tuple(violations[:_MAX_VIOLATIONS]), reason, retry_after, resource)


# --- the gRPC→HTTP table -----------------------------------------------------------------


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
    if _noisy(checked):
        return None
    return detail.strip()[:1000] or None


# A coordinator says the same few things again and again (every 409 of a cancel on an ended job
# is one sentence per job), and the search costs ≈ 27 µs a message, ≈ 3 % of a 409's gateway CPU.
# Bounded: 1,024 texts, each within the metadata a gRPC client accepts (16 KiB by default).
@functools.lru_cache(maxsize=1024)
def _noisy(text: str) -> bool:
    return _NOISE.search(text) is not None


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
    # A caller's own mistake (404, a 409 on an ended job, ...) is not the operator's concern
    # and is routine traffic: INFO. Failures of the coordinator, answers worth a retry, and
    # UNAUTHENTICATED (the coordinator refused the gateway's API secret): WARNING.
    callers_mistake = (
        mapping.http < 500
        and not mapping.retryable
        and grpc_code is not grpc.StatusCode.UNAUTHENTICATED
    )
    logger.log(
        logging.INFO if callers_mistake else logging.WARNING,
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
