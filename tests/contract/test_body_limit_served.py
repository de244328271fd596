"""The body limit on a real server: a 48 MiB unauthenticated body is answered 413 at once."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx

from tests.conftest import wait_for

from .conftest import Served

PREFIX = "/v1/modules/scaimind"
SIZE = 48 * 1024 * 1024


def test_a_48_mib_unauthenticated_body_is_413_and_the_server_stays_well(served: Served) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    head = (
        f"POST {PREFIX}/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {SIZE}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"[" * 65536)
        # The answer comes while almost all of the body is still unsent: it was never read.
        reply = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            assert time.monotonic() < deadline, reply
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        # Like a client that streams its whole body regardless: the server has closed.
        with contextlib.suppress(OSError):
            for _ in range(SIZE // 65536):
                sock.sendall(b"[" * 65536)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), reply[:200]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body["meta"]["request_id"]
    # Still serving, and authenticated requests work as before.
    r = httpx.get(f"{served.url}{PREFIX}/jobs", headers=served.headers, timeout=10)
    assert r.status_code == 200, r.text
    # (The server's peak RSS under such a body is measured by bench/body_limit.py.)


async def test_the_server_survives_many_refused_bodies(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        for _ in range(20):
            r = await client.post(f"{PREFIX}/jobs", content=b" " * (1024 * 1024 + 1))
            assert r.status_code == 413

        async def healthy() -> bool:
            return (await client.get("/health")).status_code == 200

        await wait_for(healthy, within=10)
