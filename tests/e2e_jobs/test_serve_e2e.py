"""`scaimind serve` as a real process: SIGTERM shuts it down cleanly and loses no job."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for

from .conftest import PREFIX, ChildProcess, Stack, clean_env, job_files


def scaimind_command() -> list[str]:
    """The installed console script (or the module when it is not installed)."""
    script = Path(sys.executable).parent / "scaimind"
    return [str(script)] if script.exists() else [sys.executable, "-m", "scaimind.cli"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve(ChildProcess):
    """`scaimind serve --data-dir D` runs, one after another, on that data dir."""

    def __init__(self, root: Path, **env: str) -> None:
        self.env = env  # extra SCAIMIND_* settings of the server
        self.data_dir = root / "data"
        self.output = root / "serve.log"
        self.url = ""

    async def start(self) -> str:
        """Start serve on a free port and wait until it is ready; returns the base URL."""
        port = free_port()
        with self.output.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *scaimind_command(),
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(self.data_dir),
                env=clean_env(
                    SCAIMIND_LOG_LEVEL="WARNING",
                    SCAIMIND_LOCAL_DATA_ROOTS=str(self.data_dir.parent),
                    **self.env,
                ),
                stdout=out,
                stderr=out,
            )
        self.url = f"http://127.0.0.1:{port}"
        proc = self.proc

        async def ready() -> bool:
            assert proc.returncode is None, self.output.read_text()
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    r = await client.get(f"{self.url}/health/ready")
            except httpx.TransportError:
                return False
            return r.status_code == 200

        await wait_for(ready, within=30, interval=0.1)
        return self.url

    def token(self) -> str:
        """A bearer token minted by `scaimind token` for this data dir."""
        result = subprocess.run(
            [
                *scaimind_command(),
                "token",
                "--data-dir",
                str(self.data_dir),
                "--tenant",
                "tenant-a",
                "--user",
                "user-1",
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.strip()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """A Serve whose process is killed at the end if still running."""
    s = Serve(tmp_path)
    try:
        yield s
    finally:
        await s.reap()


async def test_sigterm_exits_zero_and_the_next_serve_finishes_the_jobs(
    tmp_path: Path, serve: Serve
) -> None:
    url = await serve.start()
    headers = {"Authorization": f"Bearer {await asyncio.to_thread(serve.token)}"}

    def authorize(tenant: str) -> dict[str, str]:
        assert tenant == "tenant-a"
        return headers

    corpus, script = job_files(tmp_path)
    gate = tmp_path / "gate"
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        s = Stack(http, tmp_path, corpus, script, authorize)
        # A CUSTOM job held at step 4 (its periodic checkpoints are every 10 steps, so only
        # the SIGTERM checkpoint can carry it over), and a long-ish built-in trainer job.
        custom = await s.submit(
            s.body(
                "custom",
                env={"GATE": str(gate), "GATE_STEP": "4", "TOTAL_STEPS": "8", "CKPT_EVERY": "10"},
            ),
        )
        builtin = await s.submit(
            s.body(
                "builtin",
                custom=False,
                # Long enough that the SIGTERM below always finds it training.
                hyperparameters={"max_steps": 1000, "seed": 5},
                checkpoint_interval_steps=1000,
            )
        )
        await s.wait(custom, "TRAINING", step=4)
        at_sigterm = await s.wait(
            builtin, "TRAINING", check=lambda j: j["progress"]["current_step"] >= 10
        )
        assert at_sigterm["checkpoints"] == []
        assert (await s.job(custom))["checkpoints"] == []

        # A dashboard following the logs must not hold the shutdown open.
        logs = f"{PREFIX}/jobs/{custom}/logs"
        async with http.stream("GET", logs, headers=headers) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            assert (await anext(lines)) == "id: 1"
            started = time.monotonic()
            assert await serve.terminate(within=30) == 0, serve.output.read_text()
            assert time.monotonic() - started < 20
            # The stream ends with the server (a client resumes with Last-Event-ID).
            with contextlib.suppress(httpx.RemoteProtocolError):
                async for _ in lines:
                    pass
    gate.write_text("")

    url = await serve.start()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        s = Stack(http, tmp_path, corpus, script, authorize)
        job = await s.wait(custom, "COMPLETED")
        assert job["retry_count"] == 0
        assert job["checkpoints"][0]["step"] == 4
        log = await s.messages(custom)
        assert any("→ QUEUED: coordinator stopped; will resume" in m for m in log), log
        assert "custom script starting at step 5 of 8" in log
        assert [p for p, _ in await s.losses(custom)] == list(range(1, 9))

        job = await s.wait(builtin, "COMPLETED", within=45)
        stopped_at = job["checkpoints"][0]["step"]
        assert stopped_at >= 10
        assert job["retry_count"] == 0
        # Continued from its shutdown checkpoint: every step once, the counter never restarted.
        assert [p for p, _ in await s.losses(builtin)] == list(range(1, 1001))
        resume = f"resuming from {job['checkpoints'][0]['path']}"
        assert any(resume in m for m in await s.messages(builtin))
        assert (await s.list_jobs())["total_count"] == 2
    assert await serve.terminate(within=30) == 0
    # Starting job processes from the gRPC process logs nothing of gRPC's fork handlers.
    assert "fork() handlers" not in serve.output.read_text()


async def test_a_client_that_never_finishes_its_request_cannot_hold_the_shutdown(
    tmp_path: Path,
) -> None:
    serve = Serve(tmp_path, SCAIMIND_SHUTDOWN_TIMEOUT_S="1")
    writer: asyncio.StreamWriter | None = None
    try:
        url = await serve.start()
        token = await asyncio.to_thread(serve.token)
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # A job submission whose body never arrives: the request is in progress, so a graceful
        # shutdown would wait for it for ever.
        writer.write(
            f"POST {PREFIX}/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        # uvicorn answers 100 Continue when the app first asks for the body: from then on the
        # request is in progress.
        async with asyncio.timeout(10):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        started = time.monotonic()
        assert await serve.terminate(within=15) == 0, serve.output.read_text()
        assert time.monotonic() - started < 10
    finally:
        if writer is not None:
            writer.close()
        await serve.reap()
