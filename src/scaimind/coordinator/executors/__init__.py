"""Where and how a job process runs: the sandbox (`sandbox.py`), the process and its output
(`process.py`), the node inventory (`inventory.py`), and the backends `local` (child processes of
the coordinator) or `ray` (Ray jobs) behind the `Executor` interface (`base.py`). Knows nothing of
job states or workloads: it runs a `ProcessSpec`.

`make_executor` is the one place that picks the backend from the configuration; the Ray client
is imported only when the Ray backend is chosen (it is the optional extra `scaimind[ray]`).
"""

from __future__ import annotations

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.executors.base import Executor, ExecutorError
from scaimind.coordinator.executors.local import LocalExecutor

__all__ = ["Executor", "ExecutorError", "make_executor"]


def make_executor(config: CoordinatorConfig) -> Executor:
    """The executor the configuration names; ExecutorError when it cannot be used here."""
    if config.executor == "local":
        return LocalExecutor(config.inventory_path)
    assert config.ray is not None  # CoordinatorConfig requires it for "ray"
    try:
        from scaimind.coordinator.executors.ray import RayExecutor
    except ImportError as e:
        raise ExecutorError(
            "SCAIMIND_EXECUTOR=ray needs the Ray client: install scaimind[ray] "
            f"({type(e).__name__}: {e})"
        ) from e
    return RayExecutor(config.ray, config.shared)
