"""The executor interface: how a prepared job process runs somewhere and comes back as events.

The job manager owns states, the scheduler and its slot table, stop reasons, retries, timers and
the log store; a workload (training, evaluation) describes its process as a `ProcessSpec`. An
executor takes that spec for one attempt of one job and runs it: as a child process of the
coordinator (`local`, local.py) or as a Ray job (`ray`, ray.py). Output and contract events come
back through the workload's `OutputSink`, unchanged, so logs keep their `seq`, levels and SSE
behaviour and metrics their protocol whatever runs the job.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from scaimind.coordinator.executors.inventory import NodeSpec
from scaimind.coordinator.executors.process import OutputSink, ProcessSpec

if TYPE_CHECKING:
    # Not at run time: the launcher on a Ray node imports this module and needs no protobuf.
    from scaimind.v1 import common_pb2


class ExecutorError(Exception):
    """An attempt could not be started or reached; the message is safe to show to the tenant."""


@dataclass(frozen=True, slots=True)
class Placement:
    """What the scheduler decided for one attempt: where, and how much of what."""

    node_ids: tuple[str, ...]
    gpu_type: str  # the inventory's spelling; "CPU" for CPU slots
    slots_per_node: int  # GPUs per node, or CPU slots for a CPU job
    cpu_cores: int = 0  # resource_config.cpu_cores (0 = not asked)
    memory_bytes: int = 0  # resource_config.memory_gb in bytes (0 = not asked)


@dataclass(frozen=True)
class LaunchSpec:
    """One attempt of one job: the prepared process plus identity and placement."""

    process: ProcessSpec
    job_id: str
    attempt: int
    tenant_id: str
    placement: Placement
    labels: Mapping[str, str] = field(default_factory=dict)
    # How long a stop (pause, preemption) waits for the checkpoint before the process is killed.
    stop_grace_seconds: float = 30.0


@dataclass(eq=False)
class RunHandle:
    """A started (or adopted) attempt. The manager persists `run_id` and `delivered`."""

    run_id: str  # "<executor kind>:<its own id>", e.g. "local:4242:98765" or "ray:job_…-a1"
    job_id: str
    attempt: int
    label: str  # what the job's log calls it: "process 4242", "Ray job job_…-a1"
    node_id: str = ""
    # Output records already handed to the sink (a re-attached follower skips them).
    delivered: int = 0
    adopted: bool = False
    # When the attempt started (epoch seconds); an adopted attempt keeps its runtime limit.
    started_at: float = 0.0
    # How the process sees its files (to map the paths it reports back to the host).
    process: ProcessSpec | None = None
    # The last lines the process printed ("[stdout] …"), for error.message.
    output_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))


@dataclass(frozen=True, slots=True)
class RunExit:
    """How an attempt ended."""

    # Exit code; negative = killed by that signal; None = the process never ran or was lost.
    code: int | None
    lost: bool = False  # the backend lost it (node died, cluster restarted, job deleted)
    # Withdrawn before it ran (the cluster kept it waiting): the job goes back to its queue.
    withdrawn: bool = False
    detail: str = ""  # one line for status_message: no server path, no traceback


@dataclass(frozen=True)
class Inventory:
    """The nodes an executor can run jobs on now. `busy` ones are up but take no new work for
    the moment (on Ray: busy with work the coordinator did not start)."""

    nodes: list[NodeSpec]
    busy: frozenset[str] = frozenset()


StartedCallback = Callable[[RunHandle], None]


class Executor(Protocol):
    """Runs attempts. Coroutines run on the coordinator's loop; the plain methods never block."""

    kind: str  # "local" | "ray"
    # True when runs outlive the coordinator: a clean stop leaves them running and the next
    # start adopts them (Ray). False: a stop checkpoints them, a crash loses them (local).
    keeps_running: bool
    # > 0: the inventory changes and is read again this often (seconds).
    refresh_seconds: float

    async def inventory(self) -> Inventory:
        """The nodes and their slots."""
        ...

    def check_resources(self, rc: common_pb2.ResourceConfig, field: str) -> None:
        """INVALID_ARGUMENT for a resource request this executor can never run."""
        ...

    def planned_run_id(self, job_id: str, attempt: int) -> str:
        """The run id an attempt will have, when it is known before the start ('' if not):
        persisted first, so a crash during the start still finds the run."""
        ...

    async def start(self, spec: LaunchSpec) -> RunHandle:
        """Launch the attempt (idempotent per job and attempt); ExecutorError when it cannot."""
        ...

    async def follow(
        self,
        run: RunHandle,
        sink: OutputSink,
        on_started: StartedCallback,
        on_progress: StartedCallback | None = None,
    ) -> RunExit:
        """Deliver output and events until the attempt ended and everything is read.

        `on_started` fires once the process runs; `on_progress` after each delivered batch, so
        the caller persists `run.delivered` right after what the sink stored.
        """
        ...

    def stop(self, run: RunHandle, grace: float) -> None:
        """Ask for checkpoint-and-stop (SIGTERM), and kill after `grace` seconds."""
        ...

    def kill(self, run: RunHandle) -> None:
        """Stop now (cancel; or the grace ran out)."""
        ...

    def stats(self, run: RunHandle) -> dict[str, float]:
        """cpu_percent and memory_used_bytes when the executor can tell (else empty)."""
        ...

    def release(self, run: RunHandle) -> None:
        """The attempt is settled: drop timers and files kept for it."""
        ...

    async def adopt(self, run_id: str, job_id: str, delivered: int) -> RunHandle | None:
        """After a coordinator restart: a handle to the job's run if it still exists (it is
        followed from `delivered` on), else None."""
        ...

    def discard(self, run_id: str) -> None:
        """A run of a previous coordinator that is not adopted: end what is left of it."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


def kind_of(run_id: str) -> str:
    """The executor kind of a persisted run id ('' when none)."""
    return run_id.split(":", 1)[0] if ":" in run_id else ""


def os_message(e: OSError) -> str:
    """An OSError for the job's view: our own message, or the reason without the server path."""
    if e.filename is not None or e.filename2 is not None:
        return f"cannot prepare the job's files ({e.strerror})"
    return str(e)


class TrackedTasks:
    """Fire-and-forget work of an executor (a stop request over HTTP), kept until it ends."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, within: float) -> None:
        """Wait (at most `within` seconds) for what is still running."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)
