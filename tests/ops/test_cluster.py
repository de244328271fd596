"""GET /cluster, /cluster/nodes…, drain/enable and GET /queue against the scripted coordinator."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from scaimind.v1 import cluster_pb2
from tests.conftest import auth
from tests.gateway.conftest import Failure
from tests.ops.conftest import PREFIX, Gateway, ts


async def test_cluster_status_shape(gw: Gateway) -> None:
    gw.coordinator.responses["GetClusterStatus"] = cluster_pb2.ClusterStatus(
        cluster_name="lab",
        total_nodes=4,
        nodes_by_status={"ONLINE": 3, "DRAINING": 1},
        total_gpus=32,
        available_gpus=8,
        allocated_gpus=24,
        gpu_types=[cluster_pb2.GpuTypeSummary(gpu_type="A100-80GB", total=32, available=8)],
        running_jobs=5,
        queued_jobs=2,
        utilization=cluster_pb2.ClusterUtilization(gpu_percent=75.0),
        coordinator_version="0.1.0",
        updated_at=ts(1_700_000_000),
        jobs_by_status={"TRAINING": 5, "QUEUED": 2, "COMPLETED": 40},
    )
    r = await gw.http.get(f"{PREFIX}/cluster", headers=auth())
    assert r.status_code == 200, r.text
    assert r.json() == {
        "data": {
            "cluster_name": "lab",
            "total_nodes": 4,
            "nodes_by_status": {"ONLINE": 3, "DRAINING": 1},
            "total_gpus": 32,
            "available_gpus": 8,
            "allocated_gpus": 24,
            "gpu_types": [{"gpu_type": "A100-80GB", "total": 32, "available": 8}],
            "running_jobs": 5,
            "queued_jobs": 2,
            "utilization": {"gpu_percent": 75.0},
            "coordinator_version": "0.1.0",
            "updated_at": "2023-11-14T22:13:20.000Z",
            "jobs_by_status": {"TRAINING": 5, "QUEUED": 2, "COMPLETED": 40},
        }
    }
    call = gw.coordinator.last("GetClusterStatus")
    assert call.metadata["x-tenant-id"] == "tenant-a"
    assert call.metadata["x-user-id"] == "user-1"
    # Reads that need no artefacts carry no downstream tokens.
    assert "x-scaidrive-token" not in call.metadata


NODE_JSON: dict[str, Any] = {
    "node_id": "node-1",
    "hostname": "node-1.local",
    "status": "ONLINE",
    "gpu_type": "A100-80GB",
    "gpu_count": 2,
    "gpus_available": 1,
    "gpus": [
        {
            "index": 0,
            "utilization_percent": 87.5,
            "memory_used_bytes": 10,
            "memory_total_bytes": 80,
            "job_id": "job_7",
        },
        {
            "index": 1,
            "utilization_percent": 0.0,
            "memory_used_bytes": 0,
            "memory_total_bytes": 80,
            "job_id": "",
        },
    ],
    "running_job_ids": ["job_7"],
    "labels": {"zone": "a"},
    "last_heartbeat": "2023-11-14T22:13:20.000Z",
    "drain_reason": "",
}


async def test_list_nodes_passes_query_and_returns_page(gw: Gateway) -> None:
    r = await gw.http.get(
        f"{PREFIX}/cluster/nodes",
        params={"status_filter": "DRAINING", "page_size": 7, "page_token": "abc"},
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"nodes": [NODE_JSON], "next_page_token": "p2", "total_count": 3}}
    req = gw.coordinator.last("ListNodes").request
    assert (req.status_filter, req.page_size, req.page_token) == ("DRAINING", 7, "abc")  # type: ignore[attr-defined]


async def test_list_nodes_defaults(gw: Gateway) -> None:
    r = await gw.http.get(f"{PREFIX}/cluster/nodes", headers=auth())
    assert r.status_code == 200
    req = gw.coordinator.last("ListNodes").request
    assert (req.status_filter, req.page_size, req.page_token) == ("", 20, "")  # type: ignore[attr-defined]


async def test_get_node(gw: Gateway) -> None:
    r = await gw.http.get(f"{PREFIX}/cluster/nodes/node-1", headers=auth())
    assert r.status_code == 200
    assert r.json() == {"data": NODE_JSON}
    assert gw.coordinator.last("GetNode").request.node_id == "node-1"  # type: ignore[attr-defined]


async def test_get_node_not_found(gw: Gateway) -> None:
    gw.coordinator.responses["GetNode"] = Failure(
        grpc.StatusCode.NOT_FOUND, "node node-9 not found"
    )
    r = await gw.http.get(f"{PREFIX}/cluster/nodes/node-9", headers=auth())
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "NOT_FOUND", "message": "node node-9 not found"}


@pytest.mark.parametrize(
    ("kwargs", "force", "reason"),
    [
        ({}, False, ""),
        ({"content": b"", "headers": {"Content-Type": "application/json"}}, False, ""),
        ({"json": {}}, False, ""),
        ({"json": {"force": True}}, True, ""),
        ({"json": {"force": False, "reason": "maintenance"}}, False, "maintenance"),
    ],
    ids=["no-body", "empty-body", "empty-object", "force", "reason"],
)
async def test_drain_node_bodies(
    gw: Gateway, kwargs: dict[str, Any], force: bool, reason: str
) -> None:
    headers = {**auth(), **kwargs.pop("headers", {})}
    r = await gw.http.post(f"{PREFIX}/cluster/nodes/node-2/drain", headers=headers, **kwargs)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "DRAINING"
    assert r.json()["data"]["drain_reason"] == reason
    req = gw.coordinator.last("DrainNode").request
    assert (req.node_id, req.force, req.reason) == ("node-2", force, reason)  # type: ignore[attr-defined]


async def test_enable_node(gw: Gateway) -> None:
    r = await gw.http.post(f"{PREFIX}/cluster/nodes/node-3/enable", headers=auth())
    assert r.status_code == 200, r.text
    assert r.json()["data"]["node_id"] == "node-3"
    assert r.json()["data"]["status"] == "ONLINE"
    assert gw.coordinator.last("EnableNode").request.node_id == "node-3"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("rpc", "path", "detail"),
    [
        ("DrainNode", "drain", "node node-1 is DRAINING; it is already draining"),
        ("EnableNode", "enable", "node node-1 is ONLINE; it is already enabled"),
    ],
)
async def test_drain_enable_failed_precondition_is_409(
    gw: Gateway, rpc: str, path: str, detail: str
) -> None:
    gw.coordinator.responses[rpc] = Failure(grpc.StatusCode.FAILED_PRECONDITION, detail)
    r = await gw.http.post(f"{PREFIX}/cluster/nodes/node-1/{path}", headers=auth())
    assert r.status_code == 409
    assert r.headers["x-should-retry"] == "false"
    assert r.json()["error"] == {"code": "FAILED_PRECONDITION", "message": detail}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("GET", "/cluster/nodes", {"params": {"page_size": 0}}, "page_size"),
        ("GET", "/cluster/nodes", {"params": {"page_size": 101}}, "page_size"),
        ("GET", "/cluster/nodes", {"params": {"page_size": "ten"}}, "page_size"),
        ("GET", "/cluster/nodes", {"params": {"status_filter": "X" * 33}}, "status_filter"),
        ("POST", "/cluster/nodes/n1/drain", {"json": {"force": "maybe"}}, "force"),
        ("POST", "/cluster/nodes/n1/drain", {"json": {"reason": "x" * 1025}}, "reason"),
        ("POST", "/cluster/nodes/n1/drain", {"json": {"forse": True}}, "forse"),
        ("POST", "/cluster/nodes/n1/drain", {"json": [True]}, "body"),
        ("GET", "/cluster/nodes/" + "n" * 129, {}, "node_id"),
        ("GET", "/queue", {"params": {"queue_name": "q" * 129}}, "queue_name"),
    ],
)
async def test_validation_errors_name_the_field(
    gw: Gateway, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    r = await gw.http.request(method, f"{PREFIX}{path}", headers=auth(), **kwargs)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert field in [d["field"] for d in body["error"]["details"]], body
    assert gw.coordinator.calls == []


async def test_malformed_drain_json(gw: Gateway) -> None:
    r = await gw.http.post(
        f"{PREFIX}/cluster/nodes/n1/drain",
        content=b'{"force": tru',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "body"
    assert gw.coordinator.calls == []


async def test_queue_status(gw: Gateway) -> None:
    gw.coordinator.responses["GetQueueStatus"] = cluster_pb2.GetQueueStatusResponse(
        queues=[
            cluster_pb2.QueueStatus(
                queue_name="default",
                depth=1,
                running=2,
                oldest_wait_seconds=30,
                estimated_wait_seconds=120,
                jobs=[
                    cluster_pb2.QueuedJob(
                        job_id="job_3",
                        name="demo",
                        position=1,
                        priority=7,
                        gpu_count=1,
                        gpu_type="CPU",
                        wait_seconds=30,
                        estimated_start_seconds=90,
                    )
                ],
            )
        ],
        total_depth=1,
    )
    r = await gw.http.get(f"{PREFIX}/queue", params={"queue_name": "default"}, headers=auth())
    assert r.status_code == 200, r.text
    assert r.json() == {
        "data": {
            "queues": [
                {
                    "queue_name": "default",
                    "depth": 1,
                    "running": 2,
                    "oldest_wait_seconds": 30,
                    "estimated_wait_seconds": 120,
                    "jobs": [
                        {
                            "job_id": "job_3",
                            "name": "demo",
                            "position": 1,
                            "priority": 7,
                            "gpu_count": 1,
                            "gpu_type": "CPU",
                            "wait_seconds": 30,
                            "estimated_start_seconds": 90,
                        }
                    ],
                }
            ],
            "total_depth": 1,
        }
    }
    assert gw.coordinator.last("GetQueueStatus").request.queue_name == "default"  # type: ignore[attr-defined]
    await gw.http.get(f"{PREFIX}/queue", headers=auth())
    assert gw.coordinator.last("GetQueueStatus").request.queue_name == ""  # type: ignore[attr-defined]
