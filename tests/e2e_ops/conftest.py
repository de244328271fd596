"""The gateway (lifespan entered) in front of a real reference coordinator, over HTTP.

The coordinator is started with `start_coordinator` on port 0 (so each test chooses the
inventory and the dataset cache capacity) and shares the downstream token key with the gateway,
exactly as the embedded mode does; the gateway is the standalone app behind
`httpx.ASGITransport`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.server import RunningCoordinator, start_coordinator
from scaimind.gateway.app import create_app
from tests.conftest import API_SECRET, auth, gateway_settings, wait_for
from tests.gateway.conftest import app_client
from tests.trainer.conftest import write_corpus

PREFIX = "/v1/modules/scaimind"
DOWNSTREAM_KEY = "e2e-ops-downstream-token-key-0123456789abcdef"
NODE = "node-a"

# A CUSTOM job that steps until the file named by GATE exists (then exits 0); on SIGTERM it
# writes a checkpoint and exits 75, and it resumes from its checkpoint, as the contract asks.
GATED_SCRIPT = r"""
import json, os, signal, sys, time
from pathlib import Path

env = os.environ
metrics = open(env["SCAIMIND_METRICS_FILE"], "a")
ckpt = Path(env["SCAIMIND_CHECKPOINT_DIR"])
gate = Path(__file__).parent / Path(env["GATE"]).name
total = int(env.get("TOTAL_STEPS", "1000"))
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

def emit(obj):
    metrics.write(json.dumps(obj) + "\n")
    metrics.flush()

Path("environment.json").write_text(json.dumps(sorted(env)))
step = 0
resume = env.get("SCAIMIND_RESUME_CHECKPOINT", "")
if resume:
    step = json.loads((Path(resume) / "state.json").read_text())["step"]
while True:
    if stop:
        d = ckpt / f"step-{step:06d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "state.json").write_text(json.dumps({"step": step}))
        emit({"type": "checkpoint", "step": step, "path": str(d), "size_bytes": 10})
        sys.exit(75)
    step += 1
    emit({"type": "metrics", "step": step, "total_steps": total, "metrics": {"loss": 1.0 / step}})
    if gate.exists():
        break
    time.sleep(0.02)
"""


@dataclass
class Ops:
    """HTTP client of the gateway plus the coordinator behind it and a scratch directory."""

    http: httpx.AsyncClient
    coordinator: RunningCoordinator
    root: Path
    storage: Path
    corpus: Path
    script: Path

    async def submit(
        self,
        name: str = "job",
        *,
        tenant: str = "tenant-a",
        gate: Path | None = None,
        max_steps: int = 10,
        sources: list[dict[str, Any]] | None = None,
        max_retries: int = 0,
        validation_split: float = 0.0,
        expect: int = 201,
    ) -> dict[str, Any]:
        """POST /jobs: the built-in trainer, or the gated CUSTOM script when `gate` is given."""
        tc: dict[str, Any] = {
            "training_type": "SFT",
            "base_model": {"model_id": "meta-llama/Llama-3-8B"},
            "hyperparameters": {"max_steps": max_steps},
            "max_retries": max_retries,
        }
        if gate is not None:
            tc["framework"] = {"type": "CUSTOM", "custom_script_path": str(self.script)}
            tc["environment"] = {"GATE": str(gate)}
        body = {
            "name": name,
            "training_config": tc,
            "data_config": {
                "sources": sources or [{"path": str(self.corpus)}],
                "validation_split": validation_split,
            },
            "resource_config": {"gpu_count": 1, "gpu_type": "CPU"},
        }
        r = await self.http.post(f"{PREFIX}/jobs", json=body, headers=auth(tenant))
        assert r.status_code == expect, r.text
        return r.json()  # type: ignore[no-any-return]

    async def job(self, job_id: str, tenant: str = "tenant-a") -> dict[str, Any]:
        """GET /jobs/{id}."""
        r = await self.http.get(f"{PREFIX}/jobs/{job_id}", headers=auth(tenant))
        assert r.status_code == 200, r.text
        return r.json()["data"]  # type: ignore[no-any-return]

    async def wait_status(
        self, job_id: str, *statuses: str, within: float = 30.0, tenant: str = "tenant-a"
    ) -> dict[str, Any]:
        """Poll GET /jobs/{id} until it is in one of `statuses`."""

        async def check() -> dict[str, Any] | None:
            job = await self.job(job_id, tenant)
            return job if job["status"] in statuses else None

        return await wait_for(check, within=within)  # type: ignore[no-any-return]

    async def node(self, node_id: str = NODE) -> dict[str, Any]:
        """GET /cluster/nodes/{id}."""
        r = await self.http.get(f"{PREFIX}/cluster/nodes/{node_id}", headers=auth())
        assert r.status_code == 200, r.text
        return r.json()["data"]  # type: ignore[no-any-return]

    async def queue(self) -> dict[str, Any]:
        """GET /queue for the default queue."""
        r = await self.http.get(f"{PREFIX}/queue", params={"queue_name": "default"}, headers=auth())
        assert r.status_code == 200, r.text
        return r.json()["data"]["queues"][0]  # type: ignore[no-any-return]


OpsFactory = Callable[..., Awaitable[Ops]]


@pytest.fixture
async def make_ops(tmp_path: Path) -> AsyncIterator[OpsFactory]:
    """Starts coordinator + gateway (slots of one CPU node, cache capacity); closed at the end."""
    async with AsyncExitStack() as stack:

        async def open_ops(slots: int = 2, cache_capacity_bytes: int = 1 << 30) -> Ops:
            root = tmp_path / f"ops-{time.monotonic_ns()}"
            root.mkdir()
            inventory = root / "inventory.json"
            inventory.write_text(
                json.dumps(
                    [
                        {
                            "node_id": NODE,
                            "hostname": "a.local",
                            "gpu_type": "CPU",
                            "gpu_count": slots,
                        }
                    ]
                )
            )
            storage = root / "storage"
            coordinator = await start_coordinator(
                CoordinatorConfig(
                    data_dir=root / "coordinator",
                    api_secret=API_SECRET,
                    inventory_path=inventory,
                    storage_root=storage,
                    downstream_token_key=DOWNSTREAM_KEY,
                    dataset_cache_capacity_bytes=cache_capacity_bytes,
                    stop_grace_seconds=10,
                    local_data_roots=(str(root),),
                )
            )
            stack.push_async_callback(coordinator.stop, 1.0)
            settings = gateway_settings(
                root,
                coordinator.port,
                token_signing_key=DOWNSTREAM_KEY,
                grpc_timeout_s=10.0,
            )
            http = await stack.enter_async_context(
                app_client(create_app(settings), http_timeout_s=30)
            )
            script = root / "gated.py"
            script.write_text(GATED_SCRIPT)
            corpus = write_corpus(root / "corpus.jsonl", records=60)
            return Ops(http, coordinator, root, storage, corpus, script)

        yield open_ops


@pytest.fixture
async def ops(make_ops: OpsFactory) -> Ops:
    """Two slots, the default cache capacity."""
    return await make_ops()
