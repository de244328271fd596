"""Restarts lose nothing: SIGKILL of a real coordinator process, and a clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from scaimind.v1 import coordinator_pb2
from tests.conftest import job_processes, process_ended, wait_for

from .conftest import SECRET, Client, Env, S


class CoordinatorProcess:
    """`python -m scaimind.coordinator` as a child process."""

    def __init__(self, data_dir: Path, inventory: Path) -> None:
        self.data_dir = data_dir
        self.inventory = inventory
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: grpc.aio.Channel | None = None

    async def start(self) -> Client:
        """Start it and connect once it prints its address."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scaimind.coordinator",
            "--data-dir",
            str(self.data_dir),
            "--inventory",
            str(self.inventory),
            env={
                **os.environ,
                "SCAIMIND_API_SECRET": SECRET,
                "SCAIMIND_LOCAL_DATA_ROOTS": str(self.inventory.parent),
            },
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=30)
        match = re.search(r"listening on (\S+)", line.decode())
        assert match, line
        self.channel = grpc.aio.insecure_channel(match.group(1))
        return Client(self.channel)

    async def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()
        await self.close_channel()

    async def terminate(self) -> int:
        """SIGTERM: clean shutdown; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout=30)
        await self.close_channel()
        return code

    async def close_channel(self) -> None:
        """Close the client channel."""
        if self.channel is not None:
            await self.channel.close()
            self.channel = None


@pytest.fixture
async def proc(env: Env) -> AsyncIterator[CoordinatorProcess]:
    """A coordinator process on env's data dir with a 2-slot simulated node."""
    inventory = env.tmp / "inventory.json"
    inventory.write_text(
        json.dumps([{"node_id": "node-a", "gpu_type": "A100-80GB", "gpu_count": 2}])
    )
    p = CoordinatorProcess(env.data_dir, inventory)
    try:
        yield p
    finally:
        if p.proc is not None and p.proc.returncode is None:
            p.proc.kill()
            await p.proc.wait()
        await p.close_channel()


async def test_sigkill_restart_recovers_every_job(env: Env, proc: CoordinatorProcess) -> None:
    client = await proc.start()
    quick = {"TOTAL_STEPS": "3", "STEP_SECONDS": "0"}
    done_id = await client.submit(env.custom("done", env=quick))
    await client.wait(done_id, S.JOB_STATUS_COMPLETED)
    done_logs = await client.entries(done_id, tail=10000)

    paused_id = await client.submit(
        env.custom(
            "paused",
            env={
                "GATE": str(env.tmp / "p-go"),
                "GATE_STEP": "3",
                "TOTAL_STEPS": "6",
                "STEP_SECONDS": "0",
            },
        )
    )
    await client.wait(paused_id, check=lambda j: j.progress.current_step == 3)
    await client.jobs.PauseJob(
        coordinator_pb2.PauseJobRequest(job_id=paused_id), metadata=client.md()
    )

    running_env = {
        "GATE": str(env.tmp / "t-go"),
        "GATE_STEP": "2",
        "TOTAL_STEPS": "5",
        "STEP_SECONDS": "0",
        "CKPT_EVERY": "1",
    }
    running_id = await client.submit(env.custom("running", env=running_env, max_retries=1))
    await client.wait(running_id, check=lambda j: [c.step for c in j.checkpoints] == [1, 2])
    queued_id = await client.submit(env.custom("queued", start_after=time.time() + 3600))
    pids = job_processes(running_id)
    assert pids
    before = await client.entries(running_id, tail=10000)

    await proc.kill()
    # The CUSTOM script does not watch its parent; its sandbox ends with the coordinator.
    await wait_for(lambda: all(process_ended(pid) for pid in pids))
    client = await proc.start()

    running = await client.get(running_id)
    assert running.status == S.JOB_STATUS_PREEMPTED
    assert "coordinator restarted" in running.status_message
    after = await client.entries(running_id, tail=10000)
    assert [e.seq for e in after[: len(before)]] == [e.seq for e in before]
    assert [e.seq for e in after] == sorted({e.seq for e in after})
    assert (await client.get(paused_id)).status == S.JOB_STATUS_PAUSED
    queued = await client.get(queued_id)
    assert queued.status == S.JOB_STATUS_QUEUED
    assert queued.queue_position == 1
    assert await client.entries(done_id, tail=10000) == done_logs
    assert (await client.get(done_id)).status == S.JOB_STATUS_COMPLETED

    listed = await client.jobs.ListJobs(coordinator_pb2.ListJobsRequest(), metadata=client.md())
    child = next(j for j in listed.jobs if j.parent_job_id == running_id)
    assert child.retry_count == 1
    (env.tmp / "t-go").write_text("")
    (env.tmp / "p-go").write_text("")
    await client.wait(child.job_id, S.JOB_STATUS_COMPLETED)
    assert "custom script starting at step 3 of 5" in [
        e.message for e in await client.entries(child.job_id, tail=1000)
    ]
    await client.jobs.ResumeJob(
        coordinator_pb2.ResumeJobRequest(job_id=paused_id), metadata=client.md()
    )
    await client.wait(paused_id, S.JOB_STATUS_COMPLETED)
    assert "custom script starting at step 4 of 6" in [
        e.message for e in await client.entries(paused_id, tail=1000)
    ]
    assert await proc.terminate() == 0


async def test_clean_stop_requeues_and_continues_from_checkpoint(env: Env) -> None:
    client = await env.start()
    gate = env.tmp / "go"
    job_id = await client.submit(
        env.custom(
            "survivor",
            env={"GATE": str(gate), "GATE_STEP": "4", "TOTAL_STEPS": "8", "STEP_SECONDS": "0"},
        )
    )
    await client.wait(job_id, check=lambda j: j.progress.current_step == 4)
    await env.stop()
    gate.write_text("")
    client = await env.start()
    job = await client.wait(job_id, S.JOB_STATUS_COMPLETED)
    assert job.retry_count == 0
    assert [c.step for c in job.checkpoints][:1] == [4]
    log = [e.message for e in await client.entries(job_id, tail=10000)]
    assert any("→ QUEUED: coordinator stopped; will resume" in t for t in log)
    assert "custom script starting at step 5 of 8" in log
    listed = await client.jobs.ListJobs(coordinator_pb2.ListJobsRequest(), metadata=client.md())
    assert listed.total_count == 1


async def test_second_coordinator_on_same_data_dir_is_refused(env: Env, client: Client) -> None:
    from scaimind.coordinator.config import CoordinatorConfig
    from scaimind.coordinator.server import CoordinatorStartError, start_coordinator

    with pytest.raises(CoordinatorStartError, match="another coordinator"):
        await start_coordinator(CoordinatorConfig(data_dir=env.data_dir, api_secret=SECRET))
