"""The stores' domain types: what a row of the coordinator's tables is outside the store.

Frozen dataclasses built at the store's boundary, so no other module sees `sqlite3.Row`; a change
goes back through the store (`Store.transition`, `Store.update_job`), never through a record.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from typing import Any, TypeVar


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job (a row of `jobs`). `request` is the serialised SubmitJobRequest (immutable);
    `labels`, `latest_metrics` and `assigned_nodes` are JSON texts."""

    job_id: str
    tenant_id: str
    user_id: str
    name: str
    job_type: str
    status: int
    status_message: str
    request: bytes
    labels: str
    parent_job_id: str
    retry_count: int
    max_retries: int
    priority: int
    queue_name: str
    preemptible: int
    gpu_type: str
    gpu_count: int
    num_nodes: int
    current_step: int
    total_steps: int
    current_epoch: int
    total_epochs: int
    latest_metrics: str
    assigned_nodes: str
    error_code: str
    error_message: str
    final_model_uri: str
    resume_checkpoint: str
    attempt: int
    run_id: str
    run_delivered: int
    start_after: float
    max_queue_wait: float
    created_at: float
    queued_at: float
    started_at: float
    completed_at: float
    updated_at: float

    def value(self, column: str) -> Any:
        """A column by name (ListJobs' page token remembers the order column's value)."""
        if column not in _JOB_FIELDS:
            raise KeyError(column)
        return getattr(self, column)


_JOB_FIELDS = frozenset(f.name for f in fields(JobRecord))


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One persisted log entry."""

    job_id: str
    seq: int
    level: int
    message: str
    ts: float
    source: str
    node_id: str


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """One persisted checkpoint."""

    checkpoint_id: str
    job_id: str
    step: int
    path: str
    size_bytes: int
    metrics: dict[str, float]
    created_at: float


@dataclass(frozen=True, slots=True)
class PendingLog:
    """A log entry before it has a seq."""

    level: int
    message: str
    source: str
    node_id: str = ""
    ts: float = 0.0


class IdempotencyConflict(Exception):
    """The idempotency key was already used; carries the job it created."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


# ---- ops.db -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    """One evaluation's definition (its state is its job's)."""

    evaluation_id: str
    tenant_id: str
    job_id: str  # the evaluated job
    request: bytes  # the serialised SubmitEvaluationRequest
    model_path: str
    created_at: float


@dataclass(frozen=True, slots=True)
class BenchmarkResult:
    """One benchmark of an evaluation."""

    evaluation_id: str
    position: int
    status: int
    score: float
    metrics: str  # JSON object
    error: str


@dataclass(frozen=True, slots=True)
class OutputClaim:
    """An output directory claimed by a job."""

    path: str
    tenant_id: str
    job_id: str
    created_at: float


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One dataset in the dataset cache (per tenant, source URI and node)."""

    tenant_id: str
    dataset_uri: str
    node_id: str
    path: str
    size_bytes: int
    num_rows: int
    status: int
    source_size: int
    source_mtime_ns: int
    cached_at: float
    last_accessed_at: float
    hit_count: int


R = TypeVar("R", JobRecord, EvaluationRecord, BenchmarkResult, OutputClaim, CacheEntry)


def from_row(cls: type[R], row: sqlite3.Row) -> R:
    """The record `cls` of a `SELECT *` row: its fields by name (other columns, such as the
    jobs table's unused legacy ones, are dropped)."""
    return cls(**{f.name: row[f.name] for f in fields(cls)})
