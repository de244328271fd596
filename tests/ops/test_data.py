"""POST /data/validate and GET /data/cache against the scripted coordinator."""

from __future__ import annotations

from typing import Any

import pytest

from scaimind.v1 import common_pb2, coordinator_pb2
from tests.conftest import auth
from tests.ops.conftest import PREFIX, Gateway, ts


async def test_validate_data_converts_request_and_response(gw: Gateway) -> None:
    gw.coordinator.responses["ValidateData"] = coordinator_pb2.ValidateDataResponse(
        valid=False,
        results=[
            coordinator_pb2.SourceValidation(
                path="file:///d/train.jsonl",
                valid=False,
                format=common_pb2.DATA_FORMAT_JSONL,
                num_rows=3,
                size_bytes=120,
                columns=["prompt", "completion"],
                errors=[coordinator_pb2.RowError(row=2, message="missing field 'completion'")],
                warnings=["1 duplicate row"],
            )
        ],
    )
    body = {
        "sources": [
            {"path": "file:///d/train.jsonl", "format": "jsonl", "columns": ["prompt"]},
            {"path": "scaidrive://tenant-a/dpo.csv", "format": "csv", "sample_rate": 0.5},
        ],
        "training_type": "DPO",
        "sample_size": 10,
    }
    r = await gw.http.post(f"{PREFIX}/data/validate", json=body, headers=auth())
    assert r.status_code == 200, r.text
    assert r.json() == {
        "data": {
            "valid": False,
            "results": [
                {
                    "path": "file:///d/train.jsonl",
                    "valid": False,
                    "format": "jsonl",
                    "num_rows": 3,
                    "size_bytes": 120,
                    "columns": ["prompt", "completion"],
                    "errors": [{"row": 2, "message": "missing field 'completion'"}],
                    "warnings": ["1 duplicate row"],
                }
            ],
        }
    }
    call = gw.coordinator.last("ValidateData")
    req: Any = call.request
    assert req.training_type == common_pb2.TRAINING_TYPE_DPO
    assert req.sample_size == 10
    assert [(s.path, s.format, list(s.columns), s.sample_rate) for s in req.sources] == [
        ("file:///d/train.jsonl", common_pb2.DATA_FORMAT_JSONL, ["prompt"], 0.0),
        ("scaidrive://tenant-a/dpo.csv", common_pb2.DATA_FORMAT_CSV, [], 0.5),
    ]
    gw.assert_signed_tokens(call.metadata)


async def test_validate_data_defaults(gw: Gateway) -> None:
    r = await gw.http.post(
        f"{PREFIX}/data/validate", json={"sources": [{"path": "/d/x.txt"}]}, headers=auth()
    )
    assert r.status_code == 200, r.text
    req: Any = gw.coordinator.last("ValidateData").request
    assert (req.training_type, req.sample_size) == (common_pb2.TRAINING_TYPE_SFT, 100)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "sources"),
        ({"sources": []}, "sources"),
        ({"sources": [{"format": "jsonl"}]}, "sources.0.path"),
        ({"sources": [{"path": "p", "format": "xlsx"}]}, "sources.0.format"),
        ({"sources": [{"path": "p", "sample_rate": 0}]}, "sources.0.sample_rate"),
        ({"sources": [{"path": "p"}], "training_type": "KTO"}, "training_type"),
        ({"sources": [{"path": "p"}], "sample_size": 0}, "sample_size"),
        ({"sources": [{"path": "p"}], "sample_size": "many"}, "sample_size"),
        ({"sources": [{"path": "p"}], "tenant_id": "tenant-b"}, "tenant_id"),
    ],
)
async def test_validate_data_validation(gw: Gateway, body: dict[str, Any], field: str) -> None:
    r = await gw.http.post(f"{PREFIX}/data/validate", json=body, headers=auth())
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["error"]["details"]], r.json()
    assert gw.coordinator.calls == []


async def test_data_cache(gw: Gateway) -> None:
    gw.coordinator.responses["GetDataCache"] = coordinator_pb2.GetDataCacheResponse(
        entries=[
            coordinator_pb2.DataCacheEntry(
                dataset_uri="file:///d/train.jsonl",
                node_id="node-1",
                size_bytes=120,
                num_rows=3,
                status=coordinator_pb2.CACHE_ENTRY_STATUS_READY,
                cached_at=ts(1_700_000_000),
                last_accessed_at=ts(1_700_000_060),
                hit_count=4,
            )
        ],
        total_size_bytes=120,
        capacity_bytes=1000,
        hit_rate=0.8,
    )
    r = await gw.http.get(f"{PREFIX}/data/cache", params={"node_id": "node-1"}, headers=auth())
    assert r.status_code == 200, r.text
    assert r.json() == {
        "data": {
            "entries": [
                {
                    "dataset_uri": "file:///d/train.jsonl",
                    "node_id": "node-1",
                    "size_bytes": 120,
                    "num_rows": 3,
                    "status": "READY",
                    "cached_at": "2023-11-14T22:13:20.000Z",
                    "last_accessed_at": "2023-11-14T22:14:20.000Z",
                    "hit_count": 4,
                }
            ],
            "total_size_bytes": 120,
            "capacity_bytes": 1000,
            "hit_rate": 0.8,
        }
    }
    call = gw.coordinator.last("GetDataCache")
    assert call.request.node_id == "node-1"  # type: ignore[attr-defined]
    gw.assert_signed_tokens(call.metadata)
    await gw.http.get(f"{PREFIX}/data/cache", headers=auth())
    assert gw.coordinator.last("GetDataCache").request.node_id == ""  # type: ignore[attr-defined]
    r = await gw.http.get(f"{PREFIX}/data/cache", params={"node_id": "n" * 129}, headers=auth())
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "node_id"
