"""The local executor: every attempt is a child process of the coordinator, in the job sandbox.

What runs is exactly the workload's `ProcessSpec` (process.py starts it under bubblewrap when
the spec carries the sandbox, with the per-job limits); signals go to the job's process group.
The inventory is the inventory file, or this machine as one CPU node. Runs end with the
coordinator: a clean stop checkpoints them, and after a crash a restarted coordinator kills
what is left of them (found by pid and the kernel's start time, never a reused pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from scaimind.coordinator.executors.base import (
    ExecutorError,
    Inventory,
    LaunchSpec,
    RunExit,
    RunHandle,
    StartedCallback,
    os_message,
)
from scaimind.coordinator.executors.inventory import (
    ProcessSampler,
    load_inventory,
    process_start_marker,
)
from scaimind.coordinator.executors.process import (
    OutputSink,
    RunningProcess,
    follow_process,
    start_process,
)
from scaimind.v1 import common_pb2

KIND = "local"


@dataclass(eq=False, kw_only=True)
class LocalRun(RunHandle):
    """A child process of this coordinator."""

    running: RunningProcess
    escalation: asyncio.TimerHandle | None = None


class LocalExecutor:
    """Runs attempts as sandboxed child processes on this machine."""

    kind = KIND
    keeps_running = False
    refresh_seconds = 0.0

    def __init__(self, inventory_path: Path | None = None) -> None:
        self.inventory_path = inventory_path
        self.sampler = ProcessSampler()

    async def inventory(self) -> Inventory:
        """The inventory file's nodes, or this machine (raises InventoryError)."""
        return Inventory(load_inventory(self.inventory_path))

    def check_resources(self, rc: common_pb2.ResourceConfig, field: str) -> None:
        """Every request the inventory can hold can run here."""

    def planned_run_id(self, job_id: str, attempt: int) -> str:
        """Unknown until the process exists (its pid)."""
        return ""

    async def start(self, spec: LaunchSpec) -> RunHandle:
        """Start the process (sandboxed when the spec says so)."""
        try:
            running = await start_process(spec.process)
        except OSError as e:
            raise ExecutorError(f"cannot start the process: {os_message(e)}") from e
        pid = running.pid
        return LocalRun(
            run_id=f"{KIND}:{pid}:{process_start_marker(pid)}",
            job_id=spec.job_id,
            attempt=spec.attempt,
            label=f"process {pid}",
            node_id=spec.placement.node_ids[0] if spec.placement.node_ids else "",
            started_at=time.time(),
            process=spec.process,
            output_tail=running.output_tail,
            running=running,
        )

    async def follow(
        self,
        run: RunHandle,
        sink: OutputSink,
        on_started: StartedCallback,
        on_progress: StartedCallback | None = None,
    ) -> RunExit:
        """Pipes and the metrics file until the process exited and everything is read."""
        local = _local(run)
        assert local.process is not None
        on_started(local)
        return RunExit(await follow_process(local.running, local.process, sink))

    def stop(self, run: RunHandle, grace: float) -> None:
        """SIGTERM to the job's process group; SIGKILL after `grace` seconds."""
        local = _local(run)
        local.running.signal(signal.SIGTERM)
        if local.escalation is None:
            local.escalation = asyncio.get_running_loop().call_later(
                grace, local.running.signal, signal.SIGKILL
            )

    def kill(self, run: RunHandle) -> None:
        """SIGKILL to the job's process group."""
        _local(run).running.signal(signal.SIGKILL)

    def stats(self, run: RunHandle) -> dict[str, float]:
        """CPU percent and RSS of the job's own process, from /proc."""
        cpu, rss = self.sampler.sample(_local(run).running.main_pid())
        return {"cpu_percent": round(cpu, 2), "memory_used_bytes": float(rss)}

    def release(self, run: RunHandle) -> None:
        """Cancel the escalation timer and forget the process's samples."""
        local = _local(run)
        if local.escalation is not None:
            local.escalation.cancel()
        self.sampler.forget(local.running.main_pid())

    async def adopt(self, run_id: str, job_id: str, delivered: int) -> RunHandle | None:
        """Never: the pipes to a previous coordinator's process are gone."""
        return None

    def discard(self, run_id: str) -> None:
        """SIGKILL the process group of a previous coordinator's process, if it is still ours."""
        kind, _, rest = run_id.partition(":")
        pid_text, _, marker = rest.partition(":")
        if kind != KIND or not pid_text.isdigit() or not marker:
            return
        pid = int(pid_text)
        # Only a process whose kernel start time matches the recorded one is ours.
        if pid > 0 and process_start_marker(pid) == marker:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    async def close(self) -> None:
        """Nothing to release."""


def _local(run: RunHandle) -> LocalRun:
    assert isinstance(run, LocalRun), run
    return run
