"""The job manager: one object over the parts of jobs/ (core state, commands, scheduler, runner,
checkpoints), started and stopped by server.py; job types come in as `Workload`s.

Every state change is a compare-and-set on the status column (`Store.transition`), so a late
"process finished" can never overwrite CANCELLED or PAUSED. All of this runs on one event loop;
the methods that touch the database never await in the middle of a read-modify-write.

Choices where the spec leaves room (documented for operators):
- CHECKPOINTING is the state while a stop that saves a checkpoint (pause, preemption, shutdown)
  waits for the process to write it; periodic checkpoints are recorded without a state change
  because they are already complete on disk when reported.
- `training_config.max_retries` drives automatic retries after PREEMPTED (scheduler preemption,
  forced drain, coordinator crash) and after FAILED with code EXIT_CODE: a child job with
  `parent_job_id`, `retry_count + 1`, resuming from the latest checkpoint.
- A clean coordinator shutdown SIGTERMs running jobs and puts them back to QUEUED (keeping
  their place in the queue) with their latest checkpoint as resume point; this consumes no
  retry. A crash is detected at the next start: those jobs become PREEMPTED ("coordinator
  restarted") and are retried when max_retries allows. Runs of an executor that outlive the
  coordinator (Ray jobs) are left running by a shutdown and adopted by the next start.
- Within a queue a job that does not fit blocks later jobs of the same gpu_type (no backfill),
  so a big high-priority job is never starved by a stream of small ones.
- FIFO among equal priorities is by the time a job (re-)entered the queue: submission, resume
  or automatic retry; a job re-queued by a coordinator shutdown keeps its original place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from scaimind.coordinator.executors.base import (
    ExecutorError,
)
from scaimind.coordinator.jobs.checkpoints import Checkpoints
from scaimind.coordinator.jobs.commands import Commands
from scaimind.coordinator.jobs.runner import Running
from scaimind.coordinator.jobs.runtime import (
    SHUTDOWN,
)
from scaimind.coordinator.jobs.scheduler import Scheduling

log = logging.getLogger(__name__)

_TICK_SECONDS = 0.5


class JobManager(Commands, Scheduling, Running, Checkpoints):
    """Owns jobs, slots and processes: the parts (commands, scheduler, runner, checkpoints)
    over one shared state (core.py)."""

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the previous run (adopting runs that outlived it) and start the
        scheduler."""
        await self._recover()
        self.schedule()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        # Events (submit, exit, resume, enable) schedule immediately; the tick only covers
        # time-based conditions: start_after, max_queue_wait_seconds and fresher estimates,
        # and an inventory that changes (a Ray cluster's nodes).
        while not self._closing:
            await asyncio.sleep(_TICK_SECONDS)
            try:
                await self._refresh_inventory()
                self.schedule()
            except Exception:
                log.exception("scheduler pass failed")

    async def _refresh_inventory(self) -> None:
        every = self.executor.refresh_seconds
        if every <= 0 or time.monotonic() - self._inventory_read < every:
            return
        self._inventory_read = time.monotonic()
        try:
            inventory = await self.executor.inventory()
        except ExecutorError as e:
            log.warning("cannot read the inventory: %s", e)
            return
        self.apply_inventory(inventory)

    def begin_shutdown(self) -> None:
        """Stop placing work; running jobs checkpoint and stop, or, when their runs outlive the
        coordinator (Ray), keep running and are adopted by the next start."""
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
        for rt in list(self._runtimes.values()):
            if self.executor.keeps_running and rt.run is not None:
                rt.detached = True
                if rt.task is not None:
                    rt.task.cancel()
            elif rt.stop_reason is None:
                self._request_stop(rt, SHUTDOWN, graceful=True)
        # Followers end with UNAVAILABLE instead of holding the server open for the grace period.
        self.notifier.close()

    async def wait_stopped(self, grace: float) -> None:
        """Wait for every job process to exit; SIGKILL what is left after `grace` seconds."""
        tasks = [rt.task for rt in self._runtimes.values() if rt.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                for rt in list(self._runtimes.values()):
                    if rt.run is not None and not rt.detached:
                        self.executor.kill(rt.run)
                await asyncio.wait(pending, timeout=10)
        if self._ticker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.executor.close()
