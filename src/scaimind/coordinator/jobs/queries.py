"""The read side the RPC layer may use: queries over jobs, logs and metrics, never a write.

The servicers read through `JobManager.reads` (typed as `JobReads`), so every change of a job
still goes through the manager's commands; the store satisfies this protocol as it is.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from scaimind.coordinator.persistence.records import JobRecord, LogRecord


class JobReads(Protocol):
    """Read-only queries over jobs, their logs and metrics."""

    def get_job(self, job_id: str, tenant_id: str | None = None) -> JobRecord | None:
        """One job; scoped to a tenant when given."""
        ...

    def job_status(self, job_id: str) -> int | None:
        """The status of a job, or None when it does not exist."""
        ...

    def list_jobs(
        self,
        tenant_id: str,
        statuses: Collection[int],
        labels: Mapping[str, str],
        order_column: str,
        descending: bool,
        after: tuple[Any, str] | None,
        limit: int,
        *,
        job_type: str | None = None,
        parent_job_id: str | None = None,
    ) -> tuple[list[JobRecord], int]:
        """One keyset page of a tenant's jobs plus the total number of matches."""
        ...

    def count_by_status(self) -> dict[int, int]:
        """Number of jobs per status, all tenants."""
        ...

    def logs_after(
        self, job_id: str, after_seq: int, min_level: int, limit: int
    ) -> list[LogRecord]:
        """Log entries after a seq, at least `min_level`."""
        ...

    def logs_tail(self, job_id: str, count: int, min_level: int) -> list[LogRecord]:
        """The last `count` entries at least `min_level`."""
        ...

    def last_seq(self, job_id: str) -> int:
        """The seq of the job's newest log entry (0 when none)."""
        ...

    def metric_series(self, job_id: str) -> dict[str, list[tuple[int, float, float]]]:
        """Metric name → (step, value, timestamp) points."""
        ...

    def latest_metric_step(self, job_id: str) -> int | None:
        """The newest step with metrics."""
        ...

    def metrics_at(self, job_id: str, step: int) -> tuple[int, float, dict[str, float]]:
        """(epoch, timestamp, values) of one step."""
        ...
