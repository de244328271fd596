"""Request schemas of the jobs endpoints (API.md §5.1)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

StrMap = dict[str, str]
# The protocol's integer widths: a bigger number would make the proto converter raise (a 500
# instead of a 422), so the schema rejects it.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class Strict(BaseModel):
    """Base: unknown fields are errors, so typos do not silently vanish."""

    model_config = ConfigDict(extra="forbid")


class JobStatus(StrEnum):
    """Job lifecycle states."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    SCHEDULING = "SCHEDULING"
    PREPARING = "PREPARING"
    TRAINING = "TRAINING"
    CHECKPOINTING = "CHECKPOINTING"
    PAUSED = "PAUSED"
    EVALUATING = "EVALUATING"
    EXPORTING = "EXPORTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"


class TrainingType(StrEnum):
    """Kinds of training."""

    SFT = "SFT"
    LORA = "LORA"
    QLORA = "QLORA"
    DPO = "DPO"
    RLHF = "RLHF"
    CONTINUED_PRETRAIN = "CONTINUED_PRETRAIN"
    FULL_FINETUNE = "FULL_FINETUNE"


class FrameworkType(StrEnum):
    """Training frameworks."""

    HF_TRAINER = "HF_TRAINER"
    DEEPSPEED = "DEEPSPEED"
    FSDP = "FSDP"
    MEGATRON = "MEGATRON"
    CUSTOM = "CUSTOM"


class DataFormat(StrEnum):
    """Data source formats."""

    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"
    TEXT = "text"


class ExportFormat(StrEnum):
    """Final model formats."""

    SAFETENSORS = "SAFETENSORS"
    PYTORCH = "PYTORCH"
    GGUF = "GGUF"
    ONNX = "ONNX"


class BaseModelSpec(Strict):
    """The model a job starts from."""

    model_id: Annotated[str, Field(min_length=1, max_length=512)]
    revision: str | None = None
    source: str | None = None
    tokenizer_id: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False
    model_kwargs: StrMap = Field(default_factory=dict)


class DistributedConfig(Strict):
    """Multi-process settings."""

    world_size: Annotated[Int32, Field(ge=1)] | None = None
    backend: str = "nccl"
    strategy: str | None = None
    config: StrMap = Field(default_factory=dict)


class FrameworkConfig(Strict):
    """Which framework runs the job."""

    type: FrameworkType = FrameworkType.HF_TRAINER
    config: StrMap = Field(default_factory=dict)
    distributed: DistributedConfig | None = None
    custom_script_path: str | None = None

    @model_validator(mode="after")
    def _custom_needs_script(self) -> FrameworkConfig:
        if self.type is FrameworkType.CUSTOM and not self.custom_script_path:
            raise ValueError("custom_script_path is required when type is CUSTOM")
        return self


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class TrainingConfig(Strict):
    """What to train and how."""

    training_type: TrainingType
    base_model: BaseModelSpec
    framework: FrameworkConfig = Field(default_factory=FrameworkConfig)
    hyperparameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    environment: StrMap = Field(default_factory=dict)
    resume_from_checkpoint: str | None = None
    max_retries: Annotated[int, Field(ge=0, le=100)] = 0
    priority: Annotated[int, Field(ge=0, le=10)] = 5

    @field_validator("hyperparameters", mode="after")
    @classmethod
    def _as_strings(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The protocol carries strings; numbers and booleans are accepted for convenience.
        return {k: _stringify(v) for k, v in value.items()}


class DataSource(Strict):
    """One data source."""

    path: Annotated[str, Field(min_length=1, max_length=4096)]
    type: str | None = None
    format: DataFormat | None = None
    split: str | None = None
    columns: list[str] = Field(default_factory=list)
    sample_rate: Annotated[float, Field(gt=0, le=1)] | None = None
    weight: Annotated[float, Field(ge=0)] | None = None


class PreprocessConfig(Strict):
    """Tokenisation and formatting."""

    tokenizer_id: str | None = None
    chat_template: str | None = None
    add_bos: bool | None = None
    add_eos: bool | None = None
    padding: str | None = None
    truncation: bool | None = None
    field_mapping: StrMap = Field(default_factory=dict)


class DataConfig(Strict):
    """The job's data."""

    sources: Annotated[list[DataSource], Field(min_length=1)]
    preprocess: PreprocessConfig | None = None
    max_seq_length: Annotated[Int32, Field(ge=1)] | None = None
    batch_size: Annotated[Int32, Field(ge=1)] | None = None
    gradient_accumulation_steps: Annotated[Int32, Field(ge=1)] = 1
    num_workers: Annotated[Int32, Field(ge=0)] | None = None
    pin_memory: bool = False
    validation_split: Annotated[float, Field(ge=0, le=1)] = 0.0
    seed: Int64 | None = None


class ResourceConfig(Strict):
    """Hardware a job asks for."""

    gpu_count: Annotated[Int32, Field(ge=0)]
    gpu_type: str | None = None
    num_nodes: Annotated[Int32, Field(ge=1)] = 1
    cpu_cores: Annotated[Int32, Field(ge=0)] | None = None
    memory_gb: Annotated[float, Field(ge=0)] | None = None
    max_runtime_seconds: Annotated[Int64, Field(ge=0)] | None = None
    node_selector: StrMap = Field(default_factory=dict)


class OutputConfig(Strict):
    """Where results go."""

    output_path: str | None = None
    checkpoint_interval_steps: Annotated[Int32, Field(ge=0)] | None = None
    keep_last_checkpoints: Annotated[Int32, Field(ge=0)] | None = None
    save_final_model: bool = True
    export_format: ExportFormat | None = None
    merge_adapter: bool = False
    register_model: bool = False
    model_name: str | None = None


class SchedulingConfig(Strict):
    """Queueing and placement."""

    queue_name: Annotated[str, Field(max_length=128)] | None = None
    preemptible: bool = False
    max_queue_wait_seconds: Annotated[Int64, Field(ge=0)] = 0
    # RFC 3339 requires an offset; a naive time would be ambiguous (and crashed the converter).
    start_after: AwareDatetime | None = None
    node_affinity: list[str] = Field(default_factory=list)


class SubmitJobBody(Strict):
    """POST /jobs."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    training_config: TrainingConfig
    data_config: DataConfig
    resource_config: ResourceConfig
    output_config: OutputConfig | None = None
    scheduling_config: SchedulingConfig | None = None
    labels: StrMap = Field(default_factory=dict)


class CancelBody(Strict):
    """POST /jobs/{id}/cancel."""

    reason: Annotated[str, Field(max_length=1024)] = ""


class PauseBody(Strict):
    """POST /jobs/{id}/pause."""

    save_checkpoint: bool = True


class ResumeBody(Strict):
    """POST /jobs/{id}/resume."""

    checkpoint_id: str = ""


class RetryBody(Strict):
    """POST /jobs/{id}/retry."""

    checkpoint_id: str = ""
    modify_resources: bool = False
    new_resource_config: ResourceConfig | None = None

    @model_validator(mode="after")
    def _resources_when_modifying(self) -> RetryBody:
        if self.modify_resources and self.new_resource_config is None:
            raise ValueError("new_resource_config is required when modify_resources is true")
        return self


LABEL_RE = r"^[^=]+=.*$"
