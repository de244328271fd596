"""Events a running process reports: checkpoints (recorded, measured, pruned) and phases."""

from __future__ import annotations

import asyncio
import functools
import shutil
import time
from pathlib import Path
from typing import Any

from scaimind.coordinator.jobs.core import JobCore
from scaimind.coordinator.jobs.runtime import (
    JobRuntime,
    L,
    dir_size,
    to_int,
    to_numbers,
)
from scaimind.coordinator.messages import (
    S,
)
from scaimind.coordinator.persistence.records import CheckpointRecord
from scaimind.v1 import coordinator_pb2


class Checkpoints(JobCore):
    """Checkpoint and phase events of running jobs."""

    # ---- events from the process -------------------------------------------------------------

    def record_checkpoint(
        self, rt: JobRuntime, req: coordinator_pb2.SubmitJobRequest, event: dict[str, Any]
    ) -> None:
        """A complete checkpoint reported by the process (a folder in its checkpoint dir)."""
        step = to_int(event.get("step"))
        reported = str(event.get("path") or "")
        inside = rt.spec.to_host(reported) if rt.spec is not None and reported else None
        host = self.files.checkpoint_host(rt.tenant_id, rt.job_id, inside)
        if host is None:
            # Anything else (say "/") would make the coordinator measure, prune or hand on a
            # directory that is not the job's.
            self.log(
                rt.job_id,
                "checkpoint event ignored: its path must be a folder inside "
                "SCAIMIND_CHECKPOINT_DIR",
                L.LOG_LEVEL_WARNING,
            )
            return
        record = CheckpointRecord(
            checkpoint_id=f"{rt.job_id}-step-{step:06d}",
            job_id=rt.job_id,
            step=step,
            path=str(host),
            size_bytes=to_int(event.get("size_bytes")),
            metrics=to_numbers(event.get("metrics") or {}),
            created_at=time.time(),
        )
        dropped = self.store.add_checkpoint(record, self.keep_last(req))
        loop = asyncio.get_running_loop()
        if not record.size_bytes:
            # Walking a folder is file I/O: off the event loop, inside the job's folder only.
            walk = loop.run_in_executor(None, dir_size, host)
            walk.add_done_callback(functools.partial(self._measured, record.checkpoint_id))
        for old in dropped:
            # Only folders inside this job's checkpoint dir are removed; a path elsewhere is
            # not the job's.
            path = self.files.checkpoint_host(rt.tenant_id, rt.job_id, Path(old))
            if path is not None:
                loop.run_in_executor(None, functools.partial(shutil.rmtree, path, True))
        self.log(
            rt.job_id,
            f"checkpoint {record.checkpoint_id} saved at step {step} "
            f"({self.shown(rt.tenant_id, str(host))})",
        )

    def _measured(self, checkpoint_id: str, walk: asyncio.Future[int]) -> None:
        if not walk.cancelled() and walk.exception() is None:
            self.store.set_checkpoint_size(checkpoint_id, walk.result())

    def phase(self, rt: JobRuntime, phase: str) -> None:
        """EVALUATING / EXPORTING announced by the process."""
        target = {"EVALUATING": S.JOB_STATUS_EVALUATING, "EXPORTING": S.JOB_STATUS_EXPORTING}.get(
            phase
        )
        if target is None:
            self.log(rt.job_id, f"unknown phase {phase!r} ignored", L.LOG_LEVEL_WARNING)
            return
        if rt.stop_reason is None:
            self._transition(
                rt.job_id,
                [S.JOB_STATUS_TRAINING, S.JOB_STATUS_EVALUATING, S.JOB_STATUS_EXPORTING],
                target,
                {},
                "scoring the validation split"
                if phase == "EVALUATING"
                else "writing the final model",
            )
