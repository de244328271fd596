"""Queue endpoint (API.md §5.4)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from scaimind.convert import message_to_dict
from scaimind.deps import ClientDep, Viewer

router = APIRouter(prefix="/queue", tags=["queue"])


@router.get("")
async def get_queue_status(
    who: Viewer,
    client: ClientDep,
    queue_name: Annotated[str, Query(max_length=128)] = "",
) -> dict[str, Any]:
    """Depth, waits and positions of the queues the tenant can see."""
    return {"data": message_to_dict(await client.get_queue_status(queue_name, who.ctx))}
