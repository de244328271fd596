"""Start-up cost of the `scaimind` command line: wall time and what it imports.

Method: each command runs `--runs` times as a fresh `python -m scaimind.cli` process (the
console script does the same); runs of the different commands are interleaved so a change in
machine load hits them alike. Printed per command: median and minimum wall time, the sum of
`-X importtime` self times (median of 3), and the server-side packages it loaded (there should
be none). The remote commands run against a `scaimind serve` started here on a temporary data
dir, with a token minted by `scaimind token`; `wrong URL` is a refused port (the CLI gives a
server it never reached 1.5 s, then exits 3).

Usage: .venv/bin/python bench/cli_startup.py [--runs 20]
With PYTHONPATH=<another checkout>/src the same numbers for another version of the CLI.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SERVER_PACKAGES = {"fastapi", "grpc", "numpy", "sqlalchemy", "uvicorn", "starlette"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scaimind.cli", *args]


def imports(args: list[str], env: dict[str, str]) -> tuple[float, set[str]]:
    """(sum of import self times in ms, top-level packages imported)."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", *args[1:]], env=env, capture_output=True, text=True
    ).stderr
    total, packages = 0, set()
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            own, _, name = line[len("import time:") :].split("|")
            if own.strip().isdigit():
                total += int(own)
                packages.add(name.strip().split(".")[0])
    return total / 1000, packages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCAIMIND_")}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        serve = subprocess.Popen(
            [*cli("serve", "--port", str(port), "--data-dir", str(data_dir))],
            env={**env, "SCAIMIND_LOG_LEVEL": "warning"},
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("scaimind serve did not become ready")
                time.sleep(0.1)
            token = subprocess.run(
                cli("token", "--data-dir", str(data_dir), "--tenant", "bench", "--user", "u"),
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            remote = {**env, "SCAIMIND_URL": url, "SCAIMIND_TOKEN": token}
            commands = {
                "--help": (cli("--help"), env),
                "jobs list --help": (cli("jobs", "list", "--help"), env),
                "jobs list": (cli("jobs", "list"), remote),
                "queue --json": (cli("queue", "--json"), remote),
                "wrong URL": (cli("jobs", "list", "--url", f"http://127.0.0.1:{free_port()}"), env),
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.runs):
                for name, (command, command_env) in commands.items():
                    started = time.perf_counter()
                    subprocess.run(command, env=command_env, capture_output=True)
                    times[name].append(time.perf_counter() - started)
            print(f"{'command':18} {'median':>8} {'min':>8} {'imports':>9}  server packages loaded")
            for name, (command, command_env) in commands.items():
                loaded = [imports(command, command_env) for _ in range(3)]
                spent = statistics.median(t for t, _ in loaded)
                server = sorted(loaded[0][1] & SERVER_PACKAGES) or "none"
                print(
                    f"{name:18} {statistics.median(times[name]) * 1000:6.0f}ms "
                    f"{min(times[name]) * 1000:6.0f}ms {spent:7.0f}ms  {server}"
                )
        finally:
            serve.terminate()
            serve.wait(30)


if __name__ == "__main__":
    main()
