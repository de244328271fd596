"""Paging and view arguments of list RPCs: page tokens (keyset), page sizes, order_by, views."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from scaimind.coordinator.persistence.store import ORDER_COLUMNS
from scaimind.coordinator.status import invalid
from scaimind.v1 import (
    coordinator_pb2,
)

log = logging.getLogger(__name__)


def page_token(order: str, value: Any, job_id: str) -> str:
    raw = json.dumps({"o": order, "v": value, "id": job_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_page_token(token: str, order: str) -> tuple[Any, str] | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["o"] != order:
            raise invalid("page_token: was issued for a different order_by")
        value, job_id = data["v"], data["id"]
    except (binascii.Error, ValueError, KeyError, TypeError) as e:
        raise invalid("page_token: invalid") from e
    # Anyone can send a token: only what we issue (a column value and a job id) goes further.
    if not isinstance(value, str | int | float | None) or not isinstance(job_id, str):
        raise invalid("page_token: invalid")
    return value, job_id


def check_view(view: int) -> None:
    if view not in coordinator_pb2.JobView.values():
        raise invalid(f"view: unknown view {view}; expected BASIC or FULL")


def page_size(requested: int) -> int:
    size = requested or 20
    if not 1 <= size <= 100:
        raise invalid("page_size: must be between 1 and 100")
    return size


def parse_order(order_by: str) -> tuple[str, bool]:
    parts = order_by.strip().lower().split()
    if not parts:
        return "created_at", True
    column = parts[0]
    if (
        column not in ORDER_COLUMNS
        or len(parts) > 2
        or (len(parts) == 2 and parts[1] not in ("asc", "desc"))
    ):
        raise invalid(
            f"order_by: expected '<field> [asc|desc]' with field one of {', '.join(ORDER_COLUMNS)}"
        )
    return column, (parts[1] == "desc") if len(parts) == 2 else column != "name"
