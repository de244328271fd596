"""Data validation, the dataset cache and scaidrive:// access, end to end over HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from scaimind.contract.downstream_tokens import sign_downstream_token
from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.server import start_coordinator
from scaimind.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from tests.conftest import API_SECRET, auth, wait_for
from tests.e2e_ops.conftest import DOWNSTREAM_KEY, NODE, PREFIX, Ops, OpsFactory
from tests.trainer.conftest import write_corpus


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def _validate(ops: Ops, sources: list[dict[str, Any]], **extra: Any) -> Any:
    body = {"sources": sources, "training_type": "SFT", **extra}
    return await ops.http.post(f"{PREFIX}/data/validate", json=body, headers=auth())


async def test_validate_good_malformed_missing_and_wrong_shape(ops: Ops) -> None:
    good = _write(
        ops.root / "good.jsonl",
        "".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(5)),
    )
    malformed = _write(
        ops.root / "malformed.jsonl",
        '{"prompt": "a", "completion": "b"}\n'
        '{"prompt": "broken"\n'
        '{"prompt": "c", "completion": "d"}\n',
    )
    wrong_shape = _write(
        ops.root / "shape.jsonl",
        '{"question": "no prompt here"}\n[1, 2]\n{"prompt": 3, "completion": "x"}\n',
    )
    missing = ops.root / "missing.jsonl"

    r = await _validate(ops, [{"path": good.as_uri()}])
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["valid"] is True
    (res,) = data["results"]
    assert res["valid"]
    assert res["format"] == "jsonl"
    assert res["num_rows"] == 5
    assert res["columns"] == ["prompt", "completion"]
    assert res["size_bytes"] == good.stat().st_size
    assert res["errors"] == []

    r = await _validate(
        ops,
        [
            {"path": str(good)},
            {"path": str(malformed)},
            {"path": str(missing)},
            {"path": str(wrong_shape)},
            {"path": "hf://datasets/x"},
        ],
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["valid"] is False
    ok, bad, gone, shape, remote = data["results"]
    assert ok["valid"] is True
    assert bad["valid"] is False
    assert [e["row"] for e in bad["errors"]] == [2]
    assert gone["valid"] is False
    assert "not found" in gone["errors"][0]["message"]
    assert shape["valid"] is False
    assert [e["row"] for e in shape["errors"]] == [1, 2, 3]
    assert "missing required" in shape["errors"][0]["message"]
    assert "must be a string" in shape["errors"][2]["message"]
    assert remote["valid"] is False
    assert "not supported" in remote["errors"][0]["message"]

    # A DPO check needs other fields than SFT.
    r = await _validate(ops, [{"path": str(good)}], training_type="DPO")
    assert r.json()["data"]["valid"] is False

    # Validation needs manage; a viewer is refused.
    viewer = await ops.http.post(
        f"{PREFIX}/data/validate",
        json={"sources": [{"path": str(good)}]},
        headers=auth(role="tenant_viewer"),
    )
    assert viewer.status_code == 403


async def test_cache_fills_hits_and_evicts_lru(make_ops: OpsFactory) -> None:
    # Room for two ~6 KB datasets but not three.
    ops = await make_ops(slots=1, cache_capacity_bytes=14_000)
    files = []
    for i in range(3):
        lines = [
            json.dumps({"prompt": f"p{i}-{n} " * 8, "completion": "c " * 8}) for n in range(60)
        ]
        files.append(_write(ops.root / f"d{i}.jsonl", "\n".join(lines) + "\n"))
    sizes = [f.stat().st_size for f in files]
    assert all(4000 < s < 7000 for s in sizes), sizes

    async def run(path: Path) -> None:
        job_id = (await ops.submit(f"on-{path.name}", sources=[{"path": str(path)}], max_steps=2))[
            "data"
        ]["job_id"]
        job = await ops.wait_status(job_id, "COMPLETED", "FAILED", within=30)
        assert job["status"] == "COMPLETED", job

    async def cache(node_id: str = "") -> dict[str, Any]:
        r = await ops.http.get(f"{PREFIX}/data/cache", params={"node_id": node_id}, headers=auth())
        assert r.status_code == 200, r.text
        return r.json()["data"]  # type: ignore[no-any-return]

    empty = await cache()
    assert empty["entries"] == []
    assert empty["capacity_bytes"] == 14_000

    await run(files[0])
    await run(files[1])
    data = await cache()
    assert {e["dataset_uri"] for e in data["entries"]} == {str(files[0]), str(files[1])}
    assert data["total_size_bytes"] == sizes[0] + sizes[1]
    entry = next(e for e in data["entries"] if e["dataset_uri"] == str(files[0]))
    assert entry["node_id"] == NODE
    assert entry["status"] == "READY"
    assert entry["num_rows"] == 60
    assert entry["size_bytes"] == sizes[0]
    assert entry["hit_count"] == 0
    assert entry["cached_at"]
    assert entry["last_accessed_at"]
    assert data["hit_rate"] == 0.0

    # A second job on d0 is a hit and makes d1 the least recently used.
    await run(files[0])
    data = await cache()
    hit = next(e for e in data["entries"] if e["dataset_uri"] == str(files[0]))
    assert hit["hit_count"] == 1
    assert abs(data["hit_rate"] - 1 / 3) < 1e-9

    # A third dataset does not fit: the least recently used (d1) is evicted.
    await run(files[2])
    data = await cache()
    assert {e["dataset_uri"] for e in data["entries"]} == {str(files[0]), str(files[2])}
    assert data["total_size_bytes"] == sizes[0] + sizes[2] <= 14_000
    assert (await cache(NODE))["entries"] == data["entries"]

    # Another tenant sees none of these entries; an unknown node is a 404.
    r = await ops.http.get(f"{PREFIX}/data/cache", headers=auth("tenant-b"))
    assert r.json()["data"]["entries"] == []
    r = await ops.http.get(f"{PREFIX}/data/cache", params={"node_id": "nope"}, headers=auth())
    assert r.status_code == 404


async def test_cache_never_evicts_data_of_a_running_job(make_ops: OpsFactory) -> None:
    corpus_bytes = 5176  # write_corpus(records=60)
    ops = await make_ops(slots=2, cache_capacity_bytes=corpus_bytes + 1000)
    assert ops.corpus.stat().st_size == corpus_bytes
    gate = ops.root / "gate"
    running = (await ops.submit("holder", gate=gate))["data"]["job_id"]
    await ops.wait_status(running, "TRAINING")
    record = json.dumps({"prompt": "x", "completion": "y"}) + "\n"
    other = _write(ops.root / "other.jsonl", record * 40)
    finished = (await ops.submit("short", sources=[{"path": str(other)}], max_steps=1))["data"][
        "job_id"
    ]
    assert (await ops.wait_status(finished, "COMPLETED", "FAILED"))["status"] == "COMPLETED"

    async def uris() -> set[str]:
        r = await ops.http.get(f"{PREFIX}/data/cache", headers=auth())
        return {e["dataset_uri"] for e in r.json()["data"]["entries"]}

    # Making room for the short job's data could not evict the running job's corpus: both
    # are cached (over capacity while the job runs).
    assert {str(ops.corpus), str(other)} <= await uris()
    gate.touch()
    await ops.wait_status(running, "COMPLETED")
    third_file = _write(ops.root / "third.jsonl", record * 4)
    third = (await ops.submit("third", sources=[{"path": str(third_file)}], max_steps=1))["data"][
        "job_id"
    ]
    assert (await ops.wait_status(third, "COMPLETED", "FAILED"))["status"] == "COMPLETED"
    # Now the corpus is the least recently used entry that nothing reads: it made the room.
    assert str(ops.corpus) not in await uris()
    assert {str(other), str(third_file)} <= await uris()


async def test_a_source_larger_than_the_cache_is_refused_before_copying(
    make_ops: OpsFactory,
) -> None:
    ops = await make_ops(slots=1, cache_capacity_bytes=1000)
    job = (await ops.submit("too-big"))["data"]["job_id"]
    failed = await ops.wait_status(job, "FAILED", "COMPLETED")
    assert failed["error"]["code"] == "DATA_ERROR"
    assert "larger than the dataset cache" in failed["error"]["message"]
    assert str(ops.root / "coordinator") not in failed["error"]["message"]
    cache = ops.root / "coordinator" / "dataset-cache"
    assert not [p for p in cache.rglob("*") if p.is_file()]


async def test_scaidrive_sources_need_the_tenants_token(ops: Ops) -> None:
    _write(
        ops.storage / "tenant-a" / "sets" / "train.jsonl",
        "".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(8)),
    )
    _write(ops.storage / "tenant-b" / "secret.jsonl", '{"prompt": "b", "completion": "b"}\n')
    mine = "scaidrive://tenant-a/sets/train.jsonl"

    # The caller's own files: validated and trained on (through the gateway's signed token).
    r = await _validate(ops, [{"path": mine}])
    assert r.status_code == 200, r.text
    res = r.json()["data"]["results"][0]
    assert res["valid"]
    assert res["num_rows"] == 8
    assert res["path"] == mine
    job_id = (await ops.submit("drive", sources=[{"path": mine}], max_steps=2))["data"]["job_id"]
    assert (await ops.wait_status(job_id, "COMPLETED", "FAILED"))["status"] == "COMPLETED"
    r = await ops.http.get(f"{PREFIX}/data/cache", headers=auth())
    assert mine in {e["dataset_uri"] for e in r.json()["data"]["entries"]}

    # A missing file of one's own is just invalid; its server path is not revealed.
    r = await _validate(ops, [{"path": "scaidrive://tenant-a/nope.jsonl"}])
    res = r.json()["data"]["results"][0]
    assert res["valid"] is False
    assert str(ops.storage) not in json.dumps(res)

    # Another tenant's path: 403 on validate and on submit, whatever the caller's token.
    theirs = "scaidrive://tenant-b/secret.jsonl"
    r = await _validate(ops, [{"path": theirs}])
    assert r.status_code == 403, r.text
    assert "another tenant" in r.json()["error"]["message"]
    r = await ops.http.post(
        f"{PREFIX}/jobs",
        json={
            "name": "steal",
            "training_config": {
                "training_type": "SFT",
                "base_model": {"model_id": "m"},
            },
            "data_config": {"sources": [{"path": theirs}]},
            "resource_config": {"gpu_count": 1},
        },
        headers=auth(),
    )
    assert r.status_code == 403, r.text


async def test_scaidrive_token_checks_at_the_coordinator(ops: Ops) -> None:
    """Tokens the gateway would never send: missing, expired, wrong audience, other tenant."""
    _write(ops.storage / "tenant-a" / "t.jsonl", '{"prompt": "a", "completion": "b"}\n')
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{ops.coordinator.port}")
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
    req = coordinator_pb2.ValidateDataRequest(
        sources=[common_pb2.DataSource(path="scaidrive://tenant-a/t.jsonl")]
    )

    def sign(tenant: str = "tenant-a", audience: str = "scaidrive", **kw: Any) -> str:
        return sign_downstream_token(
            DOWNSTREAM_KEY, subject="u", tenant_id=tenant, audience=audience, **kw
        )

    async def call(token: str | None) -> grpc.StatusCode | None:
        md = [("x-api-secret", API_SECRET), ("x-tenant-id", "tenant-a")]
        if token is not None:
            md.append(("x-scaidrive-token", token))
        try:
            await stub.ValidateData(req, metadata=md, timeout=10)
        except grpc.aio.AioRpcError as e:
            details = e.details() or ""
            return e.code() if "scaidrive" in details else None
        return None

    try:
        assert await call(sign()) is None
        denied = grpc.StatusCode.PERMISSION_DENIED
        assert await call(None) == denied
        assert await call(sign(ttl_s=60, now=time.time() - 3600)) == denied
        assert await call(sign(audience="scaiatlas")) == denied
        assert await call(sign(tenant="tenant-b")) == denied
        forged = sign_downstream_token(
            "another-key-0123456789abcdef0123456789",
            subject="u",
            tenant_id="tenant-a",
            audience="scaidrive",
        )
        assert await call(forged) == denied
    finally:
        await channel.close(None)


async def test_scaidrive_token_expired_at_preparing(make_ops: OpsFactory) -> None:
    """A queued scaidrive job whose token is gone by PREPARING fails with a clear message."""
    ops = await make_ops(slots=1)
    _write(ops.storage / "tenant-a" / "t.jsonl", '{"prompt": "a", "completion": "b"}\n')
    gate = ops.root / "gate"
    blocker = (await ops.submit("blocker", gate=gate))["data"]["job_id"]
    await ops.wait_status(blocker, "TRAINING")
    queued = (
        await ops.submit("later", sources=[{"path": "scaidrive://tenant-a/t.jsonl"}], max_steps=1)
    )["data"]["job_id"]
    # Replace the remembered token with an expired one, as if the job had waited 15 minutes.
    expired = sign_downstream_token(
        DOWNSTREAM_KEY,
        subject="u",
        tenant_id="tenant-a",
        audience="scaidrive",
        ttl_s=60,
        now=time.time() - 3600,
    )
    ops.coordinator.manager.ops.put_token(queued, expired, time.time())
    gate.touch()
    job = await ops.wait_status(queued, "FAILED", "COMPLETED")
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "DATA_ERROR"
    assert "expired" in job["error"]["message"]
    await wait_for(lambda: _no_token_in_logs(ops, queued, expired))


async def _no_token_in_logs(ops: Ops, job_id: str, token: str) -> bool:
    r = await ops.http.get(
        f"{PREFIX}/jobs/{job_id}/logs", params={"tail": 1000, "follow": "false"}, headers=auth()
    )
    return r.status_code == 200 and token not in r.text


async def test_cache_entries_survive_a_coordinator_restart(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", records=30)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps([{"node_id": NODE, "gpu_type": "CPU", "gpu_count": 1}]))
    config = CoordinatorConfig(
        data_dir=tmp_path / "coordinator",
        api_secret=API_SECRET,
        inventory_path=inventory,
        local_data_roots=(str(tmp_path),),
    )
    md = (("x-api-secret", API_SECRET), ("x-tenant-id", "tenant-a"))
    req = coordinator_pb2.SubmitJobRequest(name="cached")
    req.training_config.training_type = common_pb2.TRAINING_TYPE_SFT
    req.training_config.base_model.model_id = "m"
    req.training_config.hyperparameters["max_steps"] = "1"
    req.data_config.sources.add(path=str(corpus))
    req.resource_config.gpu_count = 1

    async def run_once() -> coordinator_pb2.GetDataCacheResponse:
        running = await start_coordinator(config)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        try:
            job_id = (await stub.SubmitJob(req, metadata=md)).job_id

            async def finished() -> bool:
                job = await stub.GetJob(coordinator_pb2.GetJobRequest(job_id=job_id), metadata=md)
                return job.status == common_pb2.JOB_STATUS_COMPLETED

            await wait_for(finished)
            return await stub.GetDataCache(coordinator_pb2.GetDataCacheRequest(), metadata=md)
        finally:
            await channel.close(None)
            await running.stop()

    first = await run_once()
    assert [(e.dataset_uri, e.hit_count) for e in first.entries] == [(str(corpus), 0)]
    # The next coordinator on the same data dir finds the copy: the second job is a hit.
    second = await run_once()
    assert [(e.dataset_uri, e.hit_count) for e in second.entries] == [(str(corpus), 1)]
    assert second.entries[0].cached_at == first.entries[0].cached_at
    assert second.hit_rate == 0.5


async def test_user_code_never_sees_the_token_key(
    make_ops: OpsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As under `scaimind serve` / `scaimind coordinator`, where the key comes from the env.
    monkeypatch.setenv("SCAIMIND_TOKEN_SIGNING_KEY", DOWNSTREAM_KEY)
    monkeypatch.setenv("SCAIMIND_API_SECRET", API_SECRET)
    ops = await make_ops(slots=1)
    gate = ops.root / "gate"
    gate.touch()
    job_id = (await ops.submit("env", gate=gate))["data"]["job_id"]
    await ops.wait_status(job_id, "COMPLETED")
    names = json.loads(
        (ops.root / "coordinator" / "jobs" / job_id / "environment.json").read_text()
    )
    assert "SCAIMIND_JOB_ID" in names
    assert "GATE" in names
    assert "SCAIMIND_TOKEN_SIGNING_KEY" not in names
    assert "SCAIMIND_API_SECRET" not in names
