"""What a failed coordinator call carries besides its code and text, and what the caller sent.

`rpc_details` decodes the google.rpc details of `grpc-status-details-bin` (grpcio-status);
`sent_strings` collects the caller's own values from the request, which `errors.sanitize` lets
an error message echo back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

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
