"""Ending open streams when the server shuts down.

An ASGI server tells an app nothing before its lifespan shutdown, and uvicorn runs that only
after every connection has closed, so a stream that nobody ends holds a shutdown open until
the client leaves (or `timeout_graceful_shutdown` cuts it). uvicorn keeps its exit flag on the
server whose bound `handle_exit` it installs as the SIGTERM handler; that flag is read here,
without patching uvicorn. Under another server, or off the main thread, nothing is found and
streams end by that server's graceful-shutdown timeout instead.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Final

from scaimind.gateway.streaming.limiter import StreamLimiter

POLL_S: Final = 0.5


def server_exiting() -> bool:
    """True once the uvicorn server running this process has been told to exit."""
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return bool(getattr(server, "should_exit", False))


async def end_streams_on_exit(limiter: StreamLimiter) -> None:
    """Until cancelled: once the server is exiting, end every stream (also any that a kept-alive
    connection opens afterwards)."""
    while True:
        await asyncio.sleep(POLL_S)
        if server_exiting():
            limiter.end_all()
