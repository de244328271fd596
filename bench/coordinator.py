"""Benchmark of the reference coordinator, measured through gRPC against a real coordinator process.

Prints:
- the median time from SubmitJob to COMPLETED of a 50-step built-in-trainer job (5 runs);
- the coordinator's overhead per state transition: the gaps between successive state changes
  that involve no training work (from the coordinator's own log timestamps), and the cost of one
  compare-and-set transition in the store;
- GetJob latency p50/p99 while 2 built-in-trainer jobs train (both cores busy).

Usage: .venv/bin/python bench/coordinator.py
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from scaimind.coordinator.persistence.records import PendingLog
from scaimind.coordinator.persistence.store import Store
from scaimind.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

SECRET = "bench-secret"
MD = [("x-api-secret", SECRET), ("x-tenant-id", "bench"), ("x-user-id", "bench")]
S = common_pb2.JobStatus
TERMINAL = {S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED, S.JOB_STATUS_CANCELLED}


def write_corpus(path: Path, records: int = 200) -> Path:
    """A prompt/completion jsonl corpus."""
    rng = random.Random(0)
    words = ["the cat", "a dog", "my friend", "sees", "likes", "the red ball", "an apple", "runs"]
    with path.open("w") as f:
        for i in range(records):
            text = " ".join(rng.choice(words) for _ in range(6)) + "."
            f.write(json.dumps({"prompt": f"item {i}", "completion": text}) + "\n")
    return path


def job_request(corpus: Path, steps: int, name: str) -> coordinator_pb2.SubmitJobRequest:
    """A built-in-trainer job."""
    req = coordinator_pb2.SubmitJobRequest(name=name)
    req.training_config.training_type = common_pb2.TRAINING_TYPE_SFT
    req.training_config.base_model.model_id = "bench/model"
    req.training_config.hyperparameters["max_steps"] = str(steps)
    req.data_config.sources.add(path=str(corpus))
    req.resource_config.gpu_count = 1
    return req


async def wait_terminal(
    stub: coordinator_pb2_grpc.CoordinatorServiceStub, job_id: str
) -> common_pb2.Job:
    """Poll GetJob (every 5 ms) until the job is terminal."""
    while True:
        job = await stub.GetJob(coordinator_pb2.GetJobRequest(job_id=job_id), metadata=MD)
        if job.status in TERMINAL:
            return job
        await asyncio.sleep(0.005)


async def transition_gaps(
    stub: coordinator_pb2_grpc.CoordinatorServiceStub, job_id: str
) -> dict[str, float]:
    """Seconds between the coordinator-side state changes of a finished job."""
    req = coordinator_pb2.StreamJobLogsRequest(job_id=job_id, tail=10000)
    entries = [m.entry async for m in stub.StreamJobLogs(req, metadata=MD) if m.HasField("entry")]
    marks: dict[str, float] = {}
    for e in entries:
        if e.source != "coordinator":
            continue
        t = e.timestamp.ToNanoseconds() / 1e9
        m = re.match(r"(\w+) → (\w+)", e.message)
        if m:
            marks.setdefault(f"{m.group(1)}→{m.group(2)}", t)
        elif e.message.startswith("process ") and "ended" in e.message:
            marks["exit"] = t
        elif e.message.startswith("starting attempt"):
            marks["spawn"] = t
    gaps = {
        "QUEUED→SCHEDULING after PENDING→QUEUED": marks["QUEUED→SCHEDULING"]
        - marks["PENDING→QUEUED"],
        "SCHEDULING→PREPARING after placement": marks["SCHEDULING→PREPARING"]
        - marks["QUEUED→SCHEDULING"],
        "PREPARING: resolve sources, write spec": marks["spawn"] - marks["SCHEDULING→PREPARING"],
        "process exit → COMPLETED": next(v for k, v in marks.items() if k.endswith("→COMPLETED"))
        - marks["exit"],
    }
    gaps["PREPARING→TRAINING incl. process spawn"] = marks["PREPARING→TRAINING"] - marks["spawn"]
    return gaps


def store_transition_cost(tmp: Path, n: int = 2000) -> float:
    """Mean seconds of one compare-and-set transition (with its log entry) in the store."""
    store = Store(tmp / "cas.db")
    now = time.time()
    store.insert_job(
        {
            "job_id": "job_cas",
            "tenant_id": "t",
            "name": "cas",
            "status": S.JOB_STATUS_TRAINING,
            "request": b"",
            "priority": 5,
            "queue_name": "default",
            "created_at": now,
            "updated_at": now,
        },
        [],
        None,
    )
    states = [S.JOB_STATUS_TRAINING, S.JOB_STATUS_CHECKPOINTING]
    start = time.perf_counter()
    for i in range(n):
        ok = store.transition(
            "job_cas",
            [states[i % 2]],
            states[(i + 1) % 2],
            {"status_message": "x"},
            [PendingLog(2, "t", "coordinator")],
        )
        assert ok
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed / n


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        corpus = write_corpus(tmp / "corpus.jsonl")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scaimind.coordinator",
            "--data-dir",
            str(tmp / "data"),
            env={**os.environ, "SCAIMIND_API_SECRET": SECRET},
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = (await proc.stdout.readline()).decode()
        address = re.search(r"listening on (\S+)", line)
        assert address, line
        try:
            async with grpc.aio.insecure_channel(address.group(1)) as channel:
                stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
                await run(stub, corpus)
        finally:
            proc.terminate()
            await proc.wait()
        cas = store_transition_cost(tmp)
        print(f"store compare-and-set transition (+ log entry): {cas * 1e6:.0f} µs")


async def run(stub: coordinator_pb2_grpc.CoordinatorServiceStub, corpus: Path) -> None:
    durations: list[float] = []
    gaps: dict[str, list[float]] = {}
    for i in range(5):
        start = time.perf_counter()
        resp = await stub.SubmitJob(job_request(corpus, 50, f"bench-{i}"), metadata=MD)
        job = await wait_terminal(stub, resp.job_id)
        durations.append(time.perf_counter() - start)
        assert job.status == S.JOB_STATUS_COMPLETED, job.error
        for k, v in (await transition_gaps(stub, resp.job_id)).items():
            gaps.setdefault(k, []).append(v)
    print(
        f"SubmitJob → COMPLETED, 50-step built-in job: median {statistics.median(durations):.3f} s "
        f"(runs: {', '.join(f'{d:.3f}' for d in durations)})"
    )
    print("coordinator overhead per state transition (median of 5 jobs):")
    for k, v in gaps.items():
        print(f"  {k:45s} {statistics.median(v) * 1000:7.2f} ms")

    # Two long jobs keep both cores busy while GetJob is measured.
    busy = [
        (await stub.SubmitJob(job_request(corpus, 100_000, f"busy-{i}"), metadata=MD)).job_id
        for i in range(2)
    ]
    while True:
        jobs = [
            await stub.GetJob(coordinator_pb2.GetJobRequest(job_id=j), metadata=MD) for j in busy
        ]
        if all(j.status == S.JOB_STATUS_TRAINING and j.progress.current_step > 5 for j in jobs):
            break
        await asyncio.sleep(0.05)
    latencies: list[float] = []
    deadline = time.perf_counter() + 5.0
    while time.perf_counter() < deadline:
        for job_id in busy:
            t0 = time.perf_counter()
            await stub.GetJob(coordinator_pb2.GetJobRequest(job_id=job_id), metadata=MD)
            latencies.append(time.perf_counter() - t0)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    steps = [
        (
            await stub.GetJob(coordinator_pb2.GetJobRequest(job_id=j), metadata=MD)
        ).progress.current_step
        for j in busy
    ]
    print(
        f"GetJob while 2 jobs train: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms "
        f"({len(latencies)} calls; jobs at steps {steps})"
    )
    for job_id in busy:
        await stub.CancelJob(coordinator_pb2.CancelJobRequest(job_id=job_id), metadata=MD)


if __name__ == "__main__":
    asyncio.run(main())
