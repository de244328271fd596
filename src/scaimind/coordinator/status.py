"""The one error type of the coordinator: a gRPC status code, a message for the caller, and the
same said in structured `google.rpc` details.

The details travel in `grpc-status-details-bin` (grpcio-status): `BadRequest.FieldViolation`
for a field the caller got wrong, `ErrorInfo` with a stable reason, `RetryInfo` when a retry
makes sense and `ResourceInfo` for what was not found. The gateway shows field violations as
`details: [{field, message}]` instead of guessing from text. Messages of INVALID_ARGUMENT have
the form `"<field>: <what is wrong>"`, so `invalid()` finds the field by itself and its callers
stay as they are; `field=` names it explicitly.
"""

from __future__ import annotations

import re
from typing import Final

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

# ErrorInfo.domain of every error of the reference coordinator.
DOMAIN: Final = "scaimind.coordinator"
RETRY_AFTER_METADATA: Final = "retry-after"

# "data_config.sources[0].path: …", "labels['team']: …"; a field path never has spaces.
_FIELD_PREFIX = re.compile(
    r"^(?P<field>[A-Za-z_]\w*(?:\[[^\]\s]{1,80}\])*(?:\.[A-Za-z_]\w*(?:\[[^\]\s]{1,80}\])*)*)"
    r": (?P<description>.+)$",
    re.DOTALL,
)
# "job job_1 not found", "node node-a not found".
_NOT_FOUND = re.compile(r"^(?P<type>[a-z_]+) (?P<name>\S+) not found$")
_CODES_WITH_FIELDS: Final = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE}
)


class StatusError(Exception):
    """Answer the RPC with `code` and `message` (the message is shown to API users)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        retry_after: int | None = None,
        *,
        field: str | None = None,
        reason: str | None = None,
        resource: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # Sent as RetryInfo, and as `retry-after` trailing metadata for older gateways.
        self.retry_after = retry_after
        self.description = message
        if field is None and code in _CODES_WITH_FIELDS:
            match = _FIELD_PREFIX.match(message)
            if match:
                field, self.description = match["field"], match["description"]
        elif field is not None:
            self.description = message.removeprefix(f"{field}: ")
        self.field = field
        if resource is None and code is grpc.StatusCode.NOT_FOUND:
            found = _NOT_FOUND.match(message)
            if found:
                resource = (found["type"], found["name"])
        self.resource = resource
        if reason is None and resource is not None and code is grpc.StatusCode.NOT_FOUND:
            reason = f"{resource[0].upper()}_NOT_FOUND"
        self.reason = reason or code.name

    def details(self) -> list[Message]:
        """The google.rpc detail messages of this error."""
        out: list[Message] = []
        if self.field is not None:
            out.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=self.field, description=self.description
                        )
                    ]
                )
            )
        out.append(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN))
        if self.retry_after is not None:
            out.append(
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=self.retry_after)
                )
            )
        if self.resource is not None:
            kind, name = self.resource
            out.append(
                error_details_pb2.ResourceInfo(
                    resource_type=kind, resource_name=name, description=self.message
                )
            )
        return out

    def status(self) -> grpc.Status:
        """The status to abort the RPC with: code, message and the details trailer."""
        packed = []
        for detail in self.details():
            wrapper = any_pb2.Any()
            wrapper.Pack(detail)
            packed.append(wrapper)
        status: grpc.Status = rpc_status.to_status(
            status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        )
        return status

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """Trailing metadata: the details, and `retry-after` when set."""
        metadata: tuple[tuple[str, str | bytes], ...] = tuple(self.status().trailing_metadata)
        if self.retry_after is not None:
            metadata += ((RETRY_AFTER_METADATA, str(self.retry_after)),)
        return metadata


class PathRefused(StatusError):
    """A path outside the caller's policy (INVALID_ARGUMENT): refuses a whole request."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)


def invalid(message: str, *, field: str | None = None) -> StatusError:
    """INVALID_ARGUMENT; the message starts with the offending field (or `field` names it)."""
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message, field=field)


def not_found(message: str) -> StatusError:
    """NOT_FOUND; "<kind> <id> not found" also becomes a ResourceInfo."""
    return StatusError(grpc.StatusCode.NOT_FOUND, message)


def precondition(message: str) -> StatusError:
    """FAILED_PRECONDITION; the message names the current state."""
    return StatusError(grpc.StatusCode.FAILED_PRECONDITION, message)
