"""What the REST gateway adds on top of the gRPC call behind it, side by side in one run.

Starts `scaimind coordinator` and `scaimind serve` (external mode, pointed at it) as separate
processes on free ports with a temporary data dir, trains `--jobs` built-in-trainer jobs of 5
steps that keep a checkpoint per step (a completed job with 5 checkpoints; at least 20 jobs, so
`GET /jobs` answers a full page of 20), then for each endpoint

- GET /jobs/{id}              (FULL view, 5 checkpoints)        vs GetJob
- GET /jobs                   (BASIC view, page of 20)          vs ListJobs(page_size=20)
- POST /jobs/{id}/cancel      (terminal job: 409 JOB_TERMINAL) vs CancelJob (FAILED_PRECONDITION)

runs (a) a direct `grpc.aio` client with the metadata the gateway sends (x-api-secret,
x-tenant-id, x-user-id, a fresh x-request-id per call) and (b) `wrk` (an HTTP load generator
written in C) against the gateway, at each `--concurrency` (default 1 and 32), and prints
p50/p99/throughput of both, the p50 the gateway adds and the throughput it keeps.

`--profile` records a py-spy profile (speedscope JSON) of the gateway process(es) while wrk
runs; `--workers N` starts the gateway with N uvicorn workers.

wrk: `apt-get install wrk` (Debian/Ubuntu), `brew install wrk` (macOS).
py-spy: in the dev extras (`pip install -e '.[dev]'`); recording another process needs ptrace
rights (root, or kernel.yama.ptrace_scope=0).

Usage: .venv/bin/python bench/overhead.py [--duration 5] [--concurrency 1,32] [--workers 1]
       [--endpoints get,list,cancel] [--rounds 1] [--profile] [--gateway-src DIR]
       [--baseline-src DIR]

Before/after: `git worktree add /tmp/before <commit>`, then
`.venv/bin/python bench/overhead.py --baseline-src /tmp/before/src --rounds 2` runs that commit's
gateway beside this one on the same coordinator and measures both in every row, each going
first in turn (`--gateway-src /tmp/before/src` runs only that commit's gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from servers import start_gateway, start_servers, stop, wait_http

from scaimind.gateway.security.auth import mint_token
from scaimind.v1 import coordinator_pb2, coordinator_pb2_grpc

PREFIX = "/v1/modules/scaimind"
API_SECRET = "bench-api-secret-0123456789abcdef"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef-0123456789abcdef"
TENANT, USER = "bench", "bench-user"
WRK_HINT = (
    "wrk (an HTTP load generator written in C) is not installed: "
    "`sudo apt-get install wrk` on Debian/Ubuntu, `brew install wrk` on macOS"
)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


@dataclass
class Figures:
    """One measurement: latencies in ms, throughput in requests per second."""

    p50: float
    p99: float
    rps: float
    requests: int
    unexpected: int = 0
    # Gateway CPU per request (µs, all its processes): efficiency, which scheduling noise on a
    # busy machine blurs much less than latency.
    cpu_us: float = float("nan")


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and its children (the workers)."""
    total = 0.0
    for proc in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@dataclass
class Processes:
    """The coordinator and the gateway of one bench run."""

    tmp: Path
    grpc_port: int
    http_port: int
    coordinator: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    # A second gateway running another checkout's code, measured beside the first.
    baseline: subprocess.Popen[bytes] | None = None
    baseline_port: int = 0


_SECRETS = {"SCAIMIND_API_SECRET": API_SECRET, "SCAIMIND_JWT_SECRET": JWT_SECRET}


def _source(src: Path | None) -> dict[str, str] | None:
    # The gateway of another checkout; the coordinator stays this one's, since its sandboxed
    # trainer runs the installed package.
    return {"PYTHONPATH": str(src)} if src is not None else None


def start(
    tmp: Path, workers: int, gateway_src: Path | None = None, baseline_src: Path | None = None
) -> Processes:
    """Start the coordinator and the gateway (external mode) on free ports, and the baseline
    gateway (its own data dir) when `baseline_src` is given."""
    serve_args = ["--workers", str(workers)] if workers > 1 else []
    servers = start_servers(
        tmp,
        # Enough slots to train the jobs side by side; they are tiny NumPy runs.
        slots=8,
        env=_SECRETS,
        serve_args=serve_args,
        gateway_env=_source(gateway_src),
    )
    procs = Processes(
        tmp, servers.grpc_port, servers.http_port, servers.coordinator, servers.gateway
    )
    if baseline_src is not None:
        procs.baseline_port, procs.baseline = start_gateway(
            tmp,
            servers.grpc_port,
            env=_SECRETS,
            serve_args=serve_args,
            gateway_env=_source(baseline_src),
            data_dir="gateway-baseline",
        )
    return procs


async def create_jobs(base: str, token: str, tmp: Path, count: int) -> list[str]:
    """Submit `count` 5-step jobs keeping a checkpoint per step; wait until all completed."""
    corpus = tmp / "train.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"prompt": f"{i}+{i}=", "completion": str(2 * i)}) + "\n" for i in range(50)
        )
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base + PREFIX, headers=headers, timeout=60) as http:
        ids = []
        for i in range(count):
            body = {
                "name": f"overhead-{i}",
                "labels": {"bench": "overhead"},
                "training_config": {
                    "training_type": "SFT",
                    "base_model": {"model_id": "tiny"},
                    "hyperparameters": {"max_steps": "5"},
                },
                "data_config": {"sources": [{"path": str(corpus)}]},
                "resource_config": {"gpu_count": 1},
                "output_config": {"checkpoint_interval_steps": 1, "keep_last_checkpoints": 10},
            }
            r = await http.post("/jobs", json=body)
            r.raise_for_status()
            ids.append(r.json()["data"]["job_id"])
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            r = await http.get("/jobs", params={"page_size": 100})
            statuses = [j["status"] for j in r.json()["data"]["jobs"]]
            if all(s in ("COMPLETED", "FAILED", "CANCELLED") for s in statuses):
                break
            await asyncio.sleep(0.5)
        else:
            raise RuntimeError("the jobs did not finish within 10 minutes")
        job = (await http.get(f"/jobs/{ids[0]}")).json()["data"]
        if job["status"] != "COMPLETED" or len(job["checkpoints"]) != 5:
            raise RuntimeError(
                f"job {ids[0]}: {job['status']} with {len(job['checkpoints'])} checkpoints "
                f"({job['status_message']}; {job['error']})"
            )
        return ids


# --- the direct client -------------------------------------------------------------------------


def _metadata() -> tuple[tuple[str, str], ...]:
    # What CoordinatorClient sends for a JWT caller: secret, tenant, request id, user.
    return (
        ("x-api-secret", API_SECRET),
        ("x-tenant-id", TENANT),
        ("x-request-id", "req_" + secrets.token_hex(13)),
        ("x-user-id", USER),
    )


def direct_calls(
    stub: coordinator_pb2_grpc.CoordinatorServiceStub, job_id: str
) -> dict[str, Callable[[], Awaitable[bool]]]:
    """Per endpoint: one call, returning whether it answered as the gateway's call does."""
    get_req = coordinator_pb2.GetJobRequest(job_id=job_id, view=coordinator_pb2.JOB_VIEW_FULL)
    list_req = coordinator_pb2.ListJobsRequest(page_size=20, view=coordinator_pb2.JOB_VIEW_BASIC)
    cancel_req = coordinator_pb2.CancelJobRequest(job_id=job_id)

    async def get() -> bool:
        await stub.GetJob(get_req, timeout=30, metadata=_metadata())
        return True

    async def list_() -> bool:
        reply = await stub.ListJobs(list_req, timeout=30, metadata=_metadata())
        return len(reply.jobs) == 20

    async def cancel() -> bool:
        try:
            await stub.CancelJob(cancel_req, timeout=30, metadata=_metadata())
        except grpc.aio.AioRpcError as exc:
            return exc.code() is grpc.StatusCode.FAILED_PRECONDITION
        return False

    return {"get": get, "list": list_, "cancel": cancel}


async def run_direct(
    call: Callable[[], Awaitable[bool]], concurrency: int, duration: float
) -> Figures:
    """`concurrency` loops calling back to back for `duration` seconds (after a warm-up)."""
    for _ in range(50):
        await call()
    latencies: list[float] = []
    unexpected = 0
    stop_at = time.perf_counter() + duration

    async def loop() -> None:
        nonlocal unexpected
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            ok = await call()
            latencies.append(time.perf_counter() - t0)
            unexpected += not ok

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return Figures(
        pct(latencies, 50) * 1e3,
        pct(latencies, 99) * 1e3,
        len(latencies) / elapsed,
        len(latencies),
        unexpected,
    )


# --- wrk -----------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_PCT_LINE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")

_POST_SCRIPT = """
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
"""


def parse_wrk(out: str, expect_non_2xx: bool) -> Figures:
    """p50/p99 (ms) and requests/s from `wrk --latency` output."""
    found = {q: float(v) * _UNITS[unit] for q, v, unit in _PCT_LINE.findall(out)}
    rps, requests = _RPS.search(out), _REQUESTS.search(out)
    if "50" not in found or "99" not in found or rps is None or requests is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    total = int(requests.group(1))
    non_2xx = _NON_2XX.search(out)
    bad = int(non_2xx.group(1)) if non_2xx else 0
    if expect_non_2xx:
        bad = total - bad  # every answer should be the 409
    errors = _SOCKET_ERRORS.search(out)
    if errors:
        bad += sum(int(x) for x in errors.groups())
    return Figures(found["50"], found["99"], float(rps.group(1)), total, bad)


def run_wrk(
    url: str, token: str, concurrency: int, duration: float, script: Path | None, gateway_pid: int
) -> Figures:
    """wrk with one thread (like the direct client's one process) and `concurrency` conns."""
    base = ["wrk", "-t1", f"-c{concurrency}", "--latency", "-H", f"Authorization: Bearer {token}"]
    if script is not None:
        base += ["-s", str(script)]
    # Warm-up (connections, caches, the gateway's first-call paths), then the measurement.
    subprocess.run([*base, "-d1s", url], check=True, capture_output=True)
    cpu0 = cpu_seconds(gateway_pid)
    out = subprocess.run(
        [*base, f"-d{duration:g}s", url], check=True, capture_output=True, text=True
    ).stdout
    cpu = cpu_seconds(gateway_pid) - cpu0
    figures = parse_wrk(out, expect_non_2xx=script is not None)
    figures.cpu_us = cpu / max(figures.requests, 1) * 1e6
    return figures


# --- the run -------------------------------------------------------------------------------------


ENDPOINTS = {
    "get": "GET /jobs/{id}",
    "list": "GET /jobs (20)",
    "cancel": "POST /jobs/{id}/cancel (409)",
}


def start_profiler(pids: list[int], path: Path) -> subprocess.Popen[bytes]:
    """py-spy recording the gateway (and its worker processes) until SIGINT."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[dev]' (or pip install py-spy)")
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pids[0]),
            "--subprocesses",
            "--format",
            "speedscope",
            "--rate",
            "200",
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def measure(args: argparse.Namespace, procs: Processes) -> list[Any]:
    base = f"http://127.0.0.1:{procs.http_port}"
    token = mint_token(JWT_SECRET, tenant_id=TENANT, user_id=USER, ttl_s=24 * 3600)
    await wait_http(f"{base}/health/ready", within=120)
    # Each measured gateway: its label, base URL and pid; the baseline (if any) first.
    gateways = [("", base, procs.gateway.pid)]
    if procs.baseline is not None:
        baseline = f"http://127.0.0.1:{procs.baseline_port}"
        await wait_http(f"{baseline}/health/ready", within=120)
        gateways.insert(0, ("baseline", baseline, procs.baseline.pid))
    t0 = time.monotonic()
    ids = await create_jobs(base, token, procs.tmp, args.jobs)
    print(
        f"# {args.jobs} jobs of 5 steps (5 checkpoints each) completed in "
        f"{time.monotonic() - t0:.0f} s; gateway pid {procs.gateway.pid} "
        f"({args.workers} worker{'s' if args.workers > 1 else ''}), coordinator pid "
        f"{procs.coordinator.pid}, {os.cpu_count()} cores",
        flush=True,
    )
    job_id = ids[0]
    paths = {
        "get": f"{PREFIX}/jobs/{job_id}",
        "list": f"{PREFIX}/jobs",
        "cancel": f"{PREFIX}/jobs/{job_id}/cancel",
    }
    post_script = procs.tmp / "post.lua"
    post_script.write_text(_POST_SCRIPT)
    profiler = None
    if args.profile:
        profile_path = Path(args.profile_output or procs.tmp / "gateway-profile.speedscope.json")
        profiler = start_profiler([procs.gateway.pid], profile_path)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{procs.grpc_port}")
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
    calls = direct_calls(stub, job_id)
    header = (
        f"{'endpoint':<40} {'c':>3} | {'direct p50':>10} {'p99':>7} {'req/s':>7} | "
        f"{'gateway p50':>11} {'p99':>7} {'req/s':>7} | {'added p50':>9} {'kept':>6} | "
        f"{'gw CPU/req':>10}"
    )
    print(header)
    print("-" * len(header), flush=True)
    rows: list[Any] = []
    try:
        for round_ in range(args.rounds):
            for name in args.endpoints:
                for c in args.concurrency:
                    direct = await run_direct(calls[name], c, args.duration)
                    # Alternate which gateway goes first, so neither always follows the other.
                    order = gateways if round_ % 2 == 0 else gateways[::-1]
                    for label, url, pid in order:
                        gateway = await asyncio.to_thread(
                            run_wrk,
                            url + paths[name],
                            token,
                            c,
                            args.duration,
                            post_script if name == "cancel" else None,
                            pid,
                        )
                        rows.append((round_, name, c, direct, gateway, label))
                        _print_row(name, c, direct, gateway, label)
    finally:
        await channel.close(None)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
            print(f"# py-spy profile of the gateway (speedscope): {profile_path}", flush=True)
    return rows


def _print_row(name: str, c: int, direct: Figures, gateway: Figures, label: str) -> None:
    flag = ""
    if direct.unexpected or gateway.unexpected:
        flag = f"  (unexpected answers: {direct.unexpected}/{gateway.unexpected})"
    endpoint = f"{ENDPOINTS[name]}{' [baseline]' if label else ''}"
    print(
        f"{endpoint:<40} {c:>3} | {direct.p50:8.2f}ms {direct.p99:7.2f} "
        f"{direct.rps:7.0f} | {gateway.p50:9.2f}ms {gateway.p99:7.2f} "
        f"{gateway.rps:7.0f} | {gateway.p50 - direct.p50:+7.2f}ms "
        f"{gateway.rps / direct.rps:6.0%} | {gateway.cpu_us:8.0f}µs{flag}",
        flush=True,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument(
        "--concurrency",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 32],
        help="comma-separated connection counts (default 1,32)",
    )
    parser.add_argument(
        "--endpoints",
        type=lambda v: v.split(","),
        default=list(ENDPOINTS),
        help="comma-separated subset of get,list,cancel",
    )
    parser.add_argument("--jobs", type=int, default=21, help="jobs created (at least 20)")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole table")
    parser.add_argument("--profile", action="store_true", help="py-spy profile of the gateway")
    parser.add_argument("--profile-output", type=Path, help="where the profile goes")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also run a second gateway from this source tree (e.g. the src/ of a `git "
        "worktree` of an older commit) on the same coordinator, and measure it right beside "
        "this one for every row (rows marked [baseline])",
    )
    parser.add_argument(
        "--gateway-src",
        type=Path,
        help="run the gateway from this source tree (e.g. the src/ of a `git worktree` of an "
        "older commit) to compare before/after in one run's conditions",
    )
    args = parser.parse_args(argv)
    unknown = set(args.endpoints) - set(ENDPOINTS)
    if unknown:
        parser.error(f"unknown endpoints: {', '.join(sorted(unknown))}")
    if args.jobs < 20:
        parser.error("--jobs must be at least 20 (GET /jobs is measured on a page of 20)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit(WRK_HINT)
    tmp = Path(tempfile.mkdtemp(prefix="scaimind-bench-overhead-"))
    tmp.chmod(0o755)
    procs = start(tmp, args.workers, args.gateway_src, args.baseline_src)
    try:
        rows = asyncio.run(measure(args, procs))
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    [
                        {
                            "round": r,
                            "endpoint": n,
                            "c": c,
                            "direct": vars(d),
                            "gateway": vars(g),
                            "gateway_src": label or "this checkout",
                        }
                        for r, n, c, d, g, label in rows
                    ],
                    indent=1,
                )
            )

    finally:
        stop(*([procs.baseline] if procs.baseline else []), procs.gateway, procs.coordinator)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
