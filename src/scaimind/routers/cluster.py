"""Cluster endpoints (API.md §5.3)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from scaimind.convert import dict_to_message, message_to_dict
from scaimind.deps import ClientDep, ClusterAdmin, Viewer
from scaimind.schemas.cluster import DrainBody
from scaimind.v1 import cluster_pb2

router = APIRouter(prefix="/cluster", tags=["cluster"])

NodeId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("")
async def get_cluster_status(who: Viewer, client: ClientDep) -> dict[str, Any]:
    """Cluster-wide capacity, utilisation and job counts."""
    return {"data": message_to_dict(await client.get_cluster_status(who.ctx))}


@router.get("/nodes")
async def list_nodes(
    who: Viewer,
    client: ClientDep,
    status_filter: Annotated[str, Query(max_length=32)] = "",
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: Annotated[str, Query(max_length=1024)] = "",
) -> dict[str, Any]:
    """List the cluster's nodes."""
    req = dict_to_message(
        {"status_filter": status_filter, "page_size": page_size, "page_token": page_token},
        cluster_pb2.ListNodesRequest,
    )
    return {"data": message_to_dict(await client.list_nodes(req, who.ctx))}


@router.get("/nodes/{node_id}")
async def get_node(node_id: NodeId, who: Viewer, client: ClientDep) -> dict[str, Any]:
    """One node."""
    return {"data": message_to_dict(await client.get_node(node_id, who.ctx))}


@router.post("/nodes/{node_id}/drain")
async def drain_node(
    node_id: NodeId,
    who: ClusterAdmin,
    client: ClientDep,
    body: Annotated[DrainBody | None, Body()] = None,
) -> dict[str, Any]:
    """Stop scheduling onto a node; `force` preempts its running jobs."""
    body = body or DrainBody()
    req = dict_to_message(
        {"node_id": node_id, **body.model_dump(mode="json")}, cluster_pb2.DrainNodeRequest
    )
    return {"data": message_to_dict(await client.drain_node(req, who.ctx))}


@router.post("/nodes/{node_id}/enable")
async def enable_node(node_id: NodeId, who: ClusterAdmin, client: ClientDep) -> dict[str, Any]:
    """Re-enable a drained or disabled node."""
    return {"data": message_to_dict(await client.enable_node(node_id, who.ctx))}
