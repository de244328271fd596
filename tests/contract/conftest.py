"""One real `scaimind serve` (embedded coordinator, fresh data dir) for the contract tests: the
body limit under a real server, and schemathesis against the app's own OpenAPI."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.coordinator.conftest import write_corpus
from tests.e2e_jobs.conftest import clean_env
from tests.e2e_jobs.test_serve_e2e import free_port, scaimind_command

TENANT = "acme"


@dataclass(frozen=True)
class Served:
    """A running `scaimind serve`: its URL, a tenant admin's headers and a training corpus."""

    url: str
    headers: dict[str, str]
    corpus: Path
    log: Path
    pid: int


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"serve did not become ready: {log.read_text()}")


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`scaimind serve` on a fresh data dir, stopped (SIGTERM) after the package's tests."""
    root = tmp_path_factory.mktemp("served")
    data_dir, log = root / "data", root / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*scaimind_command(), "serve", "--port", str(port), "--data-dir", str(data_dir)],
            # The corpus below lies in the tenants' local data root.
            env=clean_env(SCAIMIND_LOG_LEVEL="WARNING", SCAIMIND_LOCAL_DATA_ROOTS=str(root)),
            stdout=out,
            stderr=out,
        )
    try:
        _wait_ready(url, proc, log)
        mint = ["token", "--data-dir", str(data_dir), "--tenant", TENANT, "--user", "fuzzer"]
        token = subprocess.run(
            [*scaimind_command(), *mint, "--ttl", "7200"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        yield Served(
            url=url,
            headers={"Authorization": f"Bearer {token}"},
            corpus=write_corpus(root / "train.jsonl"),
            log=log,
            pid=proc.pid,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
