"""`scaimind jobs wait`: poll a job until it ends, drawing its progress, following retries."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Final

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from scaimind.cli.api import ApiClient
from scaimind.cli.base import note
from scaimind.cli.render import StepRate, console, human_duration, progress_text

# A followed job id never changes again once in one of these (a retry is a new job).
FINAL: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED", "PREEMPTED"})
# Polls spent looking for the automatic retry of a job that ended FAILED or PREEMPTED.
RETRY_LOOKUPS: Final = 5


class Display:
    """A progress bar on a terminal; otherwise a line per status change and 10% of progress."""

    def __init__(self) -> None:
        self._out = console(stderr=True)
        self._rate = StepRate()
        self._last: tuple[str, str, int] | None = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self._out.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[steps]}"),
                TextColumn("ETA {task.fields[eta]}"),
                TimeElapsedColumn(),
                console=self._out,
            )
            self._progress.start()

    def update(self, job: dict[str, Any]) -> None:
        """Show the job's latest state."""
        progress = job.get("progress") or {}
        step, total = int(progress.get("current_step") or 0), int(progress.get("total_steps") or 0)
        self._rate.observe(step)
        eta = self._rate.eta(total)
        status, job_id = str(job.get("status")), str(job.get("job_id"))
        if self._progress is not None:
            description = f"{job_id} {status}"
            steps = f"{step}/{total}" if total else f"{step}"
            running = status not in FINAL and step < total
            left = human_duration(eta) if eta is not None and running else "-"
            if self._task is None:
                self._task = self._progress.add_task(
                    description, total=total or None, steps=steps, eta=left
                )
            self._progress.update(
                self._task,
                description=description,
                total=total or None,
                completed=step,
                steps=steps,
                eta=left,
            )
            return
        decile = int(10 * step / total) if total else 0
        if self._last != (job_id, status, decile):
            self._last = (job_id, status, decile)
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            running = status not in FINAL
            note(f"{stamp} {job_id} {status} {progress_text(step, total, eta, running=running)}")

    def switch(self) -> None:
        """A new job is followed: start a fresh bar and rate."""
        self._rate = StepRate()
        if self._progress is not None and self._task is not None:
            self._progress.stop_task(self._task)
            self._task = None

    def close(self) -> None:
        """Leave the last bar on screen."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def retry_of(api: ApiClient, job: dict[str, Any], interval: float) -> str | None:
    """The id of the automatic retry the coordinator started for `job`, if it did."""
    retries = int((job.get("training_config") or {}).get("max_retries") or 0)
    if int(job.get("retry_count") or 0) >= retries:
        return None
    for attempt in range(RETRY_LOOKUPS):
        page = api.get("/jobs", {"page_size": 100})
        for candidate in page.get("jobs") or []:
            if candidate.get("parent_job_id") == job["job_id"]:
                return str(candidate["job_id"])
        if attempt + 1 < RETRY_LOOKUPS:
            time.sleep(interval)
    return None


def ended(job: dict[str, Any]) -> None:
    """Say how the job ended, with its error on one line."""
    error = job.get("error") or {}
    detail = ""
    if error:
        message = " | ".join(line for line in str(error.get("message", "")).splitlines() if line)
        detail = f" — {error.get('code')}: {message[:300]}"
    note(f"job {job.get('job_id')} ended: {job.get('status')}{detail}")


def follow_job(api: ApiClient, job_id: str, interval: float) -> dict[str, Any]:
    """Poll until the job (or its last automatic retry) ends; returns its final record."""
    display = Display()
    try:
        while True:
            job: dict[str, Any] = api.get(f"/jobs/{job_id}")
            display.update(job)
            status = job.get("status")
            if status in FINAL:
                child = retry_of(api, job, interval) if status in ("FAILED", "PREEMPTED") else None
                if child is None:
                    display.close()
                    ended(job)
                    return job
                note(f"job {job_id} ended {status}; following its automatic retry {child}")
                job_id = child
                display.switch()
                continue
            # Pacing between polls; the loop ends on the job's state, not on time.
            time.sleep(interval)
    finally:
        display.close()
