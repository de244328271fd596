"""Data endpoints (docs/API.md, "Data")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from scaimind.contract import limits
from scaimind.gateway.web.deps import ClientDep, Manager
from scaimind.gateway.web.openapi import MODULE, errors
from scaimind.gateway.web.responses import data_response
from scaimind.gateway.web.schemas.data import ValidateDataBody
from scaimind.gateway.web.schemas.ops_views import DataCache, ValidationReport
from scaimind.gateway.web.schemas.views import Data

router = APIRouter(prefix="/data", tags=["data"], responses=errors(*MODULE, 502))


@router.post("/validate", response_model=Data[ValidationReport], responses=errors(413))
async def validate_data(who: Manager, client: ClientDep, body: ValidateDataBody) -> Response:
    """Read data sources and report rows, columns and per-row problems (a bad source is 200)."""
    return data_response(await client.validate_data(body.model_dump(mode="json"), who.ctx))


@router.get("/cache", response_model=Data[DataCache])
async def get_data_cache(
    who: Manager,
    client: ClientDep,
    node_id: Annotated[
        str, Query(max_length=limits.ID_CHARS, description="One node; empty = cluster-wide.")
    ] = "",
) -> Response:
    """Datasets in the coordinator's cache (one node, or cluster-wide)."""
    return data_response(await client.get_data_cache(node_id, who.ctx))
