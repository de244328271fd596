"""`scaimind serve --workers 2`: two worker processes answer, and they share ONE coordinator.

Which worker accepts a connection is up to the kernel, so the test asks the kernel: it keeps
connections open until two of them are held by different worker processes (read from /proc), then
submits a job through one worker and reads it through the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from scaimind.gateway.security.auth import embedded_secret, mint_token
from tests.conftest import wait_for

from .conftest import PREFIX, clean_env
from .test_serve_e2e import free_port, scaimind_command

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc")


def descendants(pid: int) -> set[int]:
    """Every process below `pid`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def tcp_sockets() -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of every loopback TCP socket."""
    table: dict[int, tuple[int, int, str]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
                table[inode] = (
                    int(local.rsplit(":", 1)[1], 16),
                    int(remote.rsplit(":", 1)[1], 16),
                    state,
                )
    return table


def socket_inodes(pid: int) -> set[int]:
    """The socket inodes a process holds."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


_LISTEN = "0A"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, Path]]:
    port = free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *scaimind_command(),
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--workers",
            "2",
            env=clean_env(SCAIMIND_LOG_LEVEL="WARNING", SCAIMIND_LOCAL_DATA_ROOTS=str(tmp_path)),
            stdout=out,
            stderr=out,
        )
    try:

        async def ready() -> bool:
            assert proc.returncode is None, log.read_text()
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"http://127.0.0.1:{port}/health/ready")).is_success
            except httpx.TransportError:
                return False

        await wait_for(ready, within=60, interval=0.1)
        yield proc, port, data_dir
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 60) == 0, log.read_text()
        # Nothing is left behind: workers and the coordinator are gone with the parent.
    finally:
        if proc.returncode is None:
            for child in descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, 9)
            proc.kill()
            await proc.wait()


async def test_two_workers_share_one_coordinator(
    served: tuple[asyncio.subprocess.Process, int, Path], tmp_path: Path
) -> None:
    proc, port, data_dir = served
    token = mint_token(embedded_secret(data_dir), tenant_id="t", user_id="u")
    headers = {"Authorization": f"Bearer {token}"}
    children = descendants(proc.pid)
    sockets = tcp_sockets()
    # Processes listening on a port other than the HTTP one: the coordinator, and only once.
    grpc_listeners = {
        pid
        for pid in children
        for inode in socket_inodes(pid)
        if inode in sockets and sockets[inode][2] == _LISTEN and sockets[inode][0] != port
    }
    assert len(grpc_listeners) == 1, grpc_listeners
    workers = {
        pid
        for pid in children - grpc_listeners
        for inode in socket_inodes(pid)
        if inode in sockets and sockets[inode][2] == _LISTEN and sockets[inode][0] == port
    }
    assert len(workers) == 2, workers

    # Open connections (each its own client) until two different workers hold one.
    held: dict[int, httpx.AsyncClient] = {}
    clients: list[httpx.AsyncClient] = []
    try:
        for _ in range(64):
            client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers)
            clients.append(client)
            r = await client.get(f"{PREFIX}/jobs")
            assert r.status_code == 200, r.text
            # The client side of the connection that carried it (httpcore's public extension).
            client_port = r.extensions["network_stream"].get_extra_info("client_addr")[1]
            sockets = tcp_sockets()
            for pid in workers - set(held):
                if any(
                    sockets.get(inode, (0, 0, ""))[0] == port
                    and sockets[inode][2] == "01"
                    and client_port == sockets[inode][1]
                    for inode in socket_inodes(pid)
                ):
                    held[pid] = client
            if len(held) == 2:
                break
        assert len(held) == 2, "64 connections all went to one worker"
        first, second = held.values()
        corpus = tmp_path / "train.jsonl"
        corpus.write_text('{"prompt": "1+1=", "completion": "2"}\n')
        body = {
            "name": "shared",
            "training_config": {"training_type": "SFT", "base_model": {"model_id": "tiny"}},
            "data_config": {"sources": [{"path": str(corpus)}]},
            "resource_config": {"gpu_count": 1},
        }
        r = await first.post(f"{PREFIX}/jobs", json=body)
        assert r.status_code == 201, r.text
        job_id = r.json()["data"]["job_id"]
        # The other worker sees it: one coordinator behind both.
        r = await second.get(f"{PREFIX}/jobs/{job_id}")
        assert r.status_code == 200, r.text
        assert r.json()["data"]["name"] == "shared"
        await second.post(f"{PREFIX}/jobs/{job_id}/cancel", json={})
    finally:
        for client in clients:
            await client.aclose()
