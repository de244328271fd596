"""Queue endpoint (docs/API.md, "Queue")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from scaimind.contract import limits
from scaimind.gateway.web.deps import ClientDep, Viewer
from scaimind.gateway.web.openapi import MODULE, errors
from scaimind.gateway.web.responses import data_response
from scaimind.gateway.web.schemas.ops_views import QueueStatus
from scaimind.gateway.web.schemas.views import Data

router = APIRouter(prefix="/queue", tags=["queue"], responses=errors(*MODULE))


@router.get("", response_model=Data[QueueStatus])
async def get_queue_status(
    who: Viewer,
    client: ClientDep,
    queue_name: Annotated[
        str, Query(max_length=limits.ID_CHARS, description="One queue; empty = every queue.")
    ] = "",
) -> Response:
    """Depth, estimated waits and the positions of the tenant's queued jobs."""
    return data_response(await client.get_queue_status(queue_name, who.ctx))
