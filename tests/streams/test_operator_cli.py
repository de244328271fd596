"""The `scaimind logs` / `scaimind metrics` commands as real subprocesses against a live gateway."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scaimind.cli.render import sparkline
from scaimind.cli.sse import SSEParser
from tests.conftest import closed_port, make_token
from tests.streams.live import Live

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR)\s+(.*)$")


@dataclass
class Cli:
    """A running `scaimind` subprocess."""

    proc: asyncio.subprocess.Process
    stdout: list[str]

    async def line(self, within: float = 30.0) -> str:
        """The next stdout line."""
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not raw:
            raise AssertionError(f"CLI stdout closed; so far: {self.stdout}")
        text = raw.decode().rstrip("\n")
        self.stdout.append(text)
        return text

    async def finish(self, within: float = 60.0) -> tuple[int, list[str], str]:
        """Wait for exit: (code, all stdout lines, stderr)."""
        out, err = await asyncio.wait_for(self.proc.communicate(), within)
        self.stdout.extend(out.decode().splitlines())
        assert self.proc.returncode is not None
        return self.proc.returncode, self.stdout, err.decode()


async def run_cli(args: Sequence[str], *, url: str, token: str | None = None) -> Cli:
    """Start `python -m scaimind.cli ARGS` with the gateway URL/token in the environment."""
    env = {**os.environ, "SCAIMIND_URL": url, "PYTHONUNBUFFERED": "1"}
    env.pop("SCAIMIND_TOKEN", None)
    if token is not None:
        env["SCAIMIND_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scaimind.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    return Cli(proc, [])


def base_url(live: Live) -> str:
    """The gateway root URL (the CLI adds the module prefix)."""
    assert live.gateway is not None
    return f"http://127.0.0.1:{live.gateway.port}"


def messages(lines: list[str]) -> list[str]:
    """Log messages of `<time> <LEVEL> <message>` lines (fails on any other line)."""
    out = []
    for line in lines:
        m = LOG_LINE.match(line)
        assert m, f"not a log line: {line!r}"
        out.append(m.group(2))
    return out


async def test_logs_follow_survives_a_gateway_restart(live: Live) -> None:
    job_id = await live.submit(lines=8, gate="restart", gate_at=3)
    await live.wait_log(job_id, "line 3")
    cli = await run_cli(["logs", job_id, "--tail", "10000"], url=base_url(live), token=make_token())
    while not any(line.endswith(" line 3") for line in cli.stdout):
        await cli.line()
    assert live.gateway is not None
    port = live.gateway.port
    await live.gateway.stop()
    # While the gateway is down the job writes the rest of its log and finishes.
    live.gate("restart").touch()
    await live.wait_log(job_id, "script done")
    await live.start_gateway(port=port)
    await live.wait_status(job_id, "COMPLETED")
    code, stdout, stderr = await cli.finish()
    assert code == 0, stderr
    full = await live.direct_logs(job_id)
    # Every line exactly once, in order, across the reconnect.
    assert messages(stdout) == [e.message for e in full]
    assert "reconnecting" in stderr
    assert f"job {job_id} ended: COMPLETED" in stderr
    # Piped output is plain: no colour codes.
    assert "\x1b[" not in "".join(stdout)


async def test_logs_no_follow_prints_the_filtered_tail_and_exits(live: Live) -> None:
    job_id = await live.submit(lines=6)
    await live.wait_status(job_id, "COMPLETED")
    cli = await run_cli(
        [
            "logs",
            job_id,
            "--no-follow",
            "--level",
            "warning",
            "--tail",
            "3",
            "--url",
            base_url(live),
        ],
        url=f"http://127.0.0.1:{closed_port()}",
        token=make_token(),
    )
    code, stdout, stderr = await cli.finish()
    assert code == 0, stderr
    expected = await live.direct_logs(job_id, level=3, tail=3)
    assert messages(stdout) == [e.message for e in expected]
    assert all(LOG_LINE.match(line).group(1) in ("WARNING", "ERROR") for line in stdout)  # type: ignore[union-attr]
    assert f"job {job_id} is COMPLETED" in stderr


async def test_logs_unrecoverable_errors_exit_non_zero(live: Live, tmp_path: Path) -> None:
    url = base_url(live)
    cli = await run_cli(["logs", "job_nope"], url=url, token=make_token())
    code, _, stderr = await cli.finish()
    assert code == 1
    assert "404" in stderr
    assert "NOT_FOUND" in stderr
    cli = await run_cli(["logs", "job_nope"], url=url, token=None)
    code, _, stderr = await cli.finish()
    assert code == 1
    assert "AUTH_TOKEN_MISSING" in stderr
    assert "SCAIMIND_TOKEN" in stderr
    cli = await run_cli(
        ["logs", "job_nope", "--token", make_token(role="tenant_user")], url=url, token=None
    )
    code, _, stderr = await cli.finish()
    assert code == 1
    assert "403" in stderr
    # Nothing listens here and never did (a wrong URL, not a restart): a clear message within
    # seconds, exit 3 (connection), however many reconnects a dropped stream would get.
    started = time.monotonic()
    cli = await run_cli(
        ["logs", "job_x", "--max-retries", "2"],
        url=f"http://127.0.0.1:{closed_port()}",
        token=make_token(),
    )
    code, _, stderr = await cli.finish()
    assert code == 3
    assert "cannot reach" in stderr
    assert "Connection refused" in stderr
    assert time.monotonic() - started < 5


async def test_metrics_show_and_watch(live: Live) -> None:
    job_id = await live.submit(lines=5)
    await live.wait_status(job_id, "COMPLETED")
    cli = await run_cli(["metrics", job_id], url=base_url(live), token=make_token())
    code, stdout, stderr = await cli.finish()
    assert code == 0, stderr
    assert stdout[0] == f"job {job_id}  step 5/5  epoch 0"
    loss = next(line for line in stdout if line.strip().startswith("loss"))
    assert loss.split()[-1] == "2"
    cli = await run_cli(["metrics", job_id, "--watch"], url=base_url(live), token=make_token())
    code, stdout, stderr = await cli.finish()
    assert code == 0, stderr
    assert len(stdout) == 1
    assert " step=5 " in stdout[0]
    assert re.search(r" loss=2( |$)", stdout[0])
    assert f"job {job_id} ended: COMPLETED" in stderr


def test_sse_parser_and_sparkline() -> None:
    parser = SSEParser()
    lines = [": ping", "id: 7", "event: log", "data: a", "data: b", "", "", "data: [DONE]", ""]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert events[0].is_comment
    assert events[0].comment == "ping"
    assert (events[1].event, events[1].id, events[1].data) == ("log", "7", "a\nb")
    assert (events[2].event, events[2].data, events[2].id) == ("message", "[DONE]", None)
    assert len(events) == 3
    assert sparkline([1.0, 2.0, 3.0, None, 8.0]) == "▁▂▃█"
    assert sparkline([]) == ""
