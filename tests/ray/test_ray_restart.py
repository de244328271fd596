"""A coordinator process on Ray is SIGKILLed (and later stopped cleanly) while its job runs:
Ray keeps the job, and the next coordinator adopts it instead of restarting it."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from ray.job_submission import JobStatus

from tests.conftest import API_SECRET, auth, gateway_settings, job_processes, wait_for
from tests.e2e_jobs.conftest import PREFIX, ChildProcess, Stack, clean_env, job_files, open_gateway
from tests.ray.cluster import LocalRayHead

from .conftest import ray_jobs, stop_ray_jobs, wait_ray_status


class RayCoordinator(ChildProcess):
    """`python -m scaimind.coordinator` with SCAIMIND_EXECUTOR=ray, on a fixed data dir."""

    def __init__(self, root: Path, head: LocalRayHead) -> None:
        self.data_dir = root / "coordinator"
        self.stderr = root / "coordinator.stderr"
        self.head = head
        self.port = 0

    async def start(self) -> int:
        """Start it (on the port of the previous run, if any); returns the port."""
        with self.stderr.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "scaimind.coordinator",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                env=clean_env(
                    SCAIMIND_API_SECRET=API_SECRET,
                    SCAIMIND_LOCAL_DATA_ROOTS=str(self.data_dir.parent),
                    SCAIMIND_EXECUTOR="ray",
                    SCAIMIND_RAY_ADDRESS=self.head.address,
                ),
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout=60)).decode()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, (line, self.stderr.read_text())
        self.port = int(match.group(1))
        return self.port


@pytest.fixture
async def coordinator(tmp_path: Path, ray_head: LocalRayHead) -> AsyncIterator[RayCoordinator]:
    """A coordinator process on the session's head, killed at the end if still running."""
    p = RayCoordinator(tmp_path, ray_head)
    try:
        yield p
    finally:
        await p.reap()
        stop_ray_jobs(ray_head)


async def test_restarted_coordinator_adopts_the_running_ray_job(
    tmp_path: Path, coordinator: RayCoordinator, ray_head: LocalRayHead
) -> None:
    port = await coordinator.start()
    async with AsyncExitStack() as stack:
        settings = gateway_settings(tmp_path / "gateway", port, grpc_timeout_s=2.0)
        http = await open_gateway(stack, settings)
        s = Stack(http, tmp_path, *job_files(tmp_path))
        stack.callback(lambda: [s.gate(n).write_text("") for n in ("one", "two")])
        env = {"GATE": str(s.gate("one")), "GATE_STEP": "2", "TOTAL_STEPS": "6", "CKPT_EVERY": "1"}
        job_id = await s.submit(s.body("survivor", env=env))
        await s.wait(job_id, "TRAINING", step=2, within=60)
        processes = job_processes(job_id)
        assert processes
        before = await s.logs(job_id)

        # SIGKILL: the coordinator is gone, its Ray job is not.
        await coordinator.kill()
        r = await s.http.get(f"{PREFIX}/jobs/{job_id}", headers=auth())
        assert r.status_code == 503, r.text
        assert ray_jobs(ray_head)[f"{job_id}-a1"].status == JobStatus.RUNNING
        assert job_processes(job_id) == processes

        await coordinator.start()

        async def reachable() -> bool:
            r = await s.http.get(f"{PREFIX}/jobs/{job_id}", headers=auth())
            return r.status_code == 200

        await wait_for(reachable, within=60, interval=0.2)
        # Adopted, not restarted: still TRAINING at its step, the same processes, one Ray job.
        job = await s.job(job_id)
        assert job["status"] == "TRAINING", job
        assert job["progress"]["current_step"] == 2
        assert job_processes(job_id) == processes
        assert "coordinator restarted; Ray job" in " ".join(await s.messages(job_id))

        # A clean stop leaves it running as well; the next start adopts it again.
        assert await coordinator.terminate() == 0
        assert ray_jobs(ray_head)[f"{job_id}-a1"].status == JobStatus.RUNNING
        await coordinator.start()
        await wait_for(reachable, within=60, interval=0.2)

        s.gate("one").write_text("")
        job = await s.wait(job_id, "COMPLETED", within=60)
        assert job["retry_count"] == 0
        # Every step once; the log is the one from before plus what came after, each line once.
        assert [step for step, _ in await s.losses(job_id)] == list(range(1, 7))
        after = await s.logs(job_id)
        assert after[: len(before)] == before
        seqs = [e["seq"] for e in after]
        assert seqs == sorted(set(seqs))
        lines = [e["message"] for e in after if e["source"] == "stdout"]
        assert lines.count("custom script starting at step 1 of 6") == 1
        assert lines.count("custom script finished") == 1
        # Checkpoints from both coordinators' followers (the newest 5 are kept).
        assert [c["step"] for c in job["checkpoints"]] == list(range(2, 7))
        assert [k for k in ray_jobs(ray_head) if k.startswith(job_id)] == [f"{job_id}-a1"]
        await wait_ray_status(ray_head, f"{job_id}-a1", JobStatus.SUCCEEDED)
    assert await coordinator.terminate() == 0
