"""Response payloads of the cluster, queue, evaluation and data endpoints (see views.py)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from scaimind.gateway.web.schemas.jobs import DataFormat, JobStatus
from scaimind.gateway.web.schemas.views import Measure, StrMap, Timestamp, f


class NodeStatus(StrEnum):
    """Node states."""

    ONLINE = "ONLINE"
    DRAINING = "DRAINING"
    DRAINED = "DRAINED"
    DISABLED = "DISABLED"
    OFFLINE = "OFFLINE"


class BenchmarkStatus(StrEnum):
    """Benchmark states."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class CacheEntryStatus(StrEnum):
    """Dataset cache entry states."""

    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"


# --- cluster -----------------------------------------------------------------------------------


class GpuTypeSummary(BaseModel):
    """Slots of one GPU type."""

    gpu_type: str = f("GPU type (CPU on the default inventory).")
    total: int = f("Slots of this type.")
    available: int = f("Free slots on online nodes.")


class ClusterUtilization(BaseModel):
    """Measured use."""

    gpu_percent: Measure = f("Mean measured utilisation over all slots, 0-100.")


class ClusterStatus(BaseModel):
    """Cluster-wide capacity and load."""

    cluster_name: str = f("Cluster name.")
    total_nodes: int = f("Nodes in the inventory.")
    nodes_by_status: dict[str, int] = f("Node count per status.")
    total_gpus: int = f("All slots.")
    available_gpus: int = f("Free slots on online nodes.")
    allocated_gpus: int = f("Slots in use.")
    gpu_types: list[GpuTypeSummary] = f("Slots per GPU type.")
    running_jobs: int = f("Jobs running.")
    queued_jobs: int = f("Jobs waiting.")
    utilization: ClusterUtilization | None = f("Measured use.")
    coordinator_version: str = f("Coordinator software version.")
    updated_at: Timestamp = f("When these figures were taken.")
    jobs_by_status: dict[str, int] = f("Jobs of every tenant per status (numbers only).")


class Gpu(BaseModel):
    """One slot of a node."""

    index: int = f("Slot index.")
    utilization_percent: Measure = f("Measured use of the job in it, 0-100.")
    memory_used_bytes: int = f("Memory used by the job in it.")
    memory_total_bytes: int = f("Memory of the slot.")
    job_id: str = f('Job in it (yours), "(another tenant)", or empty when free.')


class Node(BaseModel):
    """One node."""

    node_id: str = f("Node id.")
    hostname: str = f("Host name.")
    status: NodeStatus | None = f("ONLINE, DRAINING, DRAINED, DISABLED or OFFLINE.")
    gpu_type: str = f("GPU type of its slots.")
    gpu_count: int = f("Slots.")
    gpus_available: int = f("Free slots.")
    gpus: list[Gpu] = f("Each slot.")
    running_job_ids: list[str] = f("Your jobs running on it.")
    labels: StrMap = f("Node labels (for node_selector).")
    last_heartbeat: Timestamp = f("Last heartbeat.")
    drain_reason: str = f("Why it was drained.")


class NodeList(BaseModel):
    """A page of nodes."""

    nodes: list[Node] = f("The page.")
    next_page_token: str = f("Pass as page_token for the next page; empty on the last.")
    total_count: int = f("Matching nodes across all pages.")


# --- queue -------------------------------------------------------------------------------------


class QueuedJob(BaseModel):
    """A job waiting in a queue (only your own are listed)."""

    job_id: str = f("The job.")
    name: str = f("Its name.")
    position: int = f("1-based position.")
    priority: int = f("Priority.")
    gpu_count: int = f("Slots it needs.")
    gpu_type: str = f("GPU type it needs.")
    wait_seconds: int = f("Time queued so far.")
    estimated_start_seconds: int = f("Estimated start, from now.")


class Queue(BaseModel):
    """One queue."""

    queue_name: str = f("Queue name.")
    depth: int = f("Jobs waiting (all tenants).")
    running: int = f("Jobs of this queue running.")
    oldest_wait_seconds: int = f("Longest wait so far.")
    estimated_wait_seconds: int = f("Estimated wait for a job submitted now.")
    jobs: list[QueuedJob] = f("Your waiting jobs.")


class QueueStatus(BaseModel):
    """Queues and their waits."""

    queues: list[Queue] = f("Each queue.")
    total_depth: int = f("Jobs waiting in all queues.")


# --- evaluations -------------------------------------------------------------------------------


class BenchmarkResult(BaseModel):
    """One benchmark of an evaluation."""

    name: str = f("Benchmark name.")
    dataset: str = f("Dataset; empty = the job's validation split.")
    num_samples: int = f("Samples scored; 0 = all.")
    parameters: StrMap = f("Benchmark settings.")
    status: BenchmarkStatus | None = f("PENDING, RUNNING, COMPLETED or FAILED.")
    score: Measure = f("The headline score (null when not finite).")
    metrics: dict[str, Measure] = f("Every figure measured.")
    error: str = f("Why it failed.")


class Evaluation(BaseModel):
    """An evaluation and its scores."""

    evaluation_id: str = f("The evaluation (eval_…).")
    job_id: str = f("The evaluated job.")
    model_uri: str = f("The model scored.")
    checkpoint_id: str = f("The checkpoint scored; empty = the final model.")
    status: JobStatus | None = f("Lifecycle state.")
    benchmarks: list[BenchmarkResult] = f("Each benchmark.")
    created_at: Timestamp = f("Submitted at.")
    completed_at: Timestamp = f("Ended at.")
    tenant_id: str = f("Owning tenant.")
    status_message: str = f("Why it is in that state.")


class EvaluationList(BaseModel):
    """A page of evaluations, newest first."""

    evaluations: list[Evaluation] = f("The page: each evaluation as GET /evaluations/{id}.")
    next_page_token: str = f("Pass as page_token for the next page; empty on the last.")
    total_count: int = f("Matching evaluations across all pages.")


class EvaluationSubmitted(BaseModel):
    """What submitting an evaluation answered."""

    evaluation_id: str = f("The new evaluation's id.")
    status: JobStatus | None = f("Its status now.")
    message: str = f("What happened.")


# --- data --------------------------------------------------------------------------------------


class RowError(BaseModel):
    """A problem with one row."""

    row: int = f("1-based row number.")
    message: str = f("What is wrong.")


class SourceValidation(BaseModel):
    """What reading one source found."""

    path: str = f("The source, as sent.")
    valid: bool = f("Readable, and every checked row has the fields the training type needs.")
    format: DataFormat | None = f("Format read.")
    num_rows: int = f("Rows.")
    size_bytes: int = f("Size.")
    columns: list[str] = f("Columns found.")
    errors: list[RowError] = f("The first 20 problems.")
    warnings: list[str] = f("Warnings.")


class ValidationReport(BaseModel):
    """Data validation results (a bad source is valid=false, still 200)."""

    valid: bool = f("Every source is valid.")
    results: list[SourceValidation] = f("One per source, in order.")


class DataCacheEntry(BaseModel):
    """One cached dataset."""

    dataset_uri: str = f("The dataset.")
    node_id: str = f("Node holding it.")
    size_bytes: int = f("Size.")
    num_rows: int = f("Rows.")
    status: CacheEntryStatus | None = f("LOADING, READY or FAILED.")
    cached_at: Timestamp = f("When it was cached.")
    last_accessed_at: Timestamp = f("Last use.")
    hit_count: int = f("Uses served from the cache.")


class DataCache(BaseModel):
    """The dataset cache."""

    entries: list[DataCacheEntry] = f("Cached datasets.")
    total_size_bytes: int = f("Bytes used.")
    capacity_bytes: int = f("Bytes available in all.")
    hit_rate: float = f("Hits / lookups, 0-1.")
