"""A real reference coordinator with the gateway on real uvicorn, and a slow-logging CUSTOM job."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.server import RunningCoordinator, start_coordinator
from scaimind.gateway.app import create_app
from scaimind.v1 import coordinator_pb2, coordinator_pb2_grpc
from tests.conftest import API_SECRET, auth, gateway_settings, wait_for
from tests.streams.conftest import Served, serve

# Prints LINES lines on stdout (INFO), every third also a line on stderr (WARNING), and a DEBUG
# line plus a metric point per step through the metrics file. With GATE set it waits for that
# file before every step past GATE_AT, so tests decide when the job moves on.
LOGGING_SCRIPT = r"""
import json, os, sys, time
env = os.environ
metrics = open(env["SCAIMIND_METRICS_FILE"], "a")
lines = int(env.get("LINES", "10"))
pause = float(env.get("PAUSE", "0"))
gate = env.get("GATE", "")
gate = os.path.join(os.path.dirname(__file__), os.path.basename(gate)) if gate else ""
gate_at = int(env.get("GATE_AT", "0"))
for i in range(1, lines + 1):
    while gate and i > gate_at and not os.path.exists(gate):
        time.sleep(0.01)
    print(f"line {i}", flush=True)
    if i % 3 == 0:
        print(f"warn {i}", file=sys.stderr, flush=True)
    metrics.write(json.dumps({"type": "log", "level": "DEBUG", "message": f"debug {i}"}) + "\n")
    metrics.write(json.dumps({"step": i, "loss": 10.0 / i, "learning_rate": 0.001,
                              "total_steps": lines}) + "\n")
    metrics.flush()
    if pause:
        time.sleep(pause)
print("script done", flush=True)
"""

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


@dataclass
class Live:
    """Coordinator + gateway + helpers for one test."""

    tmp: Path
    coordinator: RunningCoordinator | None = None
    gateway: Served | None = None
    script: Path = field(init=False)
    corpus: Path = field(init=False)

    def __post_init__(self) -> None:
        self.tmp.chmod(0o755)  # the script's folder is read by the sandboxed job's user
        self.script = self.tmp / "logger.py"
        self.script.write_text(LOGGING_SCRIPT)
        self.corpus = self.tmp / "corpus.jsonl"
        self.corpus.write_text(
            "".join(json.dumps({"text": f"sample {i}"}) + "\n" for i in range(10))
        )

    async def start_coordinator(self) -> RunningCoordinator:
        """Start (or restart) the reference coordinator on the test's data dir."""
        self.coordinator = await start_coordinator(
            CoordinatorConfig(
                data_dir=self.tmp / "coordinator",
                api_secret=API_SECRET,
                local_data_roots=(str(self.tmp),),
            )
        )
        return self.coordinator

    async def start_gateway(self, port: int = 0, **overrides: Any) -> Served:
        """Start the gateway on real uvicorn in front of the coordinator."""
        assert self.coordinator is not None
        settings = gateway_settings(
            self.tmp,
            self.coordinator.port,
            **overrides,
        )
        self.gateway = await serve(create_app(settings), port)
        return self.gateway

    async def stop(self) -> None:
        """Stop whatever is running."""
        if self.gateway is not None:
            await self.gateway.stop()
            self.gateway = None
        if self.coordinator is not None:
            await self.coordinator.stop()
            self.coordinator = None

    @property
    def url(self) -> str:
        """Module base URL of the running gateway."""
        assert self.gateway is not None
        return self.gateway.url

    def gate(self, name: str) -> Path:
        """Path of a gate file (create it to let the job go on)."""
        return self.tmp / f"gate-{name}"

    async def submit(
        self, lines: int = 10, gate: str = "", gate_at: int = 0, pause: float = 0.0
    ) -> str:
        """Submit the logging CUSTOM job through the gateway; returns the job id."""
        environment = {"LINES": str(lines), "PAUSE": str(pause)}
        if gate:
            environment |= {"GATE": str(self.gate(gate)), "GATE_AT": str(gate_at)}
        body = {
            "name": "stream-test",
            "training_config": {
                "training_type": "SFT",
                "base_model": {"model_id": "tiny"},
                "framework": {"type": "CUSTOM", "custom_script_path": str(self.script)},
                "environment": environment,
            },
            "data_config": {"sources": [{"path": str(self.corpus), "format": "jsonl"}]},
            "resource_config": {"gpu_count": 1},
        }
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{self.url}/jobs", json=body, headers=auth())
        assert r.status_code == 201, r.text
        job_id: str = r.json()["data"]["job_id"]
        return job_id

    async def status(self, job_id: str) -> str:
        """The job's status through the gateway."""
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{self.url}/jobs/{job_id}", headers=auth())
        assert r.status_code == 200, r.text
        status: str = r.json()["data"]["status"]
        return status

    async def wait_status(self, job_id: str, *statuses: str, within: float = 30.0) -> str:
        """Wait until the job is in one of `statuses`."""

        async def check() -> str | None:
            s = await self.status(job_id)
            return s if s in statuses else None

        result: str = await wait_for(check, within=within)
        return result

    async def wait_log(self, job_id: str, message: str, within: float = 30.0) -> None:
        """Wait until the coordinator holds a log line with this message."""

        async def check() -> bool:
            return any(e.message == message for e in await self.direct_logs(job_id, level=1))

        await wait_for(check, within=within)

    async def direct_logs(
        self, job_id: str, *, level: int = 2, tail: int = 10_000, after_seq: int | None = None
    ) -> list[coordinator_pb2.LogEntry]:
        """The job's log read straight from the coordinator (follow=false)."""
        assert self.coordinator is not None
        req = coordinator_pb2.StreamJobLogsRequest(
            job_id=job_id,
            follow=False,
            min_level=level,
            tail=tail,  # type: ignore[arg-type]
        )
        if after_seq is not None:
            req.after_seq = after_seq
        md = (("x-api-secret", API_SECRET), ("x-tenant-id", "tenant-a"))
        async with grpc.aio.insecure_channel(self.coordinator.address) as channel:
            stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
            return [
                m.entry
                async for m in stub.StreamJobLogs(req, metadata=md, timeout=10)
                if m.HasField("entry")
            ]
