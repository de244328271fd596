"""The job sandbox (sandbox.py) with real bubblewrap: what a job sees and what it cannot do."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scaimind.coordinator.config import JobLimits, SandboxConfig
from scaimind.coordinator.executors.sandbox import Mount, Sandbox

# Reports what the job sees as one JSON line.
PROBE = r"""
import json, os, resource, socket, sys
out = {"uid": os.getuid(), "env": sorted(os.environ), "pids": sorted(
    int(p) for p in os.listdir("/proc") if p.isdigit())}
def attempt(name, fn):
    try:
        out[name] = fn()
    except Exception as e:
        out[name] = "denied: " + type(e).__name__
attempt("secret", lambda: open(sys.argv[1]).read())
attempt("parent_environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read().decode())
attempt("host_environ", lambda: open("/proc/1/environ", "rb").read().decode())
attempt("write_usr", lambda: open("/usr/x", "w").write("x"))
attempt("write_job", lambda: open("/job/out.txt", "w").write("ok"))
attempt("masked", lambda: os.listdir(sys.argv[2]))
def connect():
    s = socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=2)
    s.close()
    return "connected"
attempt("network", connect)
out["nproc"] = resource.getrlimit(resource.RLIMIT_NPROC)[0]
out["as"] = resource.getrlimit(resource.RLIMIT_AS)[0]
print(json.dumps(out))
"""

FORK_BOMB = r"""
import os, sys, time
made = 0
try:
    for _ in range(400):
        if os.fork() == 0:
            time.sleep(2)
            os._exit(0)
        made += 1
except OSError as e:
    print(f"stopped after {made}: {e.strerror}")
    sys.exit(0)
print(f"made {made}")
"""


@pytest.fixture
def listener() -> Iterator[int]:
    """A real TCP listener on loopback that a job must not reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


async def run(
    sandbox: Sandbox, argv: list[str], mounts: list[Mount], limits: JobLimits | None = None
) -> tuple[int, str, str]:
    proc, _ = await sandbox.start(
        argv, {"PATH": "/usr/bin:/bin", "JOB_VAR": "1"}, mounts, "/job", limits or JobLimits()
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def usable_sandbox(protected: list[Path], **config: Any) -> Sandbox:
    sandbox = Sandbox(SandboxConfig(**config), protected=protected)
    await sandbox.probe()
    assert sandbox.usable, sandbox.problem
    return sandbox


async def test_a_job_sees_only_its_folders_and_nothing_of_the_service(
    tmp_path: Path, listener: int
) -> None:
    # A data dir inside the folder the job is given (a script's folder may be such a place).
    shared = tmp_path / "shared"
    data = shared / "service-data"
    data.mkdir(parents=True)
    (data / "api-secret").write_text("topsecret")
    job = tmp_path / "job"
    job.mkdir()
    for path in (tmp_path, shared, job):
        path.chmod(0o777)
    (shared / "probe.py").write_text(PROBE)
    sandbox = await usable_sandbox([data])
    code, out, err = await run(
        sandbox,
        [
            sys.executable,
            "/code/probe.py",
            str(data / "api-secret"),
            "/code/service-data",
            str(listener),
        ],
        [Mount(job, "/job", writable=True), Mount(shared, "/code")],
    )
    assert code == 0, err
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["secret"].startswith("denied")
    assert seen["masked"] == []  # the data dir inside the bound folder is an empty tmpfs
    assert seen["write_usr"].startswith("denied")
    assert seen["write_job"] == 2
    assert (job / "out.txt").read_text() == "ok"
    assert seen["network"].startswith("denied")
    # Only the sandbox's processes exist; none of them carries the service's environment.
    assert max(seen["pids"]) < 10
    assert "denied" in seen["parent_environ"] or "SCAIMIND" not in seen["parent_environ"]
    assert "denied" in seen["host_environ"] or "PYTEST" not in seen["host_environ"]
    assert set(seen["env"]) <= {"PATH", "JOB_VAR", "PWD", "LC_CTYPE"}
    if os.geteuid() == 0:
        assert seen["uid"] == 65534  # never root, so the process limit holds
    assert seen["nproc"] == JobLimits().processes
    assert seen["as"] == JobLimits().memory_mb * 1024 * 1024


async def test_a_fork_bomb_stops_at_the_process_limit(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    job.chmod(0o777)
    (job / "bomb.py").write_text(FORK_BOMB)
    sandbox = await usable_sandbox([])
    code, out, err = await run(
        sandbox,
        [sys.executable, "/job/bomb.py"],
        [Mount(job, "/job", True)],
        JobLimits(processes=32),
    )
    assert code == 0, err
    assert out.startswith("stopped after"), out
    assert int(out.split()[2].rstrip(":")) < 32


async def test_network_when_the_operator_allows_it(tmp_path: Path, listener: int) -> None:
    job = tmp_path / "job"
    job.mkdir()
    job.chmod(0o777)
    sandbox = await usable_sandbox([], network=True)
    code, out, err = await run(
        sandbox,
        [
            sys.executable,
            "-c",
            f"import socket; socket.create_connection(('127.0.0.1', {listener})); print('ok')",
        ],
        [Mount(job, "/job", True)],
    )
    assert (code, out.strip()) == (0, "ok"), err


async def test_a_missing_bwrap_says_how_to_get_it() -> None:
    sandbox = Sandbox(SandboxConfig(bwrap="/nonexistent/bwrap"))
    await sandbox.probe()
    assert not sandbox.usable
    assert sandbox.problem is not None
    assert "bubblewrap" in sandbox.problem
