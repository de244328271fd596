"""Peak RSS of a real `scaimind serve` under one large unauthenticated request body.

Starts `scaimind serve` on a fresh data dir, reads its peak RSS (VmHWM) once it is ready, sends
one `POST /jobs` with a body of --mib MiB and no Authorization header over a raw socket (as a
client that streams the whole body whatever the server answers), then reads the peak RSS again
and checks the server still answers /health. To compare with a checkout that had no limit:

    .venv/bin/python bench/body_limit.py                                  # this checkout
    PYTHONPATH=/path/to/old/src .venv/bin/python bench/body_limit.py      # another checkout

Usage: .venv/bin/python bench/body_limit.py [--mib 48]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PREFIX = "/v1/modules/scaimind"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("serve exited")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health/ready", timeout=2) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("serve did not become ready")


def send_large_body(port: int, size: int) -> tuple[str, float]:
    """POST `size` bytes without credentials; returns (status line, seconds until it came)."""
    head = (
        f"POST {PREFIX}/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    # A well-formed JSON body (one long string), which a server without a limit parses in full.
    opening, closing = b'{"name": "', b'"}'
    chunk = b"x" * (1024 * 1024)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head + opening)
        sent, filler = len(opening), size - len(opening) - len(closing)
        # Like curl: keep streaming the body; a server that answered early closes on us.
        with contextlib.suppress(OSError):
            while sent < len(opening) + filler:
                part = chunk[: len(opening) + filler - sent]
                sock.sendall(part)
                sent += len(part)
            sock.sendall(closing)
        reply = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in reply:
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
    return reply.split(b"\r\n", 1)[0].decode(errors="replace"), time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=48)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    script = Path(sys.executable).parent / "scaimind"
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            k: v
            for k, v in os.environ.items()
            if k.startswith("SCAIMIND_MAX_BODY") or k == "PYTHONPATH"
        }
        env |= {"PATH": os.environ["PATH"], "HOME": tmp, "SCAIMIND_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen(
            [str(script), "serve", "--port", str(port), "--data-dir", f"{tmp}/data"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(url, proc)
            before = peak_rss_mib(proc.pid)
            status, seconds = send_large_body(port, args.mib * 1024 * 1024)
            time.sleep(0.5)  # let a server that buffered the body finish with it
            after = peak_rss_mib(proc.pid)
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                healthy = r.status == 200
        finally:
            proc.terminate()
            proc.wait(30)
    limit = os.environ.get("SCAIMIND_MAX_BODY_BYTES", "default (1 MiB)")
    print(f"SCAIMIND_MAX_BODY_BYTES: {limit}")
    print(f"{args.mib} MiB unauthenticated POST /jobs: {status!r} after {seconds:.2f} s")
    print(f"peak RSS of serve: {before:.1f} MiB before, {after:.1f} MiB after")
    print(f"healthy afterwards: {healthy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
