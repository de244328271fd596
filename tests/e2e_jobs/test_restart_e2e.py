"""SIGKILL of a real coordinator process behind the gateway: nothing is lost, seen over HTTP."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_SECRET, auth, gateway_settings, wait_for

from .conftest import (
    FAR_FUTURE,
    PREFIX,
    ChildProcess,
    Stack,
    clean_env,
    inventory,
    job_files,
    open_gateway,
)


class CoordinatorProcess(ChildProcess):
    """`python -m scaimind.coordinator` as a child process on a fixed data dir."""

    def __init__(self, root: Path) -> None:
        self.data_dir = root / "coordinator"
        self.inventory = inventory(root / "inventory.json", 2)
        self.stderr = root / "coordinator.stderr"
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
                "--inventory",
                str(self.inventory),
                env=clean_env(
                    SCAIMIND_API_SECRET=API_SECRET,
                    SCAIMIND_LOCAL_DATA_ROOTS=str(self.data_dir.parent),
                ),
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout=30)).decode()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, (line, self.stderr.read_text())
        self.port = int(match.group(1))
        return self.port


@pytest.fixture
async def coordinator(tmp_path: Path) -> AsyncIterator[CoordinatorProcess]:
    """A coordinator process, killed at the end if still running."""
    p = CoordinatorProcess(tmp_path)
    try:
        yield p
    finally:
        await p.reap()


async def test_sigkill_of_the_coordinator_loses_no_job(
    tmp_path: Path, coordinator: CoordinatorProcess
) -> None:
    port = await coordinator.start()
    async with AsyncExitStack() as stack:
        # A short deadline: reads retry UNAVAILABLE until it, so the outage answers quickly.
        settings = gateway_settings(tmp_path / "gateway", port, grpc_timeout_s=2.0)
        http = await open_gateway(stack, settings)
        s = Stack(http, tmp_path, *job_files(tmp_path))
        gates = [s.gate(n) for n in ("paused", "retried", "stuck")]
        # Orphaned scripts must not outlive a failing test.
        stack.callback(lambda: [g.write_text("") for g in gates])
        await run_kill_restart(s, coordinator)
    assert await coordinator.terminate() == 0


async def run_kill_restart(s: Stack, coordinator: CoordinatorProcess) -> None:
    """Jobs in every interesting state, SIGKILL, restart, then check each over HTTP."""
    done = await s.submit(s.body("done", env={"TOTAL_STEPS": "3"}))
    await s.wait(done, "COMPLETED")
    paused = await s.submit(
        s.body("paused", env={"GATE": str(s.gate("paused")), "GATE_STEP": "3", "TOTAL_STEPS": "6"})
    )
    await s.wait(paused, "TRAINING", step=3)
    assert (await s.ok(paused, "pause"))["status"] == "PAUSED"
    retried = await s.submit(
        s.body(
            "retried",
            env={
                "GATE": str(s.gate("retried")),
                "GATE_STEP": "2",
                "TOTAL_STEPS": "5",
                "CKPT_EVERY": "1",
            },
            max_retries=1,
        )
    )
    stuck = await s.submit(
        s.body(
            "stuck",
            env={"GATE": str(s.gate("stuck")), "GATE_STEP": "1", "CKPT_EVERY": "1"},
        )
    )
    queued = await s.submit(s.body("queued", start_after=FAR_FUTURE))
    await s.wait(retried, "TRAINING", check=lambda j: len(j["checkpoints"]) == 2)
    await s.wait(stuck, "TRAINING", step=1)

    before: dict[str, Any] = {j: await s.job(j) for j in (done, paused, retried, stuck, queued)}
    logs_before = {j: await s.logs(j) for j in before}

    await coordinator.kill()
    r = await s.http.get(f"{PREFIX}/jobs/{done}", headers=auth())
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "BACKEND_UNAVAILABLE"
    assert "Retry-After" in r.headers
    await coordinator.start()

    async def reachable() -> bool:
        r = await s.http.get(f"{PREFIX}/jobs/{done}", headers=auth())
        return r.status_code == 200

    # The gateway's long-lived channel reconnects by itself to the restarted coordinator.
    await wait_for(reachable, within=30, interval=0.2)

    # Finished, paused and queued jobs are exactly as they were.
    for job_id in (done, paused, queued):
        after = await s.job(job_id)
        for field in ("status", "checkpoints", "progress", "created_at", "started_at"):
            assert after[field] == before[job_id][field], (job_id, field)
        assert await s.logs(job_id) == logs_before[job_id]
    assert (await s.job(queued))["queue_position"] == 1
    assert (await s.job(paused))["checkpoints"][-1]["step"] == 3

    # The jobs that were running come back PREEMPTED with their logs intact.
    for job_id in (retried, stuck):
        job = await s.job(job_id)
        assert job["status"] == "PREEMPTED", job
        assert "coordinator restarted" in job["status_message"]
        logs = await s.logs(job_id)
        assert logs[: len(logs_before[job_id])] == logs_before[job_id]
        seqs = [e["seq"] for e in logs]
        assert seqs == sorted(set(seqs))
    assert [c["step"] for c in (await s.job(retried))["checkpoints"]] == [1, 2]

    # max_retries=1: a child was created automatically; max_retries=0: none.
    jobs = await s.all_jobs()
    children = {j["parent_job_id"]: j for j in jobs if j["parent_job_id"]}
    assert set(children) == {retried}
    child = children[retried]
    assert child["retry_count"] == 1
    assert len(jobs) == 6

    # Everything continues from where it was.
    s.gate("retried").write_text("")
    s.gate("paused").write_text("")
    await s.wait(child["job_id"], "COMPLETED")
    assert "custom script starting at step 3 of 5" in await s.messages(child["job_id"])
    assert (await s.ok(paused, "resume"))["status"] == "QUEUED"
    await s.wait(paused, "COMPLETED")
    assert "custom script starting at step 4 of 6" in await s.messages(paused)
    assert [p for p, _ in await s.losses(paused)] == [1, 2, 3, 4, 5, 6]
    # The one without automatic retries can be retried by hand.
    s.gate("stuck").write_text("")
    manual = await s.ok(stuck, "retry")
    assert manual["parent_job_id"] == stuck
    await s.wait(manual["job_id"], "COMPLETED")
    assert (await s.job(queued))["status"] == "QUEUED"
