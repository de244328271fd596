"""Pure pieces of the coordinator: downsampling, compare-and-set transitions, inventory files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scaimind.coordinator.executors.inventory import InventoryError, load_inventory
from scaimind.coordinator.jobs.runner import last_said
from scaimind.coordinator.persistence.records import PendingLog
from scaimind.coordinator.persistence.store import Store
from scaimind.coordinator.rpc.coordinator_service import downsample
from scaimind.v1 import common_pb2

S = common_pb2.JobStatus


def test_downsample_keeps_first_last_and_spikes() -> None:
    points = [(step, 1.0, float(step)) for step in range(1, 10_001)]
    points[4321] = (4322, 99.0, 4322.0)  # a spike
    points[7000] = (7001, -5.0, 7001.0)  # a dip
    out = downsample(points, 50)
    assert len(out) <= 50
    assert out[0] == points[0]
    assert out[-1] == points[-1]
    assert (4322, 99.0, 4322.0) in out
    assert (7001, -5.0, 7001.0) in out
    assert [p[0] for p in out] == sorted({p[0] for p in out})
    assert downsample(points[:10], 50) == points[:10]


def test_transition_is_compare_and_set(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    now = time.time()
    store.insert_job(
        {
            "job_id": "job_1",
            "tenant_id": "t",
            "name": "n",
            "status": S.JOB_STATUS_TRAINING,
            "request": b"",
            "priority": 5,
            "queue_name": "default",
            "created_at": now,
            "updated_at": now,
        },
        [PendingLog(2, "submitted", "coordinator")],
        None,
    )
    assert store.transition("job_1", [S.JOB_STATUS_TRAINING], S.JOB_STATUS_CANCELLED, {}, [])
    row = store.get_job("job_1")
    assert row is not None
    first_update = row.updated_at
    # The late "process finished" expects TRAINING and loses.
    late = store.transition(
        "job_1",
        [S.JOB_STATUS_TRAINING],
        S.JOB_STATUS_COMPLETED,
        {},
        [PendingLog(2, "x", "coordinator")],
    )
    assert not late
    assert store.job_status("job_1") == S.JOB_STATUS_CANCELLED
    assert [e.message for e in store.logs_after("job_1", 0, 0, 10)] == ["submitted"]
    assert store.get_job("job_1", "other-tenant") is None
    assert store.transition("job_1", [S.JOB_STATUS_CANCELLED], S.JOB_STATUS_CANCELLED, {}, [])
    row = store.get_job("job_1")
    assert row is not None
    assert row.updated_at > first_update
    store.close()


def test_inventory_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    path.write_text(
        json.dumps(
            {"nodes": [{"node_id": "a", "gpu_count": 4, "gpu_type": "H100", "labels": {"z": "1"}}]}
        )
    )
    (node,) = load_inventory(path)
    assert (node.node_id, node.hostname, node.gpu_type, node.gpu_count, node.labels) == (
        "a",
        "a",
        "H100",
        4,
        {"z": "1"},
    )
    for bad, message in [
        ([], "non-empty"),
        ([{"gpu_count": 1}], "node_id"),
        ([{"node_id": "a", "gpu_count": 0}], "gpu_count"),
        ([{"node_id": "a", "gpu_count": 1}, {"node_id": "a", "gpu_count": 1}], "duplicate"),
    ]:
        path.write_text(json.dumps(bad))
        with pytest.raises(InventoryError, match=message):
            load_inventory(path)
    path.write_text("{not json")
    with pytest.raises(InventoryError, match="cannot read"):
        load_inventory(path)


def test_recent_log_buffer_matches_the_database(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    for batch in range(50):
        store.append_logs(
            "job_1", [PendingLog(1 + (i % 4), f"line {batch}-{i}", "stdout") for i in range(100)]
        )
    fresh = Store(tmp_path / "db.sqlite")  # no buffer: every read goes to SQL
    for after in (0, 1000, 2999, 3001, 4500, 4999, 5000):
        for level in (1, 3):
            got = store.logs_after("job_1", after, level, 10_000)
            want = fresh.logs_after("job_1", after, level, 10_000)
            assert got == want
            assert all(r.seq > after and r.level >= level for r in got)
    assert [r.seq for r in store.logs_after("job_1", 4000, 1, 5)] == [4001, 4002, 4003, 4004, 4005]
    assert store.last_seq("job_1") == fresh.last_seq("job_1") == 5000
    fresh.close()
    store.close()


def test_a_failed_process_is_explained_by_its_last_stderr_line() -> None:
    # The pipes are read concurrently: a stdout line read after the error must not replace it.
    tail = ["[stderr] Traceback (most recent call last):", "[stderr] ValueError: bad", "[stdout] x"]
    assert last_said(tail) == "ValueError: bad"
    assert last_said(["[stdout] step 1", "[stdout] giving up"]) == "giving up"
    assert last_said([]) == ""
