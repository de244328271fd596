"""Accuracy of the reference coordinator's queue wait estimates (GetQueueStatus).

Method: a coordinator with a 1-slot inventory; `--warmup` identical built-in-trainer jobs run
one after the other so the "typical runtime" (median of recently completed jobs) is known; then
`--jobs` identical jobs are submitted at once. Every `--sample` seconds GetQueueStatus is read
and, for each job still queued, `predicted start = sample time + estimated_start_seconds` is
recorded; when the job is placed, its real start (`started_at` of GetJob) gives the error
`actual - predicted` of every sample. Printed: per queue position at the first sample (right
after the submission), the estimate, the real wait and the error; then the mean absolute error
over all samples, grouped by how far the start was (so convergence is visible).

Usage: .venv/bin/python bench/queue_estimate.py [--steps 150] [--warmup 2] [--jobs 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.server import start_coordinator
from scaimind.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
)

SECRET = "bench-secret"
MD = (("x-api-secret", SECRET), ("x-tenant-id", "bench"))
S = common_pb2.JobStatus


def job_request(corpus: Path, steps: int, name: str) -> coordinator_pb2.SubmitJobRequest:
    """A built-in trainer job of `steps` steps on one CPU slot."""
    req = coordinator_pb2.SubmitJobRequest(name=name)
    tc = req.training_config
    tc.training_type = common_pb2.TRAINING_TYPE_SFT
    tc.base_model.model_id = "bench-model"
    tc.hyperparameters.update({"max_steps": str(steps)})
    req.data_config.sources.add(path=str(corpus))
    req.resource_config.gpu_count = 1
    return req


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--sample", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inventory = root / "inventory.json"
        inventory.write_text(
            json.dumps([{"node_id": "n1", "hostname": "n1", "gpu_type": "CPU", "gpu_count": 1}])
        )
        corpus = root / "corpus.jsonl"
        corpus.write_text(
            "".join(
                json.dumps(
                    {"prompt": f"question {i} about the weather", "completion": f"it is {i}"}
                )
                + "\n"
                for i in range(200)
            )
        )
        running = await start_coordinator(
            CoordinatorConfig(data_dir=root / "c", api_secret=SECRET, inventory_path=inventory)
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        jobs = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        cluster = cluster_pb2_grpc.ClusterServiceStub(channel)
        try:
            durations = []
            for i in range(args.warmup):
                r = await jobs.SubmitJob(job_request(corpus, args.steps, f"w{i}"), metadata=MD)
                while True:
                    job = await jobs.GetJob(
                        coordinator_pb2.GetJobRequest(job_id=r.job_id), metadata=MD
                    )
                    if job.status in (S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED):
                        break
                    await asyncio.sleep(0.05)
                assert job.status == S.JOB_STATUS_COMPLETED, job.status_message
                durations.append(
                    job.completed_at.ToMilliseconds() / 1e3 - job.started_at.ToMilliseconds() / 1e3
                )
            print(f"warm-up runtimes (s): {', '.join(f'{d:.2f}' for d in durations)}")

            ids = []
            for i in range(args.jobs):
                r = await jobs.SubmitJob(job_request(corpus, args.steps, f"j{i}"), metadata=MD)
                ids.append(r.job_id)
            submitted = time.time()
            samples: dict[str, list[tuple[float, float]]] = {j: [] for j in ids}
            started: dict[str, float] = {}
            while len(started) < len(ids):
                now = time.time()
                q = await cluster.GetQueueStatus(
                    cluster_pb2.GetQueueStatusRequest(queue_name="default"), metadata=MD
                )
                for entry in q.queues[0].jobs:
                    samples[entry.job_id].append((now, now + entry.estimated_start_seconds))
                for j in ids:
                    if j in started:
                        continue
                    job = await jobs.GetJob(coordinator_pb2.GetJobRequest(job_id=j), metadata=MD)
                    if job.HasField("started_at") and job.started_at.seconds:
                        started[j] = job.started_at.ToMilliseconds() / 1e3
                await asyncio.sleep(args.sample)

            print("\nfirst sample after submission (position: estimate / actual wait / error):")
            for pos, j in enumerate(ids):
                if not samples[j]:
                    print(f"  job {pos}: started at once ({started[j] - submitted:.2f}s)")
                    continue
                t, predicted = samples[j][0]
                print(
                    f"  job {pos}: estimated {predicted - t:6.2f}s  actual {started[j] - t:6.2f}s  "
                    f"error {started[j] - predicted:+6.2f}s"
                )
            buckets: dict[str, list[float]] = {}
            for j in ids:
                for t, predicted in samples[j]:
                    wait = started[j] - t
                    key = "<5s" if wait < 5 else "5-10s" if wait < 10 else ">=10s"
                    buckets.setdefault(key, []).append(abs(started[j] - predicted))
            print("\nmean absolute error by remaining wait:")
            for key in ("<5s", "5-10s", ">=10s"):
                errs = buckets.get(key, [])
                if errs:
                    print(
                        f"  {key:>6}: {statistics.mean(errs):5.2f}s over {len(errs)} samples "
                        f"(max {max(errs):.2f}s)"
                    )
        finally:
            await channel.close(None)
            await running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
