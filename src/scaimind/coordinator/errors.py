"""The one error type of the coordinator: a gRPC status code and a message for the caller."""

from __future__ import annotations

import grpc


class CoordinatorError(Exception):
    """Answer the RPC with `code` and `message` (the message is shown to API users)."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # Sent as `retry-after` trailing metadata; the gateway turns it into Retry-After.
        self.retry_after = retry_after


class PathRefused(CoordinatorError):
    """A path outside the caller's policy (INVALID_ARGUMENT): refuses a whole request."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)


def invalid(message: str) -> CoordinatorError:
    """INVALID_ARGUMENT; the message starts with the offending field."""
    return CoordinatorError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> CoordinatorError:
    """NOT_FOUND."""
    return CoordinatorError(grpc.StatusCode.NOT_FOUND, message)


def precondition(message: str) -> CoordinatorError:
    """FAILED_PRECONDITION; the message names the current state."""
    return CoordinatorError(grpc.StatusCode.FAILED_PRECONDITION, message)
