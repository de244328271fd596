"""Checks of SubmitJob / RetryJob requests; each failure names the offending field."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from scaimind.coordinator.data.paths import TenantFiles
from scaimind.coordinator.data.sources import resolve_source
from scaimind.coordinator.executors.inventory import CPU, NodeSpec
from scaimind.coordinator.jobenv import check_environment
from scaimind.coordinator.status import invalid
from scaimind.v1 import common_pb2, coordinator_pb2

SCRIPT_FIELD = "training_config.framework.custom_script_path"

MAX_NAME = 256
DEFAULT_PRIORITY = 5


def validate_submit(
    req: coordinator_pb2.SubmitJobRequest,
    nodes: Sequence[NodeSpec],
    files: TenantFiles,
    max_runtime_seconds: int = 0,
) -> None:
    """Raise INVALID_ARGUMENT for the first problem of a job definition.

    Every path is checked against the caller's local-path policy (`files`); scaidrive://
    denials are PERMISSION_DENIED. `max_runtime_seconds` is the operator's maximum (0 = none).
    """
    if not req.name.strip():
        raise invalid("name: is required")
    if len(req.name) > MAX_NAME:
        raise invalid(f"name: at most {MAX_NAME} characters")
    tc = req.training_config
    if not req.HasField("training_config"):
        raise invalid("training_config: is required")
    if tc.training_type == common_pb2.TRAINING_TYPE_UNSPECIFIED:
        raise invalid("training_config.training_type: is required")
    if tc.training_type not in common_pb2.TrainingType.values():
        raise invalid(f"training_config.training_type: unknown value {tc.training_type}")
    if not tc.base_model.model_id.strip():
        raise invalid("training_config.base_model.model_id: is required")
    if tc.framework.type not in common_pb2.FrameworkType.values():
        raise invalid(f"training_config.framework.type: unknown value {tc.framework.type}")
    if tc.framework.type == common_pb2.FRAMEWORK_TYPE_CUSTOM:
        script = tc.framework.custom_script_path
        if not script:
            raise invalid(
                "training_config.framework.custom_script_path: is required when type is CUSTOM"
            )
        check_script(files, script)
    if tc.max_retries < 0:
        raise invalid("training_config.max_retries: must be >= 0")
    if tc.HasField("priority") and not 0 <= tc.priority <= 10:
        raise invalid(f"training_config.priority: must be between 0 and 10, got {tc.priority}")
    check_environment(tc.environment)

    dc = req.data_config
    if not dc.sources:
        raise invalid("data_config.sources: at least one source is required")
    for i, source in enumerate(dc.sources):
        field = f"data_config.sources[{i}]"
        resolve_source(source, field, files)
        if not 0 <= source.sample_rate <= 1:
            raise invalid(f"{field}.sample_rate: must be in (0, 1]")
    if not 0.0 <= dc.validation_split < 1.0:
        raise invalid("data_config.validation_split: must be >= 0.0 and < 1.0")
    for name in ("max_seq_length", "batch_size", "gradient_accumulation_steps", "num_workers"):
        if getattr(dc, name) < 0:
            raise invalid(f"data_config.{name}: must be >= 0")

    validate_resources(req.resource_config, nodes, "resource_config")
    limit = req.resource_config.max_runtime_seconds
    if max_runtime_seconds and limit > max_runtime_seconds:
        raise invalid(
            f"resource_config.max_runtime_seconds: {limit} exceeds this coordinator's maximum "
            f"of {max_runtime_seconds} seconds (0 means that maximum)"
        )
    sc = req.scheduling_config
    known = {n.node_id for n in nodes}
    for node_id in sc.node_affinity:
        if node_id not in known:
            raise invalid(
                f"scheduling_config.node_affinity: unknown node {node_id!r} "
                f"(known: {', '.join(sorted(known))})"
            )
    if sc.max_queue_wait_seconds < 0:
        raise invalid("scheduling_config.max_queue_wait_seconds: must be >= 0")
    if eligible_nodes(req.resource_config, sc, nodes) == []:
        raise invalid(
            "resource_config: no node of the inventory matches gpu_type, node_selector "
            "and node_affinity"
        )

    oc = req.output_config
    if oc.checkpoint_interval_steps < 0:
        raise invalid("output_config.checkpoint_interval_steps: must be >= 0")
    if oc.keep_last_checkpoints < 0:
        raise invalid("output_config.keep_last_checkpoints: must be >= 0")
    for key in req.labels:
        if not key:
            raise invalid("labels: keys must not be empty")


def check_script(files: TenantFiles, raw: str) -> Path:
    """A CUSTOM script the caller may run: under its roots, opened without following a swapped
    symlink, executable or a `.py` file. Returns its resolved path."""
    real = files.resolve(raw, SCRIPT_FIELD)
    with files.open_file(real, SCRIPT_FIELD, raw) as fd:
        executable = bool(os.fstat(fd).st_mode & 0o111)
    if not executable and real.suffix != ".py":
        raise invalid(f"{SCRIPT_FIELD}: {raw} is neither an executable file nor a .py file")
    return real


def validate_resources(
    rc: common_pb2.ResourceConfig, nodes: Sequence[NodeSpec], field: str
) -> None:
    """Resource requests must be satisfiable by the inventory."""
    types = sorted({n.gpu_type for n in nodes})
    if rc.gpu_count < 0:
        raise invalid(f"{field}.gpu_count: must be >= 0")
    if rc.num_nodes < 0:
        raise invalid(f"{field}.num_nodes: must be >= 0")
    if rc.max_runtime_seconds < 0:
        raise invalid(f"{field}.max_runtime_seconds: must be >= 0")
    if rc.cpu_cores < 0 or rc.memory_gb < 0:
        raise invalid(f"{field}: cpu_cores and memory_gb must be >= 0")
    gpu_type = canonical_gpu_type(rc.gpu_type, nodes)
    if rc.gpu_type and gpu_type is None:
        raise invalid(f"{field}.gpu_type: unknown type {rc.gpu_type!r} (known: {', '.join(types)})")
    candidates = [n for n in nodes if gpu_type is None or n.gpu_type == gpu_type]
    if rc.gpu_count == 0:
        candidates = [n for n in candidates if n.gpu_type == CPU]
        if not candidates:
            raise invalid(
                f"{field}.gpu_count: must be at least 1 for GPU training "
                f"(inventory gpu types: {', '.join(types)})"
            )
    if not candidates:
        # Only an inventory that changes can be empty (a Ray cluster without worker nodes).
        raise invalid(
            f"{field}.gpu_type: no node of the inventory has {rc.gpu_type or 'any'} slots "
            f"(inventory gpu types: {', '.join(types) or 'none'})"
        )
    need = max(rc.gpu_count, 1)
    big_enough = [n for n in candidates if n.gpu_count >= need]
    if not big_enough:
        largest = max(n.gpu_count for n in candidates)
        raise invalid(
            f"{field}.gpu_count: {need} exceeds the largest matching node ({largest} slots)"
        )
    if max(rc.num_nodes, 1) > len(big_enough):
        raise invalid(
            f"{field}.num_nodes: {rc.num_nodes} exceeds the {len(big_enough)} matching node(s) "
            f"with {need} slots"
        )


def canonical_gpu_type(requested: str, nodes: Sequence[NodeSpec]) -> str | None:
    """The inventory's spelling of a gpu_type (case-insensitive), None when empty or unknown."""
    if not requested:
        return None
    for node in nodes:
        if node.gpu_type.casefold() == requested.casefold():
            return node.gpu_type
    return None


def eligible_nodes(
    rc: common_pb2.ResourceConfig, sc: common_pb2.SchedulingConfig, nodes: Sequence[NodeSpec]
) -> list[NodeSpec]:
    """Nodes a job may ever run on (ignoring their current state)."""
    gpu_type = canonical_gpu_type(rc.gpu_type, nodes)
    out = []
    for node in nodes:
        if gpu_type is not None and node.gpu_type != gpu_type:
            continue
        if rc.gpu_count == 0 and node.gpu_type != CPU:
            continue
        if any(node.labels.get(k) != v for k, v in rc.node_selector.items()):
            continue
        if sc.node_affinity and node.node_id not in sc.node_affinity:
            continue
        if node.gpu_count < max(rc.gpu_count, 1):
            continue
        out.append(node)
    return out


def priority_of(tc: common_pb2.TrainingConfig) -> int:
    """The job's priority (unset = 5)."""
    return tc.priority if tc.HasField("priority") else DEFAULT_PRIORITY
