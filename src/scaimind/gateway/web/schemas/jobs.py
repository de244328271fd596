"""Request schemas of the jobs endpoints (docs/API.md, "Jobs")."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from scaimind.contract import limits
from scaimind.gateway.web.schemas.common import (
    Id,
    Key,
    LabelKey,
    Labels,
    LabelValue,
    MultilineValue,
    Name,
    Options,
    Path,
    Reason,
    Strict,
    Template,
    Value,
    map_of,
)

# Kept for the modules that imported it from here.
StrMap = dict[str, str]
# The protocol's integer widths: a bigger number would make the proto converter raise (a 500
# instead of a 422), so the schema rejects it.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Float = Annotated[float, Field(allow_inf_nan=False)]

__all__ = ["StrMap", "Strict"]  # re-exported to the other schema modules


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


class JobView(StrEnum):
    """How much of a job an answer carries."""

    BASIC = "BASIC"  # every field but the checkpoint list (latest_checkpoint, checkpoint_count)
    FULL = "FULL"  # every field with every checkpoint


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

    model_id: Annotated[
        str,
        Field(min_length=1, max_length=limits.MODEL_ID_CHARS),
        Field(description="Model id on its hub (e.g. `meta-llama/Llama-3-8B`) or a model URI."),
    ]
    revision: Value | None = Field(None, description="Revision (branch, tag or commit).")
    source: Value | None = Field(None, description="Where the model comes from, e.g. `hf`.")
    tokenizer_id: Value | None = Field(None, description="Tokenizer, when not the model's own.")
    dtype: Value | None = Field(None, description="Weights dtype, e.g. `bfloat16`.")
    trust_remote_code: bool = Field(False, description="Allow the model's own code to run.")
    model_kwargs: Options = Field(
        default_factory=dict, description="Extra model loading arguments (strings)."
    )


class DistributedConfig(Strict):
    """Multi-process settings."""

    world_size: Annotated[Int32, Field(ge=1)] | None = Field(
        None, description="Number of processes."
    )
    backend: Value = Field("nccl", description="Collective backend.")
    strategy: Value | None = Field(None, description="Parallelism strategy of the framework.")
    config: Options = Field(default_factory=dict, description="Framework-specific settings.")


class FrameworkConfig(Strict):
    """Which framework runs the job."""

    # The CUSTOM rule below, in the schema too.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"type": {"const": "CUSTOM"}}, "required": ["type"]},
            "then": {
                "properties": {"custom_script_path": {"type": "string", "minLength": 1}},
                "required": ["custom_script_path"],
            },
        }
    )

    type: FrameworkType = Field(FrameworkType.HF_TRAINER, description="The training framework.")
    config: Options = Field(default_factory=dict, description="Framework-specific settings.")
    distributed: DistributedConfig | None = Field(None, description="Multi-process settings.")
    custom_script_path: Path | None = Field(
        None,
        validate_default=True,
        description="Absolute path of the script a CUSTOM job runs (required for CUSTOM).",
    )

    @field_validator("custom_script_path", mode="after")
    @classmethod
    def _custom_needs_script(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field validator, so the 422 names custom_script_path rather than the whole body.
        if info.data.get("type") is FrameworkType.CUSTOM and not value:
            raise ValueError("custom_script_path is required when type is CUSTOM")
        return value


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class TrainingConfig(Strict):
    """What to train and how."""

    training_type: TrainingType = Field(description="The kind of training.")
    base_model: BaseModelSpec = Field(description="The model to start from.")
    framework: FrameworkConfig = Field(
        default_factory=FrameworkConfig, description="The framework that runs the job."
    )
    hyperparameters: Annotated[
        dict[Key, Value | int | Float | bool], map_of(limits.HYPERPARAMETERS)
    ] = Field(
        default_factory=dict,
        description=(
            "Hyperparameters by name; numbers and booleans are sent as strings. The built-in "
            "trainer reads max_steps, epochs, learning_rate, batch_size, seed, warmup_steps "
            f"and max_seq_length. At most {limits.HYPERPARAMETERS} entries."
        ),
    )
    environment: Annotated[dict[Key, MultilineValue], map_of(limits.ENVIRONMENT)] = Field(
        default_factory=dict,
        description=(
            "Extra environment variables of the job's process "
            f"(at most {limits.ENVIRONMENT}, values up to {limits.VALUE_CHARS} characters)."
        ),
    )
    resume_from_checkpoint: Path | None = Field(
        None, description="Checkpoint id or path to start from."
    )
    max_retries: Annotated[int, Field(ge=0, le=100)] = Field(
        0, description="Automatic retries after preemption or failure."
    )
    priority: Annotated[int, Field(ge=0, le=10)] = Field(
        5, description="0-10; higher runs first and may preempt preemptible jobs."
    )

    @field_validator("hyperparameters", mode="after")
    @classmethod
    def _as_strings(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The protocol carries strings; numbers and booleans are accepted for convenience.
        out = {k: _stringify(v) for k, v in value.items()}
        for key, text in out.items():
            if len(text) > limits.VALUE_CHARS:
                raise ValueError(f"{key}: at most {limits.VALUE_CHARS} characters")
        return out


class DataSource(Strict):
    """One data source."""

    path: Annotated[
        Path,
        Field(min_length=1),
        Field(
            description=(
                "`scaidrive://<tenant>/…`, `scaiatlas://…`, `hf://…`, `file://…` or an "
                "absolute path."
            )
        ),
    ]
    type: Value | None = Field(None, description="Free-form role, e.g. `train` or `eval`.")
    format: DataFormat | None = Field(None, description="File format; guessed when empty.")
    split: Value | None = Field(None, description="Split of a hub dataset.")
    columns: Annotated[list[Key], Field(max_length=limits.COLUMNS)] = Field(
        default_factory=list, description=f"Columns to read (at most {limits.COLUMNS})."
    )
    sample_rate: Annotated[Float, Field(gt=0, le=1)] | None = Field(
        None, description="Fraction of rows to use, in (0, 1]."
    )
    weight: Annotated[Float, Field(ge=0)] | None = Field(
        None, description="Relative weight when mixing sources."
    )


class PreprocessConfig(Strict):
    """Tokenisation and formatting."""

    tokenizer_id: Value | None = Field(None, description="Tokenizer to use.")
    chat_template: Template | None = Field(None, description="Chat template (may span lines).")
    add_bos: bool | None = Field(None, description="Prepend the BOS token.")
    add_eos: bool | None = Field(None, description="Append the EOS token.")
    padding: Value | None = Field(None, description="e.g. `longest` or `max_length`.")
    truncation: bool | None = Field(None, description="Truncate to max_seq_length.")
    field_mapping: Options = Field(
        default_factory=dict, description="Dataset column → field the training type expects."
    )


class DataConfig(Strict):
    """The job's data."""

    sources: Annotated[list[DataSource], Field(min_length=1, max_length=limits.SOURCES)] = Field(
        description=f"Data sources (1 to {limits.SOURCES})."
    )
    preprocess: PreprocessConfig | None = Field(None, description="Tokenisation and formatting.")
    max_seq_length: Annotated[Int32, Field(ge=1)] | None = Field(
        None, description="Maximum sequence length in tokens."
    )
    batch_size: Annotated[Int32, Field(ge=1)] | None = Field(None, description="Batch size.")
    gradient_accumulation_steps: Annotated[Int32, Field(ge=1)] = Field(
        1, description="Batches per optimiser step."
    )
    num_workers: Annotated[Int32, Field(ge=0)] | None = Field(
        None, description="Data loader workers."
    )
    pin_memory: bool = Field(False, description="Pin host memory for transfers.")
    validation_split: Annotated[Float, Field(ge=0, le=1)] = Field(
        0.0, description="Fraction held out for validation (EVALUATING runs when > 0)."
    )
    seed: Int64 | None = Field(None, description="Shuffle seed.")


class ResourceConfig(Strict):
    """Hardware a job asks for."""

    gpu_count: Annotated[Int32, Field(ge=0)] = Field(
        description="Slots (GPUs) per node; 0 only on a CPU inventory."
    )
    gpu_type: Value | None = Field(None, description="GPU type of the inventory; empty = any.")
    num_nodes: Annotated[Int32, Field(ge=1)] = Field(1, description="Number of nodes.")
    cpu_cores: Annotated[Int32, Field(ge=0)] | None = Field(None, description="CPU cores.")
    memory_gb: Annotated[Float, Field(ge=0)] | None = Field(None, description="Memory in GB.")
    max_runtime_seconds: Annotated[Int64, Field(ge=0)] | None = Field(
        None, description="Fail the job after this long (0 or unset: no limit)."
    )
    node_selector: Annotated[dict[LabelKey, LabelValue], map_of(limits.NODE_SELECTOR)] = Field(
        default_factory=dict,
        description=f"Node labels that must match (at most {limits.NODE_SELECTOR}).",
    )


class OutputConfig(Strict):
    """Where results go."""

    output_path: Path | None = Field(None, description="Directory for the final model.")
    checkpoint_interval_steps: Annotated[Int32, Field(ge=0)] | None = Field(
        None, description="Checkpoint every N steps (0 or unset: the coordinator's default)."
    )
    keep_last_checkpoints: Annotated[Int32, Field(ge=0)] | None = Field(
        None,
        description="Newest checkpoints kept, older ones deleted (0 or unset: the coordinator's "
        "default, 5 on the reference coordinator).",
    )
    save_final_model: bool = Field(True, description="Write the final model.")
    export_format: ExportFormat | None = Field(None, description="Format of the final model.")
    merge_adapter: bool = Field(False, description="Merge a LoRA adapter into the model.")
    register_model: bool = Field(False, description="Register the model in ScaiAtlas.")
    model_name: Name | None = Field(None, description="Name of the registered model.")


class SchedulingConfig(Strict):
    """Queueing and placement."""

    queue_name: Id | None = Field(None, description="Queue to wait in; empty = `default`.")
    preemptible: bool = Field(False, description="A higher-priority job may preempt this one.")
    max_queue_wait_seconds: Annotated[Int64, Field(ge=0)] = Field(
        0, description="Fail with QUEUE_TIMEOUT after waiting this long (0: no limit)."
    )
    # RFC 3339 requires an offset; a naive time would be ambiguous (and crashed the converter).
    start_after: AwareDatetime | None = Field(
        None, description="Do not start before this time (RFC 3339 with an offset)."
    )
    node_affinity: Annotated[list[Id], Field(max_length=limits.NODE_AFFINITY)] = Field(
        default_factory=list,
        description=f"Node ids the job may run on (at most {limits.NODE_AFFINITY}).",
    )


class SubmitJobBody(Strict):
    """POST /jobs."""

    name: Annotated[Name, Field(min_length=1), Field(description="A name for people.")]
    training_config: TrainingConfig = Field(description="The model, framework and settings.")
    data_config: DataConfig = Field(description="The data to train on.")
    resource_config: ResourceConfig = Field(description="Hardware the job needs.")
    output_config: OutputConfig | None = Field(None, description="Where results go.")
    scheduling_config: SchedulingConfig | None = Field(None, description="Queueing, placement.")
    labels: Labels = Field(
        default_factory=dict,
        description=(
            f"Labels to filter jobs by (at most {limits.LABELS}; keys up to "
            f"{limits.LABEL_KEY_CHARS} characters, values up to {limits.LABEL_VALUE_CHARS})."
        ),
    )


class CancelBody(Strict):
    """POST /jobs/{id}/cancel."""

    reason: Reason = Field("", description="Why; kept in the job's log.")


class PauseBody(Strict):
    """POST /jobs/{id}/pause."""

    save_checkpoint: bool = Field(True, description="Checkpoint before stopping.")


class ResumeBody(Strict):
    """POST /jobs/{id}/resume."""

    checkpoint_id: Id = Field("", description="Checkpoint to resume from; empty = the latest.")


class RetryBody(Strict):
    """POST /jobs/{id}/retry."""

    # The modify_resources rule below, in the schema too.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "properties": {"modify_resources": {"const": True}},
                "required": ["modify_resources"],
            },
            "then": {
                "properties": {"new_resource_config": {"type": "object"}},
                "required": ["new_resource_config"],
            },
        }
    )

    checkpoint_id: Id = Field(
        "", description="Checkpoint the child starts from; empty = the parent's latest."
    )
    modify_resources: bool = Field(False, description="Use new_resource_config for the child.")
    new_resource_config: ResourceConfig | None = Field(
        None,
        validate_default=True,
        description="The child's resources (required when modify_resources is true).",
    )

    @field_validator("new_resource_config", mode="after")
    @classmethod
    def _resources_when_modifying(
        cls, value: ResourceConfig | None, info: ValidationInfo
    ) -> ResourceConfig | None:
        # A field validator, so the 422 names new_resource_config rather than the whole body.
        if info.data.get("modify_resources") and value is None:
            raise ValueError("new_resource_config is required when modify_resources is true")
        return value


def _label_filter(value: str) -> str:
    key, _, label = value.partition("=")
    if len(key) > limits.LABEL_KEY_CHARS:
        raise ValueError(f"label keys are at most {limits.LABEL_KEY_CHARS} characters")
    if len(label) > limits.LABEL_VALUE_CHARS:
        raise ValueError(f"label values are at most {limits.LABEL_VALUE_CHARS} characters")
    problem = limits.text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# `key=value`; the pattern must sit on the items (on the list, pydantic raises TypeError: a 500).
LabelFilter = Annotated[
    str,
    StringConstraints(
        pattern=r"^[^=]+=.*$", max_length=limits.LABEL_KEY_CHARS + 1 + limits.LABEL_VALUE_CHARS
    ),
    AfterValidator(_label_filter),
]
