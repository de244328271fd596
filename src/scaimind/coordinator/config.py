"""Configuration of the reference coordinator."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

GIB = 1024**3


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    cluster_name: str = "local"
    # Queued + running jobs one tenant may have before SubmitJob answers RESOURCE_EXHAUSTED.
    tenant_queue_quota: Annotated[int, Field(ge=1)] = 10_000
    # How long a stop (pause, preemption, shutdown) waits for the checkpoint before SIGKILL.
    stop_grace_seconds: Annotated[float, Field(gt=0)] = 30.0

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
