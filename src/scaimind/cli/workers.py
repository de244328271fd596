"""`scaimind serve --workers N`: N uvicorn worker processes and, in the embedded mode, ONE
reference coordinator process that they all use.

One gateway process is bound to one core (Python's GIL). With N workers the kernel spreads the
connections of the shared listening socket over N processes. The embedded coordinator cannot run
inside each of them (N schedulers would each own the same data dir), so it runs as a separate
process started here, exactly as the embedded mode configures it (same data dir, API secret file,
downstream token key and protected dirs), and the workers reach it on loopback like an external
coordinator. What stays per worker (stream cap, log feeds, caches) is listed in the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import sys
from contextlib import AsyncExitStack
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Final

from scaimind.cli.base import CliError
from scaimind.cli.process import load, quiet_grpc_fork, tune_gc

if TYPE_CHECKING:
    from fastapi import FastAPI

    from scaimind.settings import Settings

# The worker factory's import string (uvicorn imports it in each spawned worker).
WORKER_APP: Final = "scaimind.cli.workers:worker_app"
_COORDINATOR_START_S: Final = 120.0
_COORDINATOR_STOP_S: Final = 120.0


def worker_app() -> FastAPI:
    """The app of one worker: settings from the environment the parent prepared."""
    from scaimind.gateway.app import create_app

    quiet_grpc_fork()
    app = create_app(load(None))
    tune_gc()
    return app


def _coordinator_main(data_dir: str, conn: Connection) -> None:
    """The shared coordinator process: start, send its address (or an error), run until
    SIGINT/SIGTERM, then stop cleanly (running jobs checkpoint and are re-queued)."""
    from scaimind.gateway.app import coordinator_api_secret, start_embedded_coordinator

    quiet_grpc_fork()

    async def main() -> None:
        settings = load(Path(data_dir))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with AsyncExitStack() as stack:
            try:
                secret = coordinator_api_secret(settings)
                target = await start_embedded_coordinator(settings, secret, stack)
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
                return
            conn.send(("ok", target))
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


class SharedCoordinator:
    """The one embedded coordinator process of a multi-worker gateway."""

    def __init__(self, data_dir: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=_coordinator_main,
            args=(str(data_dir), child),
            name="scaimind-coordinator",
        )
        self.process.start()
        child.close()

    def address(self) -> str:
        """host:port once it listens; CliError when it could not start."""
        if not self._conn.poll(_COORDINATOR_START_S):
            self.stop()
            raise CliError("the embedded coordinator did not start in time")
        try:
            status, value = self._conn.recv()
        except EOFError:
            status, value = "error", f"it exited with status {self.process.exitcode}"
        if status != "ok":
            self.stop()
            raise CliError(f"the embedded coordinator could not start: {value}")
        return str(value)

    def stop(self) -> None:
        """SIGTERM, wait for the clean shutdown, kill if it hangs."""
        if self.process.is_alive() and self.process.pid is not None:
            os.kill(self.process.pid, signal.SIGTERM)
        self.process.join(_COORDINATOR_STOP_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _migrate_embedded_cache(settings: Settings) -> None:
    """Bring an embedded SQLite cache to the newest schema once, before the workers start (each
    worker would otherwise run the same migration at the same time)."""
    from sqlalchemy.engine import make_url

    from scaimind.contract.private_files import private_database
    from scaimind.gateway.db import migrate

    url = make_url(settings.effective_database_url)
    if not url.get_backend_name().startswith("sqlite"):
        return
    asyncio.run(migrate.upgrade(url))
    if url.database:
        private_database(Path(url.database))


def serve_workers(
    settings: Settings, sock: socket.socket, host: str, port: int, workers: int
) -> None:
    """Run `workers` uvicorn workers on `sock` (with the shared coordinator when embedded)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    # Spawned workers read their settings from the environment: the parent's, plus the data dir
    # chosen on the command line and the shared coordinator's address.
    os.environ["SCAIMIND_DATA_DIR"] = str(settings.data_dir)
    _migrate_embedded_cache(settings)
    coordinator = SharedCoordinator(settings.data_dir) if settings.embedded_coordinator else None
    try:
        if coordinator is not None:
            coord_host, _, coord_port = coordinator.address().rpartition(":")
            os.environ["SCAIMIND_GRPC_HOST"] = coord_host
            os.environ["SCAIMIND_GRPC_PORT"] = coord_port
            print(
                f"scaimind: {workers} workers share the coordinator process "
                f"{coordinator.process.pid} at {coord_host}:{coord_port}",
                file=sys.stderr,
            )
        config = uvicorn.Config(
            WORKER_APP,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=settings.shutdown_timeout_s,
        )
        Multiprocess(config, sockets=[sock]).run()
    finally:
        if coordinator is not None:
            coordinator.stop()
