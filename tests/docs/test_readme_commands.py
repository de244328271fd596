"""The README's commands, run as written: the first command's server, then the Quick start's
commands in a second shell; and the standalone coordinator with a gateway in front of it.

Each runs from a fresh directory with HOME pointed at it (so `~/.scaimind` is new) and
`.venv/bin/` meaning this interpreter's bin directory. The commands use the README's ports
(8080, 50051): when something else listens there the test fails and says so, since skipping
would hide that the README's commands were not run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docs import readme

BIN = Path(sys.executable).parent
BASE = "http://127.0.0.1:8080"
PREFIX = f"{BASE}/v1/modules/scaimind"


def _require_free(port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            pytest.fail(
                f"port {port} is taken on this machine ({exc.strerror}): the README's commands "
                f"use it, so this test cannot run them; stop what listens on {port} and re-run"
            )


def _env(home: Path) -> dict[str, str]:
    """A user's shell: no SCAIMIND_* settings, HOME fresh, the virtualenv's bin on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCAIMIND_")}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def _as_run_here(command: str) -> str:
    """The command with `.venv/bin/` meaning this interpreter's bin directory."""
    return command.replace(".venv/bin/", f"{BIN}/")


@contextmanager
def _shell(script: str, cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`script` run by bash in the background (its own process group), stopped with SIGTERM."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=_env(cwd),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited:\n{log.read_text()}"
        try:
            if httpx.get(f"{BASE}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready within {within}s:\n{log.read_text()}")


def _wait_completed(job_id: str, token: str, within: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + within
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        job: dict[str, Any] = httpx.get(f"{PREFIX}/jobs/{job_id}", headers=headers).json()["data"]
        if job["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.2)


def _token(home: Path) -> str:
    minted = subprocess.run(
        [f"{BIN}/scaimind", "token", "--tenant", "acme", "--user", "alice"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return minted.stdout.strip()


def _json_values(text: str) -> list[Any]:
    """The JSON documents printed one after another (curl -s adds no newline)."""
    decoder, values, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        value, end = decoder.raw_decode(text, pos)
        values.append(value)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return values


def test_the_first_two_commands_are_what_ci_runs() -> None:
    serve, tests = readme.command_blocks()[:2]
    steps = [s.strip() for s in serve.strip().split("&&")]
    assert steps == [
        "python3 -m venv .venv",
        ".venv/bin/pip install -q -e .",
        ".venv/bin/scaimind serve",
    ]
    # The test command is the one the CI gate runs on a clean clone.
    ci = (readme.ROOT / ".ci" / "run").read_text()
    assert tests.strip() in ci.splitlines()


@pytest.mark.timeout(240)
def test_quick_start_as_written(tmp_path: Path) -> None:
    _require_free(8080)
    serve_command = readme.command_blocks()[0].strip().split("&&")[-1].strip()
    quick_start = readme.section_block("Quick start", "curl")
    with _shell(_as_run_here(serve_command), tmp_path, tmp_path / "serve.log") as serve:
        _wait_ready(serve, tmp_path / "serve.log")
        ran = subprocess.run(
            ["bash", "-e", "-c", _as_run_here(quick_start)],
            cwd=tmp_path,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        submitted, listed = _json_values(ran.stdout)
        job_id = submitted["data"]["job_id"]
        assert submitted["data"]["status"] in ("QUEUED", "SCHEDULING", "PREPARING", "TRAINING")
        assert [j["job_id"] for j in listed["data"]["jobs"]] == [job_id]
        # uvicorn's access log: the submit answered 201.
        log = (tmp_path / "serve.log").read_text()
        assert '"POST /v1/modules/scaimind/jobs HTTP/1.1" 201' in log, log
        job = _wait_completed(job_id, _token(tmp_path))
        assert job["status"] == "COMPLETED", job
        assert job["progress"]["current_step"] == 50
        # The data dir the README names: ~/.scaimind of the fresh HOME.
        assert (tmp_path / ".scaimind" / "coordinator" / "coordinator.db").is_file()
    assert serve.returncode == 0, (tmp_path / "serve.log").read_text()


@pytest.mark.timeout(240)
def test_standalone_coordinator_and_gateway_as_written(tmp_path: Path) -> None:
    _require_free(8080)
    _require_free(50051)
    block = readme.section_block("The reference coordinator", "scaimind coordinator")
    with _shell(block, tmp_path, tmp_path / "both.log") as both:
        _wait_ready(both, tmp_path / "both.log")
        # The coordinator's relative --data-dir is the folder it was started in.
        storage = tmp_path / "coord" / "storage" / "acme"
        storage.mkdir(parents=True)
        (storage / "train.jsonl").write_text(
            '{"prompt": "2+2=", "completion": "4"}\n{"prompt": "3+3=", "completion": "6"}\n'
        )
        token = _token(tmp_path)
        body = {
            "name": "standalone",
            "training_config": {
                "training_type": "SFT",
                "base_model": {"model_id": "meta-llama/Llama-3-8B"},
                "hyperparameters": {"max_steps": 20},
            },
            "data_config": {"sources": [{"path": "scaidrive://acme/train.jsonl"}]},
            "resource_config": {"gpu_count": 1},
        }
        r = httpx.post(
            f"{PREFIX}/jobs", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert r.status_code == 201, r.text
        job = _wait_completed(r.json()["data"]["job_id"], token)
        assert job["status"] == "COMPLETED", job
        assert (tmp_path / "coord" / "coordinator.db").is_file()
        assert not (tmp_path / ".scaimind" / "coordinator").exists()  # not the embedded one
