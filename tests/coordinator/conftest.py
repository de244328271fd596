"""A real reference coordinator on port 0, a gRPC client for it, and a controllable CUSTOM job."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.server import RunningCoordinator, start_coordinator
from scaimind.v1 import (
    cluster_pb2_grpc,
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
)

SECRET = "coordinator-test-secret"
S = common_pb2.JobStatus

# A CUSTOM training script that honours the process contract. Controlled by the job's
# environment: TOTAL_STEPS, STEP_SECONDS, CKPT_EVERY, FAIL_AT (exit 3 there unless resuming),
# GATE (a file that must exist before training continues past step GATE_STEP), STOP_GATE (a
# file that must exist before the SIGTERM checkpoint is written), PHASE_GATE (announce
# EVALUATING after training and wait for that file before EXPORTING).
CUSTOM_SCRIPT = r"""
import json, os, signal, sys, time
from pathlib import Path

env = os.environ
here = lambda name: str(Path(__file__).parent / Path(name).name) if name else ""
metrics = open(env["SCAIMIND_METRICS_FILE"], "a")
ckpt_dir = Path(env["SCAIMIND_CHECKPOINT_DIR"])
total = int(env.get("TOTAL_STEPS", "20"))
pause = float(env.get("STEP_SECONDS", "0.02"))
every = int(env.get("CKPT_EVERY", "5"))
fail_at = int(env.get("FAIL_AT", "0"))
gate = here(env.get("GATE", ""))
gate_step = int(env.get("GATE_STEP", "0"))
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

def emit(obj):
    metrics.write(json.dumps(obj) + "\n")
    metrics.flush()

def checkpoint(step):
    d = ckpt_dir / f"step-{step:06d}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").write_text(json.dumps({"step": step}))
    emit({"type": "checkpoint", "step": step, "path": str(d), "size_bytes": 10,
          "metrics": {"loss": 1.0 / step}})

start = 0
resume = env.get("SCAIMIND_RESUME_CHECKPOINT", "")
if resume:
    start = json.loads((Path(resume) / "state.json").read_text())["step"]
Path("script.pid").write_text(str(os.getpid()))
print(f"custom script starting at step {start + 1} of {total}", flush=True)
print("a warning on stderr", file=sys.stderr, flush=True)
emit({"type": "log", "level": "DEBUG", "message": "debug detail"})
for step in range(start + 1, total + 1):
    while gate and step > gate_step and not os.path.exists(gate) and not stop:
        time.sleep(0.01)
    if stop:
        while env.get("STOP_GATE") and not os.path.exists(here(env["STOP_GATE"])):
            time.sleep(0.01)
        checkpoint(step - 1) if step > 1 else None
        print(f"stopping after step {step - 1}", flush=True)
        sys.exit(75)
    time.sleep(pause)
    if fail_at and step == fail_at and not resume:
        print("boom: something went wrong", file=sys.stderr, flush=True)
        sys.exit(3)
    emit({"step": step, "loss": 10.0 / step, "accuracy": step / total, "total_steps": total})
    if step % every == 0:
        checkpoint(step)
if env.get("PHASE_GATE"):
    emit({"type": "phase", "phase": "EVALUATING"})
    while not os.path.exists(here(env["PHASE_GATE"])):
        time.sleep(0.01)
    emit({"type": "phase", "phase": "EXPORTING"})
out = Path(json.loads(Path(env["SCAIMIND_SPEC_FILE"]).read_text())["output_path"])
out.mkdir(parents=True, exist_ok=True)
(out / "model.txt").write_text("done")
emit({"type": "final_model", "path": str(out)})
print("custom script finished", flush=True)
"""


def write_corpus(path: Path, records: int = 60, seed: int = 1) -> Path:
    """A prompt/completion jsonl file of simple sentences."""
    rng = random.Random(seed)
    words = ("the cat", "a dog", "my friend", "sees", "likes", "the red ball", "a green apple")
    with path.open("w") as f:
        for i in range(records):
            text = " ".join(rng.choice(words) for _ in range(4)) + "."
            f.write(json.dumps({"prompt": f"item {i}", "completion": text}) + "\n")
    return path


class Client:
    """Stubs plus per-call metadata of one tenant."""

    def __init__(
        self, channel: grpc.aio.Channel, tenant: str = "tenant-a", secret: str = SECRET
    ) -> None:
        self.jobs = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        self.cluster = cluster_pb2_grpc.ClusterServiceStub(channel)
        self.tenant = tenant
        self.secret = secret

    def md(self, **extra: str) -> list[tuple[str, str]]:
        """Call metadata."""
        out = [("x-api-secret", self.secret), ("x-tenant-id", self.tenant), ("x-user-id", "user-1")]
        out.extend((k.replace("_", "-"), v) for k, v in extra.items())
        return out

    async def submit(self, req: coordinator_pb2.SubmitJobRequest, **md: str) -> str:
        """Submit and return the job id."""
        resp = await self.jobs.SubmitJob(req, metadata=self.md(**md), timeout=10)
        return resp.job_id

    async def get(self, job_id: str) -> common_pb2.Job:
        """GetJob."""
        return await self.jobs.GetJob(
            coordinator_pb2.GetJobRequest(job_id=job_id), metadata=self.md(), timeout=10
        )

    async def wait(
        self,
        job_id: str,
        *statuses: int,
        within: float = 30.0,
        check: Callable[[common_pb2.Job], bool] | None = None,
    ) -> common_pb2.Job:
        """Poll GetJob until the job is in one of the statuses (and `check` holds)."""
        deadline = time.monotonic() + within
        job = await self.get(job_id)
        while time.monotonic() < deadline:
            job = await self.get(job_id)
            if (not statuses or job.status in statuses) and (check is None or check(job)):
                return job
            await asyncio.sleep(0.05)
        names = [S.Name(s) for s in statuses]  # type: ignore[arg-type]
        raise AssertionError(
            f"job {job_id} not in {names} within {within}s: "
            f"{S.Name(job.status)} {job.status_message!r} {job.error}"
        )

    async def logs(self, job_id: str, **kwargs: Any) -> list[coordinator_pb2.StreamJobLogsResponse]:
        """Collect a whole StreamJobLogs stream."""
        req = coordinator_pb2.StreamJobLogsRequest(job_id=job_id, **kwargs)
        return [m async for m in self.jobs.StreamJobLogs(req, metadata=self.md(), timeout=60)]

    async def entries(self, job_id: str, **kwargs: Any) -> list[coordinator_pb2.LogEntry]:
        """The log entries of a non-following stream (without its end message)."""
        return [m.entry for m in await self.logs(job_id, **kwargs) if m.HasField("entry")]


class Env:
    """Everything a test needs: the coordinator, a client, files."""

    def __init__(self, tmp_path: Path) -> None:
        # The CUSTOM script's folder is visible to the sandboxed job (which runs as another
        # user): pytest makes it 0700.
        tmp_path.chmod(0o755)
        self.tmp = tmp_path
        self.data_dir = tmp_path / "data"
        self.corpus = write_corpus(tmp_path / "corpus.jsonl")
        self.script = tmp_path / "train.py"
        self.script.write_text(CUSTOM_SCRIPT)
        self.running: RunningCoordinator | None = None
        self.channel: grpc.aio.Channel | None = None
        self.client: Client

    def host_path(self, uri: str) -> Path:
        """Where a scaidrive://<tenant>/<path> of this coordinator lives on the host."""
        tenant, _, rel = uri.removeprefix("scaidrive://").partition("/")
        return self.data_dir / "storage" / tenant / rel

    async def start(self, nodes: list[dict[str, Any]] | None = None, **config: Any) -> Client:
        """(Re)start the coordinator on the data dir; nodes = an inventory file."""
        inventory = None
        if nodes is not None:
            inventory = self.tmp / "inventory.json"
            inventory.write_text(json.dumps(nodes))
        cfg = CoordinatorConfig(
            data_dir=self.data_dir,
            api_secret=SECRET,
            local_data_roots=(str(self.tmp),),
            inventory_path=inventory,
            stop_grace_seconds=10,
            **config,
        )
        self.running = await start_coordinator(cfg)
        self.channel = grpc.aio.insecure_channel(self.running.address)
        self.client = Client(self.channel)
        return self.client

    async def stop(self) -> None:
        """Stop the coordinator (cleanly) and close the channel."""
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        if self.running is not None:
            await self.running.stop()
            self.running = None

    def tenant(self, tenant: str) -> Client:
        """A client of another tenant on the same channel."""
        assert self.channel is not None
        return Client(self.channel, tenant)

    def custom(
        self,
        name: str = "custom",
        env: Mapping[str, str] | None = None,
        priority: int | None = None,
        **kwargs: Any,
    ) -> coordinator_pb2.SubmitJobRequest:
        """A CUSTOM job running the controllable script."""
        req = self.builtin(name, **kwargs)
        req.training_config.framework.type = common_pb2.FRAMEWORK_TYPE_CUSTOM
        req.training_config.framework.custom_script_path = str(self.script)
        req.training_config.environment.update(env or {})
        if priority is not None:
            req.training_config.priority = priority
        return req

    def builtin(
        self,
        name: str = "job",
        hyperparameters: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        gpu_count: int = 1,
        gpu_type: str = "",
        preemptible: bool = False,
        max_retries: int = 0,
        start_after: float = 0.0,
        queue_name: str = "",
    ) -> coordinator_pb2.SubmitJobRequest:
        """A built-in-trainer job on the test corpus."""
        req = coordinator_pb2.SubmitJobRequest(name=name, labels=dict(labels or {}))
        tc = req.training_config
        tc.training_type = common_pb2.TRAINING_TYPE_SFT
        tc.base_model.model_id = "meta-llama/Llama-3-8B"
        tc.framework.type = common_pb2.FRAMEWORK_TYPE_HF_TRAINER
        tc.hyperparameters.update(hyperparameters or {"max_steps": "20"})
        tc.max_retries = max_retries
        req.data_config.sources.add(path=str(self.corpus))
        req.resource_config.gpu_count = gpu_count
        req.resource_config.gpu_type = gpu_type
        req.scheduling_config.preemptible = preemptible
        req.scheduling_config.queue_name = queue_name
        if start_after:
            req.scheduling_config.start_after.FromNanoseconds(int(start_after * 1e9))
        return req


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """An Env whose coordinator is stopped at the end of the test."""
    e = Env(tmp_path)
    try:
        yield e
    finally:
        await e.stop()


@pytest.fixture
async def client(env: Env) -> Client:
    """A started coordinator on the default (CPU) inventory."""
    return await env.start()


ONE_SLOT = [
    {
        "node_id": "node-a",
        "hostname": "a.local",
        "gpu_type": "A100-80GB",
        "gpu_count": 1,
        "labels": {"zone": "a"},
    }
]
TWO_NODES = [
    {
        "node_id": "node-a",
        "hostname": "a.local",
        "gpu_type": "A100-80GB",
        "gpu_count": 1,
        "labels": {"zone": "a"},
    },
    {
        "node_id": "node-b",
        "hostname": "b.local",
        "gpu_type": "A100-80GB",
        "gpu_count": 1,
        "labels": {"zone": "b"},
    },
]
