"""Size of job list pages in the BASIC view (the default of GET /jobs) against the FULL view.

Trains 10 built-in-trainer jobs that checkpoint every step and keep every checkpoint (the case of
issue 11: a page of 10 jobs was 112 KB), then measures the JSON bodies of
- GET /jobs?page_size=10            (BASIC: latest_checkpoint and checkpoint_count, no list)
- GET /jobs?page_size=10&view=FULL  (every checkpoint: what every listing answered before)
- GET /jobs/{id}                    (FULL) and GET /jobs/{id}?view=BASIC
through the real gateway (lifespan entered) in front of a real reference coordinator.

Usage: .venv/bin/python bench/job_views.py [--jobs 10] [--steps 250]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.server import start_coordinator
from scaimind.gateway.app import create_app, lifespan
from scaimind.gateway.security.auth import mint_token
from scaimind.settings import Settings

PREFIX = "/v1/modules/scaimind"
SECRET = "bench-api-secret"
JWT = "bench-jwt-secret-0123456789abcdef0123456789"


def main(jobs: int, steps: int) -> None:
    with tempfile.TemporaryDirectory(prefix="scaimind-views-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        corpus = root / "train.jsonl"
        corpus.write_text(
            "".join(
                json.dumps({"prompt": f"{i}+{i}=", "completion": str(2 * i)}) + "\n"
                for i in range(50)
            )
        )
        asyncio.run(measure(root, corpus, jobs, steps))


async def measure(root: Path, corpus: Path, jobs: int, steps: int) -> None:
    """Train the jobs, then measure the bodies."""
    coordinator = await start_coordinator(
        CoordinatorConfig(
            data_dir=root / "coordinator",
            api_secret=SECRET,
            local_data_roots=(str(root),),
            stop_grace_seconds=10,
        )
    )
    settings = Settings(
        data_dir=root / "data",
        jwt_secret=JWT,
        api_secret=SECRET,
        grpc_host="127.0.0.1",
        grpc_port=coordinator.port,
        grpc_timeout_s=30,
        local_data_roots=str(root),
    )
    app = create_app(settings)
    headers = {
        "Authorization": "Bearer "
        + mint_token(JWT, tenant_id="bench", user_id="bench", role="tenant_admin", ttl_s=3600)
    }
    try:
        async with (
            lifespan(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=60
            ) as http,
        ):
            ids = []
            for i in range(jobs):
                body = {
                    "name": f"many-checkpoints-{i}",
                    "training_config": {
                        "training_type": "SFT",
                        "base_model": {"model_id": "meta-llama/Llama-3-8B"},
                        "hyperparameters": {"max_steps": steps},
                    },
                    "data_config": {"sources": [{"path": str(corpus)}]},
                    "resource_config": {"gpu_count": 1},
                    "output_config": {
                        "checkpoint_interval_steps": 1,
                        "keep_last_checkpoints": steps + 10,
                    },
                }
                r = await http.post(f"{PREFIX}/jobs", json=body, headers=headers)
                r.raise_for_status()
                ids.append(r.json()["data"]["job_id"])
            started = time.monotonic()
            while True:
                r = await http.get(f"{PREFIX}/jobs", params={"page_size": jobs}, headers=headers)
                listed = r.json()["data"]["jobs"]
                if all(j["status"] in ("COMPLETED", "FAILED") for j in listed):
                    break
                await asyncio.sleep(0.5)
            counts = [j["checkpoint_count"] for j in listed]
            print(
                f"{jobs} jobs of {steps} steps trained in {time.monotonic() - started:.0f} s; "
                f"checkpoints per job: {min(counts)}–{max(counts)}"
            )

            async def size(path: str, **params: object) -> int:
                r = await http.get(f"{PREFIX}{path}", params=params, headers=headers)
                r.raise_for_status()
                return len(r.content)

            basic = await size("/jobs", page_size=jobs)
            full = await size("/jobs", page_size=jobs, view="FULL")
            one_full = statistics.median([await size(f"/jobs/{i}") for i in ids])
            one_basic = statistics.median([await size(f"/jobs/{i}", view="BASIC") for i in ids])
            print(f"GET /jobs?page_size={jobs} (BASIC, default):  {basic / 1024:8.1f} KiB")
            print(f"GET /jobs?page_size={jobs}&view=FULL:         {full / 1024:8.1f} KiB")
            print(f"GET /jobs/{{id}} (FULL, default), median:      {one_full / 1024:8.1f} KiB")
            print(f"GET /jobs/{{id}}?view=BASIC, median:           {one_basic / 1024:8.1f} KiB")
    finally:
        await coordinator.stop(1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=250)
    args = parser.parse_args()
    main(args.jobs, args.steps)
