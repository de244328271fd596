"""The `scaimind` console script against a real `scaimind serve` (one per test module).

Every remote command runs as a subprocess of the installed console script, exactly as a user
or a CI job runs it, against a `scaimind serve` process on a free port with its own data dir
(the `Serve` of tests/e2e_jobs/test_serve_e2e.py). Jobs are the built-in trainer or the
controllable CUSTOM script of the coordinator tests (FAIL_AT, GATE, STEP_SECONDS).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.e2e_jobs.conftest import clean_env, job_files
from tests.e2e_jobs.test_serve_e2e import Serve, scaimind_command


@dataclass
class Result:
    """A finished `scaimind` run."""

    code: int
    out: str
    err: str
    seconds: float

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.out)


def scaimind(
    *args: str,
    url: str | None = None,
    token: str | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 90,
) -> Result:
    """Run the console script with SCAIMIND_URL / SCAIMIND_TOKEN (and nothing else) set."""
    extra = dict(env or {})
    if url is not None:
        extra["SCAIMIND_URL"] = url
    if token is not None:
        extra["SCAIMIND_TOKEN"] = token
    started = time.monotonic()
    proc = subprocess.run(
        [*scaimind_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=clean_env(**extra),
    )
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


@dataclass
class Server:
    """A running `scaimind serve` and what the tests need to use it."""

    url: str
    token: str
    data_dir: Path
    root: Path
    corpus: Path
    script: Path

    def run(self, *args: str, **kwargs: Any) -> Result:
        """`scaimind ARGS` against this server with its token."""
        kwargs.setdefault("url", self.url)
        kwargs.setdefault("token", self.token)
        return scaimind(*args, **kwargs)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        """`run`, asserting exit status 0."""
        result = self.run(*args, **kwargs)
        assert result.code == 0, (args, result.code, result.err)
        return result

    def job_file(self, name: str, body: Mapping[str, Any]) -> Path:
        """Write a job spec under the server's root; returns its path."""
        path = self.root / f"{name}.json"
        path.write_text(json.dumps(body))
        return path

    def builtin_job(self, name: str = "builtin", steps: int = 30, **labels: str) -> dict[str, Any]:
        """A POST /jobs body for the built-in trainer."""
        return {
            "name": name,
            "labels": labels,
            "training_config": {
                "training_type": "SFT",
                "base_model": {"model_id": "meta-llama/Llama-3-8B"},
                "hyperparameters": {"max_steps": steps, "seed": 1},
            },
            "data_config": {"sources": [{"path": str(self.corpus), "format": "jsonl"}]},
            "resource_config": {"gpu_count": 1},
        }

    def custom_job(self, name: str = "custom", **env: str) -> dict[str, Any]:
        """A POST /jobs body for the CUSTOM script (TOTAL_STEPS, STEP_SECONDS, FAIL_AT, GATE…)."""
        body = self.builtin_job(name)
        body["training_config"]["framework"] = {
            "type": "CUSTOM",
            "custom_script_path": str(self.script),
        }
        body["training_config"]["environment"] = {"STEP_SECONDS": "0", **env}
        return body

    def submit(self, body: Mapping[str, Any]) -> str:
        """`scaimind jobs submit FILE` → the job id it prints."""
        result = self.ok("jobs", "submit", str(self.job_file(str(body["name"]), body)))
        job_id = result.out.strip()
        assert job_id.startswith("job_"), result.out
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        """`scaimind jobs get JOB --json`."""
        job: dict[str, Any] = self.ok("jobs", "get", job_id, "--json").json()
        return job

    def poll_job(self, job_id: str, ready: Any, within: float = 60) -> dict[str, Any]:
        """`jobs get --json` until `ready(job)` holds (or fail after `within` seconds)."""
        deadline = time.monotonic() + within
        job = self.job(job_id)
        while not ready(job):
            assert time.monotonic() < deadline, f"not ready in {within}s: {job['status']}"
            job = self.job(job_id)
        return job


@asynccontextmanager
async def running_server(root: Path, **env: str) -> AsyncIterator[Server]:
    """`scaimind serve` on a data dir under `root` (with extra SCAIMIND_* `env`)."""
    serve = Serve(root, **env)
    try:
        url = await serve.start()
        corpus, script = job_files(root)
        yield Server(url, serve.token(), serve.data_dir, root, corpus, script)
        assert await serve.terminate(within=30) == 0
    finally:
        await serve.reap()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One `scaimind serve` for the test module, stopped (SIGTERM) at the end."""
    async with running_server(tmp_path_factory.mktemp("cli")) as running:
        yield running
