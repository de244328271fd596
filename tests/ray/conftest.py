"""The Ray executor end to end: HTTP → real uvicorn gateway → gRPC → reference coordinator with
`executor=ray` → a real private Ray head (tests/ray/cluster.py) → the launcher → sandboxed jobs.

One head for the whole session (2 CPUs, so the coordinator's inventory is one node of 2 CPU
slots); each test gets its own coordinator and gateway on its own tmp dir. A coordinator's
clean stop leaves its Ray jobs running (they outlive it by design), so each test's teardown
stops whatever it left on the cluster before the next test gets the CPUs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray.job_submission import JobStatus

from scaimind.coordinator.config import CoordinatorConfig, RayConfig
from scaimind.coordinator.server import RunningCoordinator, start_coordinator
from scaimind.gateway.app import create_app
from tests.conftest import API_SECRET, gateway_settings, wait_for
from tests.e2e_jobs.conftest import Stack, job_files
from tests.ray.cluster import LocalRayHead
from tests.streams.conftest import serve

TERMINAL_RAY = {JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED}


@pytest.fixture(scope="session")
def ray_head() -> Iterator[LocalRayHead]:
    """A private Ray head: 2 CPUs, loopback only, stopped by its own pids at the end."""
    head = LocalRayHead(num_cpus=2)
    head.start()
    try:
        yield head
    finally:
        head.stop()
        left = head.pids()
        assert not left, f"Ray processes left behind: {left}"
        assert not head.temp_dir.exists()


def ray_jobs(head: LocalRayHead) -> dict[str, Any]:
    """Every Ray job of the head by submission id (what `ray job list` shows)."""
    return {j.submission_id: j for j in head.client().list_jobs() if j.submission_id}


def stop_ray_jobs(head: LocalRayHead, within: float = 60) -> None:
    """Stop every Ray job that still runs and wait until Ray says so (its CPUs are free then)."""
    client = head.client()
    deadline = time.monotonic() + within
    while True:
        running = [j for j in client.list_jobs() if j.status not in TERMINAL_RAY]
        if not running:
            return
        assert time.monotonic() < deadline, [(j.submission_id, j.status) for j in running]
        for job in running:
            if job.submission_id:
                client.stop_job(job.submission_id)
        time.sleep(0.5)


@dataclass
class RayStack:
    """A gateway on real uvicorn in front of a coordinator on the Ray head."""

    stack: Stack
    head: LocalRayHead
    coordinator: RunningCoordinator

    @property
    def root(self) -> Path:
        return self.stack.root


RayStackFactory = Callable[..., Awaitable[RayStack]]


def ray_config(head: LocalRayHead, root: Path, **overrides: Any) -> CoordinatorConfig:
    """A coordinator on the head; `root` is its tenants' local data root."""
    values: dict[str, Any] = {
        "data_dir": root / "coordinator",
        "api_secret": API_SECRET,
        "executor": "ray",
        "ray": RayConfig(address=head.address, inventory_seconds=1.0),
        "stop_grace_seconds": 10,
        "local_data_roots": (str(root),),
    }
    values.update(overrides)
    return CoordinatorConfig(**values)


async def open_ray_stack(
    exits: AsyncExitStack, head: LocalRayHead, tmp_path: Path, **overrides: Any
) -> RayStack:
    """Coordinator + gateway on `head`, stopped by `exits` (their Ray jobs with them)."""
    root = tmp_path / f"stack-{time.monotonic_ns()}"
    root.mkdir()
    exits.callback(stop_ray_jobs, head)
    coordinator = await start_coordinator(ray_config(head, root, **overrides))
    exits.push_async_callback(coordinator.stop, 1.0)
    settings = gateway_settings(root, coordinator.port, grpc_timeout_s=10.0)
    served = await serve(create_app(settings))
    exits.push_async_callback(served.stop)
    http = await exits.enter_async_context(
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}", timeout=30)
    )
    corpus, script = job_files(root)
    return RayStack(Stack(http, root, corpus, script), head, coordinator)


@pytest.fixture
async def make_ray_stack(ray_head: LocalRayHead, tmp_path: Path) -> AsyncIterator[RayStackFactory]:
    """Opens coordinators + gateways on the session's head; all stopped at the end."""
    async with AsyncExitStack() as exits:

        async def open_stack(**overrides: Any) -> RayStack:
            return await open_ray_stack(exits, ray_head, tmp_path, **overrides)

        yield open_stack


@pytest.fixture
async def ray_stack(make_ray_stack: RayStackFactory) -> RayStack:
    """One coordinator and gateway on the Ray head."""
    return await make_ray_stack()


async def wait_ray_status(
    head: LocalRayHead, submission_id: str, *statuses: JobStatus, within: float = 60
) -> Any:
    """Poll Ray until the job is in one of `statuses`."""

    def check() -> Any:
        job = ray_jobs(head).get(submission_id)
        return job if job is not None and job.status in statuses else None

    return await wait_for(check, within=within, interval=0.2)
