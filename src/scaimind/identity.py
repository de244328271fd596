"""The rule every tenant and user id obeys, wherever one enters the system.

`scaimind token` checks it before minting; the gateway can apply the same function to the
claims it accepts, so an id that one side refuses is never accepted by the other.
"""

from __future__ import annotations

import unicodedata
from typing import Final

MAX_IDENTITY_CHARS: Final = 128


def validate_identity(value: str, what: str) -> str:
    """`value` if it is a usable tenant or user id, else ValueError naming `what`.

    Usable: 1..128 characters, no leading or trailing whitespace, no control characters (a
    newline or NUL in an id would split log lines and confuse every store keyed by it).
    """
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_IDENTITY_CHARS:
        raise ValueError(
            f"{what} must be at most {MAX_IDENTITY_CHARS} characters, not {len(value)}"
        )
    if value != value.strip():
        raise ValueError(f"{what} must not start or end with whitespace")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError(f"{what} must not contain control characters")
    return value
