"""The coordinator and gateway that the HTTP benches run against, as separate processes.

Imported by bench scripts run as `python bench/<name>.py` (their folder is on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

CLI = [sys.executable, "-m", "scaimind.cli"]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Servers:
    """`scaimind coordinator` and `scaimind serve` (external mode, pointed at it)."""

    grpc_port: int
    http_port: int
    coordinator: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]


def start_servers(
    tmp: Path,
    *,
    slots: int,
    env: Mapping[str, str],
    serve_args: Sequence[str] = (),
    python_args: Sequence[str] = (),
    gateway_env: Mapping[str, str] | None = None,
) -> Servers:
    """Both on free ports, data under `tmp`, one node with `slots` slots; `env` adds settings
    (secrets and the like) to both, `gateway_env` to the gateway only; `python_args` go before
    the gateway's `-m scaimind.cli` (e.g. a profiler)."""
    inventory = tmp / "inventory.json"
    inventory.write_text(
        json.dumps(
            [{"node_id": "bench", "hostname": "localhost", "gpu_type": "CPU", "gpu_count": slots}]
        )
    )
    grpc_port = free_port()
    common = _environment(tmp, grpc_port, env)
    coordinator = subprocess.Popen(
        [
            *CLI,
            "coordinator",
            "--port",
            str(grpc_port),
            "--data-dir",
            str(tmp / "coordinator"),
            "--inventory",
            str(inventory),
        ],
        env=common,
        stderr=subprocess.DEVNULL,
    )
    http_port, gateway = start_gateway(
        tmp,
        grpc_port,
        env=env,
        serve_args=serve_args,
        python_args=python_args,
        gateway_env=gateway_env,
    )
    return Servers(grpc_port, http_port, coordinator, gateway)


def _environment(tmp: Path, grpc_port: int, env: Mapping[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "SCAIMIND_DATA_DIR": str(tmp / "gateway"),
        "SCAIMIND_GRPC_HOST": "127.0.0.1",
        "SCAIMIND_GRPC_PORT": str(grpc_port),
        # The jobs' scripts and corpora are local files (only listed roots are readable).
        "SCAIMIND_LOCAL_DATA_ROOTS": str(tmp),
        "SCAIMIND_LOG_LEVEL": "warning",
        **env,
    }


def start_gateway(
    tmp: Path,
    grpc_port: int,
    *,
    env: Mapping[str, str],
    serve_args: Sequence[str] = (),
    python_args: Sequence[str] = (),
    gateway_env: Mapping[str, str] | None = None,
    data_dir: str = "gateway",
) -> tuple[int, subprocess.Popen[bytes]]:
    """`scaimind serve` on a free port for the coordinator on `grpc_port`, its data dir (and
    cache database) `tmp / data_dir`; returns the port and the process."""
    http_port = free_port()
    environment = {**_environment(tmp, grpc_port, env), **(gateway_env or {})}
    environment["SCAIMIND_DATA_DIR"] = str(tmp / data_dir)
    serve = [sys.executable, *python_args, *CLI[1:], "serve", "--port", str(http_port)]
    gateway = subprocess.Popen([*serve, *serve_args], env=environment, stderr=subprocess.DEVNULL)
    return http_port, gateway


async def wait_http(url: str, within: float = 60.0) -> None:
    """Wait until `url` answers 200."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """SIGINT each (a clean uvicorn and coordinator shutdown; a profiled gateway writes its
    profile on the way out), then kill what has not stopped within 30 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
