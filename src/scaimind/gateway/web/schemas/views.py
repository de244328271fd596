"""Response payloads of the jobs and monitoring endpoints: what the coordinator's messages become.

Every field of the protocol message is present (`backend.convert.message_to_dict`): unset
scalars with their zero value, unset enums, messages and timestamps as null. A test walks the
protocol descriptors against these models, so a field added to a .proto cannot silently vanish
from the responses. Metric values are `null` where the coordinator had NaN or infinity.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, Field, WithJsonSchema

from scaimind.gateway.web.schemas.jobs import (
    DataFormat,
    ExportFormat,
    FrameworkType,
    JobStatus,
    TrainingType,
)

T = TypeVar("T")

# RFC 3339 UTC with milliseconds ("2025-01-31T12:00:00.000Z"); null when unset.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})] | None
# A measured value; null where it was NaN or infinite (a diverged loss).
Measure = float | None
StrMap = dict[str, str]


def f(description: str) -> Any:
    """A required response field with its description (every field is always present)."""
    return Field(description=description)


class Data(BaseModel, Generic[T]):
    """The success envelope."""

    data: T = Field(description="The payload.")


class LogEntryLevel(StrEnum):
    """Level of a log entry."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


# --- the job definition, as stored -----------------------------------------------------------


class BaseModelView(BaseModel):
    """The model a job starts from."""

    model_id: str = f("Model id or URI.")
    revision: str = f("Revision; empty = default.")
    source: str = f("Where the model comes from.")
    tokenizer_id: str = f("Tokenizer; empty = the model's own.")
    dtype: str = f("Weights dtype.")
    trust_remote_code: bool = f("Whether the model's own code may run.")
    model_kwargs: StrMap = f("Extra model loading arguments.")


class DistributedView(BaseModel):
    """Multi-process settings."""

    world_size: int = f("Number of processes; 0 = unset.")
    backend: str = f("Collective backend.")
    strategy: str = f("Parallelism strategy.")
    config: StrMap = f("Framework-specific settings.")


class FrameworkView(BaseModel):
    """The framework that runs the job."""

    type: FrameworkType | None = f("Framework; null = HF_TRAINER.")
    config: StrMap = f("Framework-specific settings.")
    distributed: DistributedView | None = f("Multi-process settings.")
    custom_script_path: str = f("Script of a CUSTOM job.")


class TrainingConfigView(BaseModel):
    """What to train and how."""

    training_type: TrainingType | None = f("Kind of training.")
    base_model: BaseModelView | None = f("The model to start from.")
    framework: FrameworkView | None = f("The framework.")
    hyperparameters: StrMap = f("Hyperparameters as strings.")
    environment: StrMap = f("Extra environment variables.")
    resume_from_checkpoint: str = f("Checkpoint started from.")
    max_retries: int = f("Automatic retries allowed.")
    priority: int | None = f("0-10; null = 5.")


class DataSourceView(BaseModel):
    """One data source."""

    path: str = f("Path or URI as submitted.")
    type: str = f("Free-form role.")
    format: DataFormat | None = f("File format; null = guessed.")
    split: str = f("Split of a hub dataset.")
    columns: list[str] = f("Columns read; empty = all.")
    sample_rate: float = f("Fraction of rows used; 0 = all.")
    weight: float = f("Relative weight when mixing.")


class PreprocessView(BaseModel):
    """Tokenisation and formatting."""

    tokenizer_id: str = f("Tokenizer.")
    chat_template: str = f("Chat template.")
    add_bos: bool | None = f("Prepend BOS; null = default.")
    add_eos: bool | None = f("Append EOS; null = default.")
    padding: str = f("Padding strategy.")
    truncation: bool | None = f("Truncate; null = default.")
    field_mapping: StrMap = f("Column → expected field.")


class DataConfigView(BaseModel):
    """The job's data."""

    sources: list[DataSourceView] = f("Data sources.")
    preprocess: PreprocessView | None = f("Tokenisation and formatting.")
    max_seq_length: int = f("Maximum sequence length; 0 = unset.")
    batch_size: int = f("Batch size; 0 = unset.")
    gradient_accumulation_steps: int = f("Batches per step; 0 = 1.")
    num_workers: int = f("Data loader workers.")
    pin_memory: bool = f("Pin host memory.")
    validation_split: float = f("Fraction held out for validation.")
    seed: int = f("Shuffle seed.")


class ResourceConfigView(BaseModel):
    """Hardware the job asked for."""

    gpu_count: int = f("Slots per node.")
    gpu_type: str = f("GPU type; empty = any.")
    num_nodes: int = f("Nodes; 0 = 1.")
    cpu_cores: int = f("CPU cores.")
    memory_gb: float = f("Memory in GB.")
    max_runtime_seconds: int = f("Runtime limit; 0 = none.")
    node_selector: StrMap = f("Node labels that must match.")


class OutputConfigView(BaseModel):
    """Where results go."""

    output_path: str = f("Directory for the final model.")
    checkpoint_interval_steps: int = f("Checkpoint interval; 0 = default.")
    keep_last_checkpoints: int = f("Newest checkpoints kept; 0 = the coordinator's default.")
    save_final_model: bool | None = f("Write the final model; null = true.")
    export_format: ExportFormat | None = f("Final model format.")
    merge_adapter: bool = f("Merge a LoRA adapter.")
    register_model: bool = f("Register the model.")
    model_name: str = f("Registered model name.")


class SchedulingConfigView(BaseModel):
    """Queueing and placement."""

    queue_name: str = f("Queue; empty = default.")
    preemptible: bool = f("May be preempted.")
    max_queue_wait_seconds: int = f("Queue wait limit; 0 = none.")
    start_after: Timestamp = f("Not started before this time.")
    node_affinity: list[str] = f("Node ids the job may run on.")


# --- the job as it runs ----------------------------------------------------------------------


class JobProgress(BaseModel):
    """How far a job got."""

    current_step: int = f("Steps done (a resumed job starts at its checkpoint's step).")
    total_steps: int = f("Steps planned; 0 = not known yet.")
    current_epoch: int = f("Current epoch.")
    total_epochs: int = f("Epochs planned.")
    percent: float = f("0-100.")


class CheckpointView(BaseModel):
    """One checkpoint."""

    checkpoint_id: str = f("Id to resume, retry or evaluate from.")
    step: int = f("Step it was taken at.")
    created_at: Timestamp = f("When it was written.")
    path: str = f("Where it is stored.")
    size_bytes: int = f("Size on disk.")
    metrics: dict[str, Measure] = f("Metrics at that step.")


class JobErrorView(BaseModel):
    """Why a job failed."""

    code: str = f("EXIT_CODE, TIMEOUT, QUEUE_TIMEOUT, UNSCHEDULABLE, DATA_ERROR, ...")
    message: str = f("What happened (for EXIT_CODE, the output's last lines).")


class Job(BaseModel):
    """A training job (or an evaluation, labelled type=evaluation)."""

    job_id: str = f("The job's id (job_…, eval_… for evaluations).")
    name: str = f("Name given at submission.")
    tenant_id: str = f("Owning tenant.")
    user_id: str = f("Submitting user.")
    status: JobStatus | None = f("Lifecycle state.")
    status_message: str = f("Why it is in that state.")
    training_config: TrainingConfigView | None = f("What to train.")
    data_config: DataConfigView | None = f("The data.")
    resource_config: ResourceConfigView | None = f("Hardware asked for.")
    output_config: OutputConfigView | None = f("Where results go.")
    scheduling_config: SchedulingConfigView | None = f("Queueing and placement.")
    labels: StrMap = f("Labels.")
    parent_job_id: str = f("The job this one retries or evaluates.")
    retry_count: int = f("Automatic retries so far.")
    progress: JobProgress | None = f("Progress.")
    latest_metrics: dict[str, Measure] = f("Latest value of each metric.")
    checkpoints: list[CheckpointView] = f(
        "Checkpoints, oldest first: in the FULL view (GET /jobs/{job_id}); empty in the BASIC "
        "view of GET /jobs (see latest_checkpoint and checkpoint_count)."
    )
    assigned_nodes: list[str] = f("Nodes it runs on.")
    queue_name: str = f("Queue it waits or waited in.")
    queue_position: int = f("1-based position while QUEUED, else 0.")
    estimated_wait_seconds: int = f("Estimated wait while QUEUED.")
    error: JobErrorView | None = f("Why it failed.")
    created_at: Timestamp = f("Submitted at.")
    started_at: Timestamp = f("First started at.")
    completed_at: Timestamp = f("Ended at.")
    updated_at: Timestamp = f("Last state change.")
    final_model_uri: str = f("Where the final model was written.")
    latest_checkpoint: CheckpointView | None = f("The newest checkpoint (every view); null: none.")
    checkpoint_count: int = f("How many checkpoints the job keeps (every view).")


class JobList(BaseModel):
    """A page of jobs."""

    jobs: list[Job] = f("The page (BASIC view unless view=FULL: no checkpoint list).")
    next_page_token: str = f("Pass as page_token for the next page; empty on the last.")
    total_count: int = f("Matching jobs across all pages.")


class JobSubmitted(BaseModel):
    """What submitting a job answered."""

    job_id: str = f("The new job's id.")
    status: JobStatus | None = f("Its status now.")
    message: str = f("What happened.")
    estimated_wait_seconds: int = f("Estimated wait before it starts.")


class JobAction(BaseModel):
    """What a cancel, pause or resume answered."""

    job_id: str = f("The job.")
    status: JobStatus | None = f("Its status after the action.")
    message: str = f("What happened.")


class JobRetried(BaseModel):
    """What a retry answered."""

    job_id: str = f("The new child job.")
    parent_job_id: str = f("The job retried.")
    status: JobStatus | None = f("The child's status.")
    message: str = f("What happened.")


# --- monitoring --------------------------------------------------------------------------------


class MetricPoint(BaseModel):
    """One value of a series."""

    step: int = f("Training step.")
    value: Measure = f("The value (null for NaN or infinity).")
    timestamp: Timestamp = f("When it was reported.")


class MetricSeries(BaseModel):
    """One metric over the steps."""

    name: str = f("Metric name, e.g. loss.")
    points: list[MetricPoint] = f("Points, downsampled keeping first, last, min and max.")


class JobMetrics(BaseModel):
    """Metric series of a job."""

    job_id: str = f("The job.")
    step: int = f("Latest step.")
    total_steps: int = f("Steps planned.")
    epoch: int = f("Current epoch.")
    latest: dict[str, Measure] = f("Latest value of each metric.")
    series: list[MetricSeries] = f("Every metric's series.")
    system: dict[str, Measure] = f("Process figures (cpu_percent, memory_used_bytes).")


class LogEntry(BaseModel):
    """`event: log` of GET /jobs/{job_id}/logs."""

    seq: int = f("Per job, strictly increasing from 1 (the event id).")
    level: LogEntryLevel | None = f("Level.")
    message: str = f("The line.")
    timestamp: Timestamp = f("When it was logged.")
    source: str = f("coordinator, trainer, stdout or stderr.")
    node_id: str = f("Node it came from.")
    job_id: str = f("The job.")


class MetricsSnapshot(BaseModel):
    """`event: metrics` of GET /jobs/{job_id}/metrics/stream."""

    job_id: str = f("The job.")
    step: int = f("Step (the event id).")
    epoch: int = f("Epoch.")
    timestamp: Timestamp = f("When it was reported.")
    metrics: dict[str, Measure] = f("Metric values at that step.")
    system: dict[str, Measure] = f("Process figures.")


class StreamEnd(BaseModel):
    """`event: end`: the stream is complete (then `data: [DONE]`)."""

    job_id: str = f("The job.")
    status: JobStatus | None = f("The job's status at the end.")


class StreamError(BaseModel):
    """`event: error`: the stream failed after it started (then `data: [DONE]`)."""

    error: str = f('Always "stream ended".')
    code: str = f("The error code, as in the error envelope.")
    retryable: bool = f("Whether resuming with Last-Event-ID may work.")
