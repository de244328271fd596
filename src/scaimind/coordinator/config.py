"""Configuration of the reference coordinator."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GIB = 1024**3
MIB = 1024**2


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JobLimits(BaseModel):
    """Per-job resource limits (rlimits); 0 means no limit of that kind."""

    model_config = ConfigDict(frozen=True)

    memory_mb: Annotated[int, Field(ge=0)] = 4096  # address space
    cpu_seconds: Annotated[int, Field(ge=0)] = 86_400
    file_size_mb: Annotated[int, Field(ge=0)] = 16_384  # largest file a job may write
    open_files: Annotated[int, Field(ge=0)] = 1024
    processes: Annotated[int, Field(ge=0)] = 256


class SandboxConfig(BaseModel):
    """How job processes are confined (see executors/sandbox.py)."""

    model_config = ConfigDict(frozen=True)

    bwrap: str = "bwrap"
    # CUSTOM jobs need the sandbox unless this is set (meant for single-user machines).
    allow_unsandboxed: bool = False
    network: bool = False
    # The user a job runs as when the coordinator runs as root ("nobody" by default).
    uid: Annotated[int, Field(ge=1)] = 65534
    gid: Annotated[int, Field(ge=1)] = 65534
    tmp_mb: Annotated[int, Field(ge=0)] = 1024  # size of the job's private /tmp
    limits: JobLimits = JobLimits()


class RayConfig(BaseModel):
    """The Ray backend (executors/ray.py): where the Ray job server is and how to reach it."""

    model_config = ConfigDict(frozen=True)

    # The job server (the dashboard's HTTP address), e.g. http://127.0.0.1:8265.
    address: str
    # The interpreter on the Ray nodes that has scaimind installed ('' = this coordinator's).
    python: str = ""
    # Ray token authentication (RAY_AUTH_MODE=token on the cluster); never reaches a job.
    auth_token: str = ""
    request_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    # An attempt Ray keeps PENDING this long (someone else holds the resources) is withdrawn
    # and the job waits in our queue again; 0 = wait for Ray as long as it takes.
    pending_timeout_seconds: Annotated[float, Field(ge=0)] = 60.0
    # How often the node inventory is read from the cluster.
    inventory_seconds: Annotated[float, Field(gt=0)] = 5.0

    @field_validator("address")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"the Ray address {value!r} is not an http(s) URL of the Ray job server "
                "(for example http://127.0.0.1:8265)"
            )
        return value.rstrip("/")


class CoordinatorConfig(BaseModel):
    """Everything the reference coordinator is started with."""

    model_config = ConfigDict(frozen=True)

    data_dir: Path
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    api_secret: str | None = None
    # Only honoured on a loopback host: an open port without a secret would let anyone on the
    # network run processes on this machine.
    allow_unauthenticated: bool = False
    inventory_path: Path | None = None
    # scaidrive://<tenant>/<path> maps onto storage_root/<tenant>/<path> (default data_dir/storage).
    storage_root: Path | None = None
    # HS256 key of the gateway's downstream tokens (x-scaidrive-token); None refuses scaidrive://.
    downstream_token_key: str | None = None
    dataset_cache_capacity_bytes: Annotated[int, Field(ge=0)] = GIB
    default_checkpoint_interval_steps: Annotated[int, Field(ge=1)] = 10
    # Checkpoints a job keeps when output_config.keep_last_checkpoints is 0 (unset).
    default_keep_last_checkpoints: Annotated[int, Field(ge=1)] = 5
    cluster_name: str = "local"
    # Local paths a tenant may name (":"-separated in SCAIMIND_LOCAL_DATA_ROOTS; `{tenant}`
    # expands to the caller's tenant id). Nothing outside them (and the tenant's storage area).
    local_data_roots: tuple[str, ...] = ()
    # Directories no root may expose besides data_dir (the gateway's data dir when embedded).
    protected_dirs: tuple[Path, ...] = ()
    sandbox: SandboxConfig = SandboxConfig()
    # Operator maximum of resource_config.max_runtime_seconds (and the limit of jobs without
    # one); 0 = none.
    max_runtime_seconds: Annotated[int, Field(ge=0)] = 86_400
    # ValidateData reads at most this many bytes of each source.
    validate_max_bytes: Annotated[int, Field(ge=1)] = 64 * MIB
    # Queued + running jobs one tenant may have before SubmitJob answers RESOURCE_EXHAUSTED.
    tenant_queue_quota: Annotated[int, Field(ge=1)] = 10_000
    # How long a stop (pause, preemption, shutdown) waits for the checkpoint before SIGKILL.
    stop_grace_seconds: Annotated[float, Field(gt=0)] = 30.0
    # Where job processes run: child processes of this coordinator, or Ray jobs.
    executor: Literal["local", "ray"] = "local"
    ray: RayConfig | None = None
    # Storage every node that runs jobs sees at the same path: job folders, the dataset cache,
    # launch files and (unless storage_root says otherwise) the tenants' storage areas.
    shared_root: Path | None = None

    @property
    def shared(self) -> Path:
        """The shared root (the data dir unless set)."""
        return self.shared_root or self.data_dir

    @property
    def service_dirs(self) -> tuple[Path, ...]:
        """Directories of the service no tenant may name and no job may see."""
        extra = (self.shared_root,) if self.shared_root is not None else ()
        return (self.data_dir, *extra, *self.protected_dirs)

    @field_validator("data_dir", "storage_root", "inventory_path", "shared_root")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Jobs run in their own directories, so a relative data dir would mean another place.
        return value.absolute() if value is not None else None

    @field_validator("local_data_roots")
    @classmethod
    def _absolute_roots(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for root in value:
            if not root.startswith("/"):
                raise ValueError(f"local data root {root!r} is not an absolute path")
        return value

    @model_validator(mode="after")
    def _executor_settings(self) -> Self:
        if self.executor == "ray":
            if self.ray is None:
                raise ValueError(
                    "the Ray executor needs the Ray job server's address (SCAIMIND_RAY_ADDRESS)"
                )
            if self.inventory_path is not None:
                raise ValueError(
                    "the Ray executor reads its nodes from the Ray cluster; an inventory file "
                    "cannot be given with it"
                )
        return self

    @model_validator(mode="after")
    def _require_secret(self) -> Self:
        if not self.api_secret:
            if not self.allow_unauthenticated:
                raise ValueError(
                    "api_secret is required (set SCAIMIND_API_SECRET); running without one "
                    "needs allow_unauthenticated on a loopback host"
                )
            if not is_loopback(self.host):
                raise ValueError(
                    f"allow_unauthenticated is only permitted on a loopback host, not {self.host!r}"
                )
        return self
