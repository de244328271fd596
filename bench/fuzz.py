"""The longer fuzzing run: schemathesis against a real `scaimind serve`, every phase.

Starts `scaimind serve` on a fresh data dir, mints a tenant admin's token, and runs
`schemathesis run` over the app's own OpenAPI: the examples, coverage, fuzzing and stateful
phases, positive and negative data, with the checks the suite uses (not_a_server_error,
status_code_conformance, content_type_conformance, response_schema_conformance). Stateful
submissions are steered onto a real corpus (bench/fuzz_hooks.py). Afterwards the server's log is
searched for unhandled errors. The exit status is schemathesis' (0: no failures).

Usage: .venv/bin/python bench/fuzz.py [--max-examples 200] [--seed 20251203] [--phases ...]
                                     [--continue-on-failure]
To fuzz another checkout (e.g. an older commit) with this environment: PYTHONPATH=<its src>.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_corpus(path: Path, records: int = 60) -> Path:
    rng = random.Random(1)
    words = ("the cat", "a dog", "my friend", "sees", "likes", "the red ball", "a green apple")
    with path.open("w") as f:
        for i in range(records):
            text = " ".join(rng.choice(words) for _ in range(4)) + "."
            f.write(json.dumps({"prompt": f"item {i}", "completion": text}) + "\n")
    return path


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20251203)
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    parser.add_argument(
        "--continue-on-failure", action="store_true", help="keep testing an operation that failed"
    )
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": tmp,
            "SCAIMIND_LOG_LEVEL": "WARNING",
            # The steered jobs' corpus lies in the tenants' local data root.
            "SCAIMIND_LOCAL_DATA_ROOTS": tmp,
        }
        # (PYTHONPATH passes through, to fuzz another checkout with this environment.)
        env.update({k: v for k, v in os.environ.items() if k == "PYTHONPATH"})
        data = str(root / "data")
        log = root / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(bin_dir / "scaimind"), "serve", "--port", str(port), "--data-dir", data],
                env=env,
                stdout=out,
                stderr=out,
            )
        try:
            wait_ready(url, proc)
            mint = ["token", "--data-dir", data, "--tenant", "acme", "--user", "fuzzer"]
            token = subprocess.run(
                [str(bin_dir / "scaimind"), *mint, "--ttl", "86400"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            started = time.monotonic()
            options = {
                "--header": f"Authorization: Bearer {token}",
                "--checks": CHECKS,
                "--phases": args.phases,
                "--mode": "all",
                "--workers": "1",
                "--max-examples": str(args.max_examples),
                "--seed": str(args.seed),
                "--request-timeout": "60",
                "--suppress-health-check": "all",
            }
            run = subprocess.run(
                [
                    str(bin_dir / "schemathesis"),
                    "run",
                    f"{url}/openapi.json",
                    *(part for pair in options.items() for part in pair),
                    *(["--continue-on-failure"] if args.continue_on_failure else []),
                ],
                # In the temporary directory: an earlier run's crash cache would be replayed.
                cwd=tmp,
                env={
                    **os.environ,
                    "SCHEMATHESIS_HOOKS": str(HERE / "fuzz_hooks.py"),
                    "SCAIMIND_FUZZ_CORPUS": str(write_corpus(root / "train.jsonl")),
                },
                check=False,
            )
            elapsed = time.monotonic() - started
        finally:
            proc.terminate()
            proc.wait(30)
        text = log.read_text(errors="replace")
        unhandled = text.count("unhandled error") + text.count("Traceback")
    print(f"\nschemathesis exit status {run.returncode} after {elapsed:.0f} s")
    print(f"unhandled errors or tracebacks in the server log: {unhandled}")
    return run.returncode or (1 if unhandled else 0)


if __name__ == "__main__":
    sys.exit(main())
