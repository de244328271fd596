"""The one retry policy: a 429 is retried after its Retry-After, then the command succeeds."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
import pytest_asyncio

from tests.cli.conftest import Server, running_server
from tests.e2e_jobs.conftest import clean_env
from tests.e2e_jobs.test_serve_e2e import scaimind_command
from tests.streams.test_operator_cli import LOG_LINE


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def capped(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """A server that allows one open stream per tenant (the second is a 429)."""
    root = tmp_path_factory.mktemp("capped")
    async with running_server(root, SCAIMIND_STREAM_CAP_PER_TENANT="1") as running:
        yield running


def test_a_rate_limited_stream_is_retried_until_it_gets_through(capped: Server) -> None:
    gate = capped.root / "gate"
    held = capped.submit(capped.custom_job("held", TOTAL_STEPS="4", GATE=str(gate), GATE_STEP="2"))
    done = capped.submit(capped.builtin_job("done", steps=5))
    capped.ok("jobs", "wait", done, "--interval", "0.2")
    env = clean_env(SCAIMIND_URL=capped.url, SCAIMIND_TOKEN=capped.token)
    # The first follower holds the tenant's only stream while its job waits at the gate.
    with follow(held, env) as first:
        assert first.stdout is not None
        while "custom script starting" not in first.stdout.readline():
            assert first.poll() is None
        with follow(done, env, "--tail", "1000") as second:
            assert second.stderr is not None
            note = second.stderr.readline()
            assert note.startswith("scaimind: RATE_LIMITED: too many concurrent streams"), note
            assert note.rstrip().endswith("reconnecting in 5.0s"), note  # Retry-After: 5
            started = time.monotonic()
            gate.write_text("")  # the held job ends, its follower exits, the slot frees
            assert first.wait(timeout=60) == 0
            out, err = second.communicate(timeout=60)
            assert second.returncode == 0, err
            assert time.monotonic() - started < 30
            assert f"job {done} ended: COMPLETED" in err
            lines = out.splitlines()
            assert lines
            assert all(LOG_LINE.match(line) for line in lines), lines


@contextmanager
def follow(job_id: str, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[str]]:
    """`scaimind logs JOB` running in the background (killed if still running at the end)."""
    with subprocess.Popen(
        [*scaimind_command(), "logs", job_id, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            yield proc
        finally:
            proc.kill()
