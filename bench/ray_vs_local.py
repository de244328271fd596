"""Job start latency and throughput: the Ray executor against the local one, side by side.

Each side is a real reference coordinator process (`python -m scaimind.coordinator`) driven over
gRPC: `local` with an inventory of one node of --slots CPU slots, `ray` with
SCAIMIND_EXECUTOR=ray on a Ray cluster of --slots CPUs (a private head on loopback, started and
stopped by its own pids, unless --address names one). Jobs are the built-in trainer with
--steps steps, sandboxed as usual. Figures come from the coordinator's own timestamps:

- start latency: SubmitJob → the coordinator knows the process runs (PREPARING → TRAINING);
- first output: SubmitJob → the coordinator stored the job's first line of output;
- end lag: the process's last output → COMPLETED recorded;
- job time: SubmitJob → COMPLETED;
- throughput: --jobs jobs submitted at once, first submit → last COMPLETED.

Usage: .venv/bin/python bench/ray_vs_local.py [--jobs 20] [--steps 20] [--slots 2]
       [--address http://127.0.0.1:8265]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from scaimind.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.ray.cluster import LocalRayHead

SECRET = "bench-secret"
MD = [("x-api-secret", SECRET), ("x-tenant-id", "bench"), ("x-user-id", "bench")]
S = common_pb2.JobStatus
TERMINAL = {S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED, S.JOB_STATUS_CANCELLED}
Stub = coordinator_pb2_grpc.CoordinatorServiceStub


def write_corpus(path: Path, records: int = 200) -> Path:
    """A prompt/completion jsonl corpus."""
    words = ["the cat", "a dog", "my friend", "sees", "likes", "the red ball", "an apple"]
    with path.open("w") as f:
        for i in range(records):
            text = " ".join(words[(i * 7 + k) % len(words)] for k in range(6)) + "."
            f.write(json.dumps({"prompt": f"item {i}", "completion": text}) + "\n")
    return path


def prepare(root: Path, slots: int) -> tuple[Path, Path]:
    """The corpus (readable by the sandbox's user) and the local side's inventory file."""
    root.chmod(0o755)
    inventory = root / "inventory.json"
    inventory.write_text(json.dumps([{"node_id": "local", "gpu_type": "CPU", "gpu_count": slots}]))
    for side in ("local", "ray"):
        (root / side).mkdir()
    return write_corpus(root / "corpus.jsonl"), inventory


def job_request(corpus: Path, steps: int, name: str) -> coordinator_pb2.SubmitJobRequest:
    """A built-in-trainer job on one CPU slot."""
    req = coordinator_pb2.SubmitJobRequest(name=name)
    req.training_config.training_type = common_pb2.TRAINING_TYPE_SFT
    req.training_config.base_model.model_id = "bench/model"
    req.training_config.hyperparameters["max_steps"] = str(steps)
    req.data_config.sources.add(path=str(corpus))
    req.resource_config.gpu_count = 1
    req.resource_config.gpu_type = "CPU"
    return req


@asynccontextmanager
async def coordinator(root: Path, env: dict[str, str], *args: str) -> AsyncIterator[Stub]:
    """A coordinator process on `root`, and a stub for it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scaimind.coordinator",
        "--data-dir",
        str(root / "coordinator"),
        *args,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SCAIMIND_")},
            "SCAIMIND_API_SECRET": SECRET,
            # The corpus sits beside both coordinators' folders.
            "SCAIMIND_LOCAL_DATA_ROOTS": str(root.parent),
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).decode()
    address = re.search(r"listening on (\S+)", line)
    assert address, line
    try:
        async with grpc.aio.insecure_channel(address.group(1)) as channel:
            yield Stub(channel)
    finally:
        proc.terminate()
        await proc.wait()


async def wait_terminal(stub: Stub, job_id: str) -> common_pb2.Job:
    """Poll GetJob until the job is terminal."""
    while True:
        job = await stub.GetJob(coordinator_pb2.GetJobRequest(job_id=job_id), metadata=MD)
        if job.status in TERMINAL:
            return job
        await asyncio.sleep(0.05)


async def timings(stub: Stub, job_id: str) -> dict[str, float]:
    """Epoch seconds of a finished job's milestones, from the coordinator's log."""
    job = await wait_terminal(stub, job_id)
    assert job.status == S.JOB_STATUS_COMPLETED, (job_id, job.error)
    req = coordinator_pb2.StreamJobLogsRequest(job_id=job_id, tail=10_000)
    entries = [m.entry async for m in stub.StreamJobLogs(req, metadata=MD) if m.HasField("entry")]
    marks = {"submitted": job.created_at.ToNanoseconds() / 1e9}
    marks["completed"] = job.completed_at.ToNanoseconds() / 1e9
    for e in entries:
        t = e.timestamp.ToNanoseconds() / 1e9
        if e.source == "coordinator":
            if "PREPARING → TRAINING" in e.message:
                marks.setdefault("running", t)
        else:
            marks.setdefault("first_output", t)
            marks["last_output"] = t
    return marks


def summary(values: list[float]) -> str:
    """Median, p90 and max."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):5.2f} / {p90:5.2f} / {ordered[-1]:5.2f} s"


async def measure(stub: Stub, corpus: Path, jobs: int, steps: int) -> dict[str, list[float]]:
    """One job at a time (5), then `jobs` at once."""
    out: dict[str, list[float]] = {}
    # The first job warms up (Ray starts its workers, the page cache fills).
    warm = await stub.SubmitJob(job_request(corpus, steps, "warm"), metadata=MD)
    await timings(stub, warm.job_id)
    for i in range(5):
        resp = await stub.SubmitJob(job_request(corpus, steps, f"alone-{i}"), metadata=MD)
        m = await timings(stub, resp.job_id)
        out.setdefault("alone start", []).append(m["running"] - m["submitted"])
        out.setdefault("alone output", []).append(m["first_output"] - m["submitted"])
        out.setdefault("alone total", []).append(m["completed"] - m["submitted"])
        out.setdefault("end lag", []).append(m["completed"] - m["last_output"])
    ids = [
        (await stub.SubmitJob(job_request(corpus, steps, f"many-{i}"), metadata=MD)).job_id
        for i in range(jobs)
    ]
    marks = [await timings(stub, job_id) for job_id in ids]
    out["many start"] = [m["running"] - m["submitted"] for m in marks]
    out["many total"] = [m["completed"] - m["submitted"] for m in marks]
    wall = max(m["completed"] for m in marks) - min(m["submitted"] for m in marks)
    out["wall"] = [wall]
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--address", default="", help="an existing Ray job server")
    args = ap.parse_args()
    head = None
    if not args.address:
        head = LocalRayHead(num_cpus=args.slots)
        head.start()
        print(f"private Ray head ready in {head.start_seconds:.1f} s at {head.address}")
    address = args.address or (head.address if head is not None else "")
    try:
        with tempfile.TemporaryDirectory(prefix="raybench-") as tmp:
            root = Path(tmp)
            corpus, inventory = prepare(root, args.slots)
            async with coordinator(root / "local", {}, "--inventory", str(inventory)) as stub:
                local = await measure(stub, corpus, args.jobs, args.steps)
            ray_env = {"SCAIMIND_EXECUTOR": "ray", "SCAIMIND_RAY_ADDRESS": address}
            async with coordinator(root / "ray", ray_env) as stub:
                ray = await measure(stub, corpus, args.jobs, args.steps)
    finally:
        if head is not None:
            head.stop()
    print(
        f"\nbuilt-in trainer, {args.steps} steps, {args.slots} slots "
        f"({os.cpu_count()} cores); median / p90 / max\n"
    )
    print(f"{'':38s}{'local':>26s}{'ray':>26s}")
    rows = [
        ("start latency, one job", "alone start"),
        ("first output, one job", "alone output"),
        ("end lag (last output → COMPLETED)", "end lag"),
        ("job time, one job", "alone total"),
        (f"start latency, {args.jobs} jobs at once", "many start"),
        (f"job time, {args.jobs} jobs at once", "many total"),
    ]
    for label, key in rows:
        print(f"{label:38s}{summary(local[key]):>26s}{summary(ray[key]):>26s}")
    a, b = local["wall"][0], ray["wall"][0]
    print(f"{f'wall time, {args.jobs} jobs':38s}{a:>24.1f} s{b:>24.1f} s")
    a, b = 60 * args.jobs / a, 60 * args.jobs / b
    print(f"{'throughput':38s}{a:>17.1f} jobs/min{b:>17.1f} jobs/min")


if __name__ == "__main__":
    asyncio.run(main())
