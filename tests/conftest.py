"""Fixtures shared by every test package: tokens, settings and a scripted coordinator."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from scaimind.gateway.security.auth import mint_token
from scaimind.settings import Settings

JWT_SECRET = "test-jwt-secret-0123456789abcdef-0123456789"
API_SECRET = "test-api-secret"


def make_token(
    tenant: str = "tenant-a",
    user: str = "user-1",
    role: str = "tenant_admin",
    scope: str = "",
    ttl_s: int = 600,
    secret: str = JWT_SECRET,
    **kwargs: Any,
) -> str:
    """An HS256 token the test settings accept."""
    return mint_token(
        secret, tenant_id=tenant, user_id=user, role=role, scope=scope, ttl_s=ttl_s, **kwargs
    )


def auth(tenant: str = "tenant-a", **kwargs: Any) -> dict[str, str]:
    """Authorization header for a tenant admin (or the given role/scope)."""
    return {"Authorization": f"Bearer {make_token(tenant, **kwargs)}"}


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings isolated in tmp_path with the test secrets; tmp_path is the tenants' local data
    root (its data dir stays out of reach)."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "jwt_secret": JWT_SECRET,
        "api_secret": API_SECRET,
        "grpc_timeout_s": 3.0,
        "local_data_roots": str(tmp_path),
    }
    values.update(overrides)
    return Settings(**values)


async def wait_for(
    predicate: Callable[[], Awaitable[Any] | Any], *, within: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll a plain or async predicate until it returns something truthy, or fail in time."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


def gateway_settings(root: Path, port: int, **overrides: Any) -> Settings:
    """`settings_for` with the coordinator on 127.0.0.1:port."""
    return settings_for(root, grpc_host="127.0.0.1", grpc_port=port, **overrides)


def closed_port() -> int:
    """A loopback port nobody listens on (bound and released, so nothing else took it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def job_processes(job_id: str) -> list[int]:
    """Host pids of the processes of a job (found by SCAIMIND_JOB_ID in their environment)."""
    marker = f"SCAIMIND_JOB_ID={job_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                pids.append(int(entry.name))
    return pids


def process_ended(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for a non-reaping init counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
