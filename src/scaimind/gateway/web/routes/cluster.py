"""Cluster endpoints (docs/API.md, "Cluster")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response

from scaimind.contract import limits
from scaimind.gateway.web.deps import ClientDep, ClusterAdmin, Viewer
from scaimind.gateway.web.openapi import MODULE, errors
from scaimind.gateway.web.params import PageToken, page_size
from scaimind.gateway.web.responses import data_response
from scaimind.gateway.web.schemas.cluster import DrainBody
from scaimind.gateway.web.schemas.ops_views import ClusterStatus, Node, NodeList
from scaimind.gateway.web.schemas.views import Data

router = APIRouter(prefix="/cluster", tags=["cluster"], responses=errors(*MODULE))

NodeId = Annotated[
    str, Path(min_length=1, max_length=limits.ID_CHARS, description="The node's id.")
]


@router.get("", response_model=Data[ClusterStatus])
async def get_cluster_status(who: Viewer, client: ClientDep) -> Response:
    """Cluster-wide capacity, utilisation and job counts."""
    return data_response(await client.get_cluster_status(who.ctx))


@router.get("/nodes", response_model=Data[NodeList])
async def list_nodes(
    who: Viewer,
    client: ClientDep,
    status_filter: Annotated[
        str,
        Query(
            max_length=32,
            description="Only nodes in this status: ONLINE, DRAINING, DRAINED, DISABLED, OFFLINE.",
        ),
    ] = "",
    page_size: Annotated[int, page_size("nodes")] = 20,
    page_token: PageToken = "",
) -> Response:
    """List the cluster's nodes with their slots and running jobs."""
    nodes = await client.list_nodes(
        who.ctx, status=status_filter, page_size=page_size, page_token=page_token
    )
    return data_response(nodes)


@router.get("/nodes/{node_id}", response_model=Data[Node])
async def get_node(node_id: NodeId, who: Viewer, client: ClientDep) -> Response:
    """One node with its slots and running jobs."""
    return data_response(await client.get_node(node_id, who.ctx))


@router.post("/nodes/{node_id}/drain", response_model=Data[Node], responses=errors(413))
async def drain_node(
    node_id: NodeId,
    who: ClusterAdmin,
    client: ClientDep,
    body: Annotated[DrainBody | None, Body()] = None,
) -> Response:
    """Stop scheduling onto a node; `force` preempts its running jobs (409 if already draining)."""
    body = body or DrainBody()
    return data_response(await client.drain_node(node_id, body.model_dump(mode="json"), who.ctx))


@router.post("/nodes/{node_id}/enable", response_model=Data[Node])
async def enable_node(node_id: NodeId, who: ClusterAdmin, client: ClientDep) -> Response:
    """Re-enable a drained or disabled node (409 if it is online)."""
    return data_response(await client.enable_node(node_id, who.ctx))
