"""The one rule for tenant and user ids, shared by the gateway, the coordinator and the CLI.

Both sides must see the same id: when the coordinator stripped `" acme "` to `acme` and the
gateway did not, a token for `" acme "` listed acme's jobs while the stream cap and the
idempotency ledger counted it as another tenant. Ids are therefore refused, never normalised.
"""

from __future__ import annotations

from typing import Final

from scaimind.contract.limits import ID_CHARS, text_problem

MAX_IDENTITY_CHARS: Final = ID_CHARS


def validate_identity(value: str, what: str) -> str:
    """`value` if it is a valid tenant or user id, else ValueError naming `what` and why."""
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_IDENTITY_CHARS:
        raise ValueError(f"{what} must be at most {MAX_IDENTITY_CHARS} characters")
    if value != value.strip():
        raise ValueError(f"{what} must not start or end with whitespace")
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {problem}")
    return value
