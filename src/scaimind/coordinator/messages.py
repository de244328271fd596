"""Job states and the protobuf messages built from records: the vocabulary rpc/, jobs/, workloads/
and data/ share (status sets, Job, LogEntry and Checkpoint messages, timestamps)."""

from __future__ import annotations

import json
from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from scaimind.coordinator.jobenv import MASK, is_secret
from scaimind.coordinator.persistence.records import CheckpointRecord, JobRecord, LogRecord
from scaimind.v1 import cluster_pb2, common_pb2, coordinator_pb2

S = common_pb2.JobStatus
TERMINAL = frozenset({S.JOB_STATUS_COMPLETED, S.JOB_STATUS_FAILED, S.JOB_STATUS_CANCELLED})
# A process exists (or is about to) in these states; pause and preemption apply to them.
RUNNING = frozenset(
    {
        S.JOB_STATUS_SCHEDULING,
        S.JOB_STATUS_PREPARING,
        S.JOB_STATUS_TRAINING,
        S.JOB_STATUS_CHECKPOINTING,
        S.JOB_STATUS_EVALUATING,
        S.JOB_STATUS_EXPORTING,
    }
)
NON_TERMINAL = frozenset(set(S.values()) - TERMINAL - {S.JOB_STATUS_UNSPECIFIED})


def as_status(value: int) -> common_pb2.JobStatus.ValueType:
    """An int from the database as a JobStatus value."""
    return common_pb2.JobStatus.ValueType(value)


def status_name(status: int) -> str:
    """QUEUED for JOB_STATUS_QUEUED."""
    return S.Name(as_status(status)).removeprefix("JOB_STATUS_")


def node_status_name(status: int) -> str:
    """ONLINE for NODE_STATUS_ONLINE."""
    return cluster_pb2.NodeStatus.Name(cluster_pb2.NodeStatus.ValueType(status)).removeprefix(
        "NODE_STATUS_"
    )


def timestamp(ts: float) -> Timestamp:
    """Seconds since the epoch as a Timestamp."""
    out = Timestamp()
    out.FromNanoseconds(round(ts * 1e9))
    return out


def set_time(msg: Timestamp, ts: float) -> None:
    """Fill a Timestamp field in place when ts is set."""
    if ts > 0:
        msg.FromNanoseconds(round(ts * 1e9))


def checkpoint_proto(c: CheckpointRecord, show: Callable[[str], str]) -> common_pb2.Checkpoint:
    """A checkpoint record as a message; `show` turns its host path into what views show."""
    msg = common_pb2.Checkpoint(
        checkpoint_id=c.checkpoint_id,
        step=c.step,
        path=show(c.path),
        size_bytes=c.size_bytes,
        metrics=c.metrics,
    )
    set_time(msg.created_at, c.created_at)
    return msg


def log_proto(r: LogRecord) -> coordinator_pb2.LogEntry:
    """A log record as a message."""
    msg = coordinator_pb2.LogEntry(
        seq=r.seq,
        level=r.level,  # type: ignore[arg-type]
        message=r.message,
        source=r.source,
        node_id=r.node_id,
        job_id=r.job_id,
    )
    set_time(msg.timestamp, r.ts)
    return msg


def job_proto(
    row: JobRecord,
    req: coordinator_pb2.SubmitJobRequest,
    checkpoints: list[CheckpointRecord],
    show: Callable[[str], str],
) -> common_pb2.Job:
    """A job row, its definition and its checkpoints as a Job; queue fields are the caller's.

    Secret-looking environment values are masked and checkpoint paths pass through `show`, so
    no view carries a credential or a server path.
    """
    job = common_pb2.Job(
        job_id=row.job_id,
        name=row.name,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        status=as_status(row.status),
        status_message=row.status_message,
        training_config=req.training_config,
        data_config=req.data_config,
        resource_config=req.resource_config,
        output_config=req.output_config,
        scheduling_config=req.scheduling_config,
        labels=json.loads(row.labels),
        parent_job_id=row.parent_job_id,
        retry_count=row.retry_count,
        latest_metrics=json.loads(row.latest_metrics),
        assigned_nodes=json.loads(row.assigned_nodes),
        queue_name=row.queue_name,
        final_model_uri=row.final_model_uri,
    )
    total = int(row.total_steps)
    current = int(row.current_step)
    job.progress.CopyFrom(
        common_pb2.JobProgress(
            current_step=current,
            total_steps=total,
            current_epoch=row.current_epoch,
            total_epochs=row.total_epochs,
            percent=100.0
            if row.status == S.JOB_STATUS_COMPLETED
            else (min(100.0, 100.0 * current / total) if total > 0 else 0.0),
        )
    )
    if row.error_code:
        job.error.code = row.error_code
        job.error.message = row.error_message
    job.checkpoints.extend(checkpoint_proto(c, show) for c in checkpoints)
    job.checkpoint_count = len(job.checkpoints)
    if job.checkpoints:
        job.latest_checkpoint.CopyFrom(job.checkpoints[-1])
    env = job.training_config.environment
    secret = [k for k in env if is_secret(k)]
    for name in secret:
        env[name] = MASK
    set_time(job.created_at, row.created_at)
    set_time(job.started_at, row.started_at)
    set_time(job.completed_at, row.completed_at)
    set_time(job.updated_at, row.updated_at)
    return job


def in_view(job: common_pb2.Job, view: int, default: int) -> common_pb2.Job:
    """The job as `view` shows it (`default` when unspecified): BASIC drops the checkpoint list.

    `latest_checkpoint` and `checkpoint_count` stay in every view, so a list page stays small
    however many checkpoints a job keeps (a page of 10 jobs of 248 checkpoints each was 112 KB).
    """
    if (view or default) == coordinator_pb2.JOB_VIEW_BASIC:
        del job.checkpoints[:]
    return job
