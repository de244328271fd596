"""The job lifecycle end to end: HTTP → gateway → gRPC → reference coordinator → real processes.

`Stack` is the standalone gateway (lifespan entered, behind `httpx.ASGITransport`) in front of
a reference coordinator started with `start_coordinator` on port 0 with an inventory file
chosen by the test (1 slot makes queueing, priority and preemption observable). Jobs are either
the built-in trainer or the controllable CUSTOM script of the coordinator tests (gates, failure
step, SIGTERM checkpoint). Everything is observed through the HTTP API only; the restart and
`scaimind serve` tests run the coordinator / the server as real subprocesses instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.server import start_coordinator
from scaimind.gateway.app import create_app, lifespan
from scaimind.settings import Settings
from tests.conftest import API_SECRET, auth, gateway_settings, wait_for
from tests.coordinator.conftest import CUSTOM_SCRIPT, write_corpus

PREFIX = "/v1/modules/scaimind"
NODE = "node-a"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
FAR_FUTURE = "2099-01-01T00:00:00Z"

# Real training processes on a loaded machine: a roomier coordinator deadline than unit tests.
E2E_GRPC_TIMEOUT_S = 10.0


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without SCAIMIND_* settings, plus `extra` (for subprocesses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCAIMIND_")}
    env.update(extra)
    return env


class ChildProcess:
    """A long-running child (coordinator or serve) that a test signals and restarts."""

    proc: asyncio.subprocess.Process | None = None

    async def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    async def terminate(self, within: float = 30) -> int:
        """SIGTERM; the exit code, which must come within `within` seconds."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout=within)

    async def reap(self) -> None:
        """Kill it if a test left it running."""
        if self.proc is not None and self.proc.returncode is None:
            await self.kill()


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp of the API (asserting its shape) as an aware datetime."""
    assert RFC3339.match(value), value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    return parsed


def inventory(path: Path, slots: int) -> Path:
    """A one-node CPU inventory file with `slots` slots."""
    node = {"node_id": NODE, "hostname": "a.local", "gpu_type": "CPU", "gpu_count": slots}
    path.write_text(json.dumps([node]))
    return path


def parse_sse(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of a complete SSE body; comments are skipped."""
    events: list[tuple[str, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


@dataclass
class Stack:
    """An HTTP client of the gateway, plus the files its jobs use."""

    http: httpx.AsyncClient
    root: Path
    corpus: Path
    script: Path
    # Authorization headers for a tenant (a serve process has its own signing secret).
    authorize: Callable[[str], dict[str, str]] = auth

    def gate(self, name: str) -> Path:
        """A gate file path (not created): CUSTOM jobs wait for it past GATE_STEP."""
        return self.root / f"gate-{name}"

    def host_path(self, uri: str) -> Path:
        """Where a scaidrive://<tenant>/<path> of the coordinator lives on the host."""
        tenant, _, rel = uri.removeprefix("scaidrive://").partition("/")
        return self.root / "coordinator" / "storage" / tenant / rel

    def body(
        self,
        name: str = "job",
        *,
        env: Mapping[str, str] | None = None,
        custom: bool = True,
        hyperparameters: Mapping[str, Any] | None = None,
        priority: int = 5,
        preemptible: bool = False,
        max_retries: int = 0,
        labels: Mapping[str, str] | None = None,
        start_after: str = "",
        checkpoint_interval_steps: int = 0,
        validation_split: float = 0.0,
    ) -> dict[str, Any]:
        """A POST /jobs body: the CUSTOM script (default) or the built-in trainer."""
        tc: dict[str, Any] = {
            "training_type": "SFT",
            "base_model": {"model_id": "meta-llama/Llama-3-8B"},
            "hyperparameters": dict(hyperparameters or {"max_steps": 20}),
            "priority": priority,
            "max_retries": max_retries,
        }
        if custom:
            tc["framework"] = {"type": "CUSTOM", "custom_script_path": str(self.script)}
            tc["environment"] = {"STEP_SECONDS": "0", **(env or {})}
        body: dict[str, Any] = {
            "name": name,
            "training_config": tc,
            "data_config": {
                "sources": [{"path": str(self.corpus), "format": "jsonl"}],
                "validation_split": validation_split,
            },
            "resource_config": {"gpu_count": 1, "gpu_type": "CPU"},
            "scheduling_config": {"preemptible": preemptible},
            "labels": dict(labels or {}),
        }
        if start_after:
            body["scheduling_config"]["start_after"] = start_after
        if checkpoint_interval_steps:
            body["output_config"] = {"checkpoint_interval_steps": checkpoint_interval_steps}
        return body

    async def submit(self, body: dict[str, Any], tenant: str = "tenant-a", **headers: str) -> str:
        """POST /jobs (201 expected); returns the job id."""
        r = await self.http.post(
            f"{PREFIX}/jobs", json=body, headers={**self.authorize(tenant), **headers}
        )
        assert r.status_code == 201, r.text
        data = r.json()["data"]
        assert data["job_id"].startswith("job_")
        return str(data["job_id"])

    async def job(self, job_id: str, tenant: str = "tenant-a") -> dict[str, Any]:
        """GET /jobs/{id} (200 expected)."""
        r = await self.http.get(f"{PREFIX}/jobs/{job_id}", headers=self.authorize(tenant))
        assert r.status_code == 200, r.text
        return r.json()["data"]  # type: ignore[no-any-return]

    async def wait(
        self,
        job_id: str,
        *statuses: str,
        step: int | None = None,
        check: Callable[[dict[str, Any]], bool] | None = None,
        within: float = 30.0,
    ) -> dict[str, Any]:
        """Poll GET /jobs/{id} until it is in one of `statuses` (at `step`, satisfying `check`)."""

        async def ready() -> dict[str, Any] | None:
            job = await self.job(job_id)
            if statuses and job["status"] not in statuses:
                # A terminal state that is not awaited will never change: fail at once.
                assert job["status"] not in TERMINAL, (job["status"], job["error"])
                return None
            if step is not None and job["progress"]["current_step"] != step:
                return None
            return job if check is None or check(job) else None

        return await wait_for(ready, within=within)  # type: ignore[no-any-return]

    async def action(
        self, job_id: str, verb: str, body: dict[str, Any] | None = None, tenant: str = "tenant-a"
    ) -> httpx.Response:
        """POST /jobs/{id}/{verb}."""
        return await self.http.post(
            f"{PREFIX}/jobs/{job_id}/{verb}", json=body, headers=self.authorize(tenant)
        )

    async def ok(self, job_id: str, verb: str, body: dict[str, Any] | None = None) -> Any:
        """POST /jobs/{id}/{verb}, 200 expected; the `data` payload."""
        r = await self.action(job_id, verb, body)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    async def list_jobs(self, tenant: str = "tenant-a", **params: Any) -> dict[str, Any]:
        """GET /jobs with query parameters (lists become repeated parameters)."""
        r = await self.http.get(f"{PREFIX}/jobs", params=params, headers=self.authorize(tenant))
        assert r.status_code == 200, r.text
        return r.json()["data"]  # type: ignore[no-any-return]

    async def all_jobs(self, tenant: str = "tenant-a", **params: Any) -> list[dict[str, Any]]:
        """Every job of a listing, walking the pages."""
        jobs: list[dict[str, Any]] = []
        token = ""
        while True:
            page = await self.list_jobs(tenant, page_size=100, page_token=token, **params)
            jobs.extend(page["jobs"])
            token = page["next_page_token"]
            if not token:
                return jobs

    async def losses(self, job_id: str) -> list[tuple[int, float]]:
        """(step, value) of the job's whole `loss` series from GET /jobs/{id}/metrics."""
        r = await self.http.get(
            f"{PREFIX}/jobs/{job_id}/metrics",
            params={"max_points": 100_000},
            headers=self.authorize("tenant-a"),
        )
        assert r.status_code == 200, r.text
        series = {s["name"]: s["points"] for s in r.json()["data"]["series"]}
        return [(p["step"], p["value"]) for p in series["loss"]]

    async def logs(self, job_id: str, tenant: str = "tenant-a") -> list[dict[str, Any]]:
        """Every log entry of the job (GET /jobs/{id}/logs?follow=false), ending in `end`."""
        r = await self.http.get(
            f"{PREFIX}/jobs/{job_id}/logs",
            params={"follow": "false", "tail": 10_000, "level": "DEBUG"},
            headers=self.authorize(tenant),
        )
        assert r.status_code == 200, r.text
        events = parse_sse(r.text)
        assert [e for e, _ in events[-2:]] == ["end", "message"], events[-3:]
        assert events[-1][1] == "[DONE]"
        return [json.loads(d) for e, d in events if e == "log"]

    async def messages(self, job_id: str) -> list[str]:
        """The messages of every log entry of the job."""
        return [e["message"] for e in await self.logs(job_id)]


StackFactory = Callable[..., Awaitable[Stack]]


async def open_gateway(stack: AsyncExitStack, settings: Settings) -> httpx.AsyncClient:
    """The standalone app for `settings` with its lifespan entered, behind an httpx client."""
    app = create_app(settings)
    await stack.enter_async_context(lifespan(app))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return await stack.enter_async_context(
        httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30)
    )


def job_files(root: Path) -> tuple[Path, Path]:
    """The corpus and the CUSTOM script under root (readable by the sandboxed job's user)."""
    root.chmod(0o755)
    script = root / "train.py"
    script.write_text(CUSTOM_SCRIPT)
    return write_corpus(root / "corpus.jsonl"), script


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    """Starts coordinator (one CPU node of `slots` slots) + gateway; both stopped at the end."""
    async with AsyncExitStack() as stack:

        async def open_stack(slots: int = 2) -> Stack:
            root = tmp_path / f"stack-{time.monotonic_ns()}"
            root.mkdir()
            coordinator = await start_coordinator(
                CoordinatorConfig(
                    data_dir=root / "coordinator",
                    api_secret=API_SECRET,
                    inventory_path=inventory(root / "inventory.json", slots),
                    stop_grace_seconds=10,
                    local_data_roots=(str(root),),
                )
            )
            stack.push_async_callback(coordinator.stop, 1.0)
            settings = gateway_settings(root, coordinator.port, grpc_timeout_s=E2E_GRPC_TIMEOUT_S)
            http = await open_gateway(stack, settings)
            corpus, script = job_files(root)
            return Stack(http, root, corpus, script)

        yield open_stack


@pytest.fixture
async def one_slot(make_stack: StackFactory) -> Stack:
    """A 1-slot inventory: one job runs at a time."""
    return await make_stack(slots=1)


@pytest.fixture
async def two_slots(make_stack: StackFactory) -> Stack:
    """A 2-slot inventory."""
    return await make_stack(slots=2)
