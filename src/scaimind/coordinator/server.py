"""Start and stop the reference coordinator's gRPC server.

Shutdown (`RunningCoordinator.stop`, SIGINT/SIGTERM of `serve_forever`): no new work is placed,
every running job gets SIGTERM so it writes a checkpoint and exits, and is put back to QUEUED
with that checkpoint as its resume point (keeping its place in the queue, using no retry); a
job that does not exit within the grace period is SIGKILLed and re-queued from its latest
periodic checkpoint. The next start on the same data directory continues them. After a crash
(SIGKILL of the coordinator) the next start finds those jobs still marked running: they become
PREEMPTED ("coordinator restarted") and are retried automatically when max_retries allows.

With the Ray executor, job runs do not depend on the coordinator: a shutdown leaves them running,
and the next start (after a shutdown or a crash) adopts every one that Ray still has.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import signal
import sys
from dataclasses import dataclass
from typing import IO

import grpc

from scaimind.contract.private_files import (
    private_database,
    private_dir,
    secure_children,
    secure_tree,
)
from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.executors import ExecutorError, make_executor
from scaimind.coordinator.jobs.jobfiles import JOBS_AREA
from scaimind.coordinator.jobs.manager import JobManager
from scaimind.coordinator.jobs.runtime import Workload
from scaimind.coordinator.persistence.store import Store
from scaimind.coordinator.rpc.cluster_service import ClusterServicer
from scaimind.coordinator.rpc.coordinator_service import CoordinatorServicer
from scaimind.coordinator.workloads.evaluation import EVALUATION, EvaluationWorkload
from scaimind.coordinator.workloads.training import TRAINING, TrainingWorkload
from scaimind.v1 import cluster_pb2_grpc, coordinator_pb2_grpc

log = logging.getLogger(__name__)


class CoordinatorStartError(RuntimeError):
    """The coordinator cannot start (data dir in use, port taken, bad inventory)."""


@dataclass(eq=False)
class RunningCoordinator:
    """A started coordinator."""

    port: int
    address: str
    _server: grpc.aio.Server
    _manager: JobManager
    _store: Store
    _lock: IO[bytes]
    _stopped: bool = False

    @property
    def manager(self) -> JobManager:
        """The job manager (for embedding and tests)."""
        return self._manager

    async def stop(self, grace: float = 5.0) -> None:
        """Clean shutdown: running jobs checkpoint and go back to QUEUED (see module docstring)."""
        if self._stopped:
            return
        self._stopped = True
        self._manager.begin_shutdown()
        await self._server.stop(grace)
        await self._manager.wait_stopped(max(grace, self._manager.config.stop_grace_seconds))
        self._store.close()
        self._manager.ops.close()
        self._lock.close()


async def start_coordinator(config: CoordinatorConfig) -> RunningCoordinator:
    """Recover state, start the scheduler and listen; returns once the port is bound."""
    private_dir(config.data_dir)
    lock = (config.data_dir / "coordinator.lock").open("ab")
    try:
        # Two coordinators on one data dir would both run the same jobs. The kernel drops the
        # lock when the holder dies, so a crashed coordinator never blocks its successor.
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        lock.close()
        raise CoordinatorStartError(
            f"data dir {config.data_dir} is used by another coordinator"
        ) from e
    try:
        executor = make_executor(config)
    except ExecutorError as e:
        lock.close()
        raise CoordinatorStartError(str(e)) from e
    try:
        # The local inventory file, or the Ray cluster's nodes (its job server must answer).
        inventory = await executor.inventory()
    except (ValueError, ExecutorError) as e:
        await executor.close()
        lock.close()
        raise CoordinatorStartError(str(e)) from e
    store = Store(config.data_dir / "coordinator.db")
    # Job types and what runs them: the one place that knows every workload.
    workloads: dict[str, Workload] = {
        TRAINING: TrainingWorkload(),
        EVALUATION: EvaluationWorkload(),
    }
    manager = JobManager(config, list(inventory.nodes), store, workloads, executor)
    _secure(config, manager)
    await manager.sandbox.probe()
    if manager.sandbox.usable:
        log.info("job sandbox: bubblewrap at %s", manager.sandbox.bwrap)
    else:
        log.warning(
            "job sandbox unavailable: %s; built-in jobs run without it%s",
            manager.sandbox.problem,
            "" if config.sandbox.allow_unsandboxed else ", CUSTOM jobs are refused until it works",
        )
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(
        CoordinatorServicer(manager, config), server
    )
    cluster_pb2_grpc.add_ClusterServiceServicer_to_server(ClusterServicer(manager, config), server)
    try:
        port = server.add_insecure_port(f"{config.host}:{config.port}")
    except RuntimeError as e:
        await executor.close()
        manager.ops.close()
        store.close()
        lock.close()
        raise CoordinatorStartError(f"cannot listen on {config.host}:{config.port}: {e}") from e
    await manager.start()
    await server.start()
    host = f"[{config.host}]" if ":" in config.host else config.host
    return RunningCoordinator(
        port=port,
        address=f"{host}:{port}",
        _server=server,
        _manager=manager,
        _store=store,
        _lock=lock,
    )


def _secure(config: CoordinatorConfig, manager: JobManager) -> None:
    """File modes of the coordinator's data dir, fixed at every start (private_files.py)."""
    for name in ("coordinator.db", "ops.db"):
        private_database(config.data_dir / name)
    private_dir(manager.jobs_dir)
    secure_children(manager.jobs_dir)
    cache = private_dir(config.shared / "dataset-cache")
    secure_tree(cache)
    # Each job's artefacts folder in the storage areas (what is inside is the job's own).
    for area in manager.files.layout.storage_root.glob(f"*/{JOBS_AREA}"):
        private_dir(area)
        secure_children(area)


def serve_forever(config: CoordinatorConfig) -> int:
    """Run until SIGINT/SIGTERM, then shut down cleanly; prints the listening address."""

    async def main() -> int:
        try:
            running = await start_coordinator(config)
        except CoordinatorStartError as e:
            print(f"scaimind coordinator: {e}", file=sys.stderr)
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"scaimind coordinator listening on {running.address} (data dir {config.data_dir})",
            flush=True,
        )
        await stop.wait()
        print(
            "scaimind coordinator: stopping; running jobs checkpoint and are re-queued", flush=True
        )
        await running.stop()
        return 0

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main())
    return 0
