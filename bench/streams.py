"""Benchmark of the SSE log streams: one gateway worker + the reference coordinator, N streams.

Starts the reference coordinator (`scaimind coordinator`) and one gateway worker
(`scaimind serve`, one uvicorn process) as subprocesses, submits a few long-running CUSTOM jobs
that log a line every ~100 ms, then for each N opens N concurrent `follow=true` log streams
(spread over the jobs) and reports, per N:

- memory per open stream: (gateway RSS with N streams - RSS before) / N;
- delivery lag p50/p99: client receive time - the coordinator's log timestamp of each event,
  over every event every stream received in the measurement window;
- `GET /jobs/{id}` latency p50/p99 measured in the same window, next to the idle figure.

The streams are read by `--readers` separate reader processes over raw asyncio sockets (no HTTP
library per stream), and the unary latency is probed from yet another process, so that no
reader's busy event loop inflates the latency figures; the readers' CPU time is reported too.

The bench raises its soft RLIMIT_NOFILE to the hard limit (resource.setrlimit; the coordinator,
the gateway and the readers inherit it) and stops early when the hard limit is too low for the
largest stream count. Stream paths reach the reader processes through a file, not argv.

Usage: .venv/bin/python bench/streams.py [--streams 1000,2000,5000] [--jobs 4] [--window 10]
       [--requests 1000] [--rate 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvloop
from servers import start_servers, stop, wait_http

from scaimind.gateway.security.auth import mint_token

PREFIX = "/v1/modules/scaimind"
API_SECRET = "bench-api-secret"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef-0123456789abcdef"

TICKER = r"""
import os, time
i = 0
while True:
    i += 1
    print(f"tick {i}", flush=True)
    time.sleep(float(os.environ.get("PERIOD", "0.1")))
"""

_TS = re.compile(rb'"timestamp":"([^"]+)"')


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, softirq and irq included."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


_ts_cache: dict[bytes, float] = {}


def parse_ts(raw: bytes) -> float:
    """Epoch seconds of an RFC 3339 timestamp (cached: every stream of a job sees the same)."""
    value = _ts_cache.get(raw)
    if value is None:
        value = datetime.fromisoformat(raw.decode().replace("Z", "+00:00")).timestamp()
        if len(_ts_cache) > 100_000:
            _ts_cache.clear()
        _ts_cache[raw] = value
    return value


class Stream:
    """One follow=true log stream over a raw socket."""

    def __init__(self, port: int, path: str, token: str) -> None:
        self.port, self.path, self.token = port, path, token
        self.lags: list[float] | None = None
        self.events = 0
        self.task: asyncio.Task[None] | None = None
        self.opened = asyncio.Event()
        self.error: str | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        """Connect, check the 200 and read until closed."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            self._writer = writer
            writer.write(
                (
                    f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n"
                ).encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                self.error = head.split(b"\r\n", 1)[0].decode()
                self.opened.set()
                return
            self.opened.set()
            buf = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk
                cut = buf.rfind(b"\n\n")
                if cut < 0:
                    continue
                complete, buf = buf[: cut + 2], buf[cut + 2 :]
                now = time.time()
                stamps = _TS.findall(complete)
                self.events += len(stamps)
                if self.lags is not None:
                    self.lags.extend(now - parse_ts(s) for s in stamps)
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.error = self.error or repr(exc)
            self.opened.set()

    def close(self) -> None:
        """Drop the connection."""
        if self._writer is not None:
            self._writer.close()
        if self.task is not None:
            self.task.cancel()


def probe_main(config: dict[str, Any]) -> None:
    """Probe process: sequential GET /jobs/{id} latencies (seconds) as JSON on stdout.

    At `rate` > 0 the requests start on a fixed schedule (a dashboard polling); at 0 they run
    back to back, which on a 2-core machine keeps probe, gateway and coordinator busy enough
    to compete with everything else for the cores.
    """
    headers = {"Authorization": f"Bearer {config['token']}"}
    out = []
    period = 1 / config["rate"] if config["rate"] > 0 else 0.0
    with httpx.Client(timeout=30) as http:
        for _ in range(20):  # warm the connection
            http.get(config["url"], headers=headers)
        next_at = time.perf_counter()
        for _ in range(config["n"]):
            if period:
                # Pacing, not synchronisation: the schedule of a client polling at `rate`.
                next_at += period
                time.sleep(max(0.0, next_at - time.perf_counter()))
            t0 = time.perf_counter()
            r = http.get(config["url"], headers=headers)
            out.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    print(json.dumps(out))


async def unary_latencies(url: str, token: str, n: int, rate: float) -> list[float]:
    """Run a probe process and return its latencies."""
    config = json.dumps({"url": url, "token": token, "n": n, "rate": rate})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "_probe", config, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    latencies: list[float] = json.loads(out)
    return latencies


async def reader_main(config: dict[str, Any]) -> None:
    """Reader process: open the streams, then on stdin `measure` / `stop` report as JSON."""
    streams = [Stream(config["port"], path, config["token"]) for path in config["paths"]]
    for start in range(0, len(streams), 100):
        wave = streams[start : start + 100]
        for st in wave:
            st.task = asyncio.create_task(st.run())
        await asyncio.gather(*(st.opened.wait() for st in wave))
    print(json.dumps({"opened": [st.error for st in streams if st.error]}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for st in streams:
        st.lags, st.events = [], 0
    cpu0 = time.process_time()
    await asyncio.to_thread(sys.stdin.readline)
    result = {
        "lags": [lag for st in streams for lag in (st.lags or [])],
        "events": sum(st.events for st in streams),
        "cpu": time.process_time() - cpu0,
        "errors": [st.error for st in streams if st.error],
    }
    for st in streams:
        st.close()
    print(json.dumps(result), flush=True)


class Reader:
    """A reader process seen from the bench."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, port: int, token: str, paths: list[str], config_file: Path) -> Reader:
        """Start one reader for these stream paths."""
        # Through a file: thousands of paths on a command line passed the kernel's limit
        # ("Argument list too long" at 5,000 streams).
        config = json.dumps({"port": port, "token": token, "paths": paths})
        await asyncio.to_thread(config_file.write_text, config)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "_reader",
            str(config_file),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**28,
        )
        return cls(proc)

    async def line(self) -> Any:
        """The next JSON line the reader prints."""
        assert self.proc.stdout is not None
        return json.loads(await self.proc.stdout.readline())

    def tell(self, word: str) -> None:
        """Send a command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(word.encode() + b"\n")


@dataclass
class Setup:
    """The processes and files of one bench run."""

    tmp: Path
    script: Path
    corpus: Path
    http_port: int
    gateway: subprocess.Popen[bytes]
    coordinator: subprocess.Popen[bytes]
    nofile: tuple[int, int]


def start(args: argparse.Namespace) -> Setup:
    """Raise the fd limit (inherited by the children) and start coordinator and gateway."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = Path(tempfile.mkdtemp(prefix="scaimind-bench-streams-"))
    # The sandboxed jobs run as another user, who must read the script and the corpus.
    tmp.chmod(0o755)
    script = tmp / "ticker.py"
    script.write_text(TICKER)
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"s {i}"}) + "\n" for i in range(10)))
    servers = start_servers(
        tmp,
        slots=args.jobs,
        env={
            "SCAIMIND_API_SECRET": API_SECRET,
            "SCAIMIND_JWT_SECRET": JWT_SECRET,
            "SCAIMIND_STREAM_CAP_PER_TENANT": "100000",
        },
        python_args=["-m", "cProfile", "-o", str(args.profile_gateway)]
        if args.profile_gateway
        else [],
    )
    http_port, gateway, coordinator = servers.http_port, servers.gateway, servers.coordinator
    return Setup(tmp, script, corpus, http_port, gateway, coordinator, (soft, hard))


async def bench(args: argparse.Namespace, setup: Setup) -> None:
    """Submit the jobs and measure every stream count."""
    script, corpus, http_port = setup.script, setup.corpus, setup.http_port
    gateway, coordinator = setup.gateway, setup.coordinator
    soft, hard = setup.nofile
    base = f"http://127.0.0.1:{http_port}"
    token = mint_token(JWT_SECRET, tenant_id="bench", user_id="bench")
    headers = {"Authorization": f"Bearer {token}"}
    print(
        f"# gateway pid {gateway.pid}, coordinator pid {coordinator.pid}, {os.cpu_count()} cores, "
        f"RLIMIT_NOFILE {hard} (was {soft}); {args.jobs} CUSTOM jobs logging every 0.1 s",
        flush=True,
    )
    await wait_http(f"{base}/health")
    async with httpx.AsyncClient(base_url=base + PREFIX, timeout=30) as http:
        jobs = []
        for i in range(args.jobs):
            body = {
                "name": f"ticker-{i}",
                "training_config": {
                    "training_type": "SFT",
                    "base_model": {"model_id": "tiny"},
                    "framework": {"type": "CUSTOM", "custom_script_path": str(script)},
                    "environment": {"PERIOD": "0.1"},
                },
                "data_config": {"sources": [{"path": str(corpus), "format": "jsonl"}]},
                "resource_config": {"gpu_count": 1},
            }
            r = await http.post("/jobs", json=body, headers=headers)
            if r.is_error:
                raise RuntimeError(f"submitting a job: {r.status_code} {r.text}")
            jobs.append(r.json()["data"]["job_id"])
        for job_id in jobs:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                job = (await http.get(f"/jobs/{job_id}", headers=headers)).json()["data"]
                if job["status"] == "TRAINING":
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(
                    f"job {job_id} did not start: {job['status']} {job['status_message']} "
                    f"{job['error']}"
                )
        probe_url = f"{base}{PREFIX}/jobs/{jobs[0]}"
        idle = await unary_latencies(probe_url, token, args.requests, args.rate)
        idle_p50, idle_p99 = pct(idle, 50) * 1e3, pct(idle, 99) * 1e3
        rss0 = rss_bytes(gateway.pid)
        print(
            f"idle: GET /jobs/{{id}} p50 {idle_p50:.2f} ms  p99 {idle_p99:.2f} ms; "
            f"gateway RSS {rss0 / 2**20:.1f} MiB",
            flush=True,
        )
        print(
            "N      open_s  MiB_rss  KiB/stream  events/s  lag_p50_ms  lag_p99_ms  "
            "unary_p50_ms  unary_p99_ms  (x idle p99)  gw_cpu%  coord_cpu%  readers_cpu%  "
            "errors",
            flush=True,
        )
        for n in args.streams:
            level = await run_level(
                n, jobs, http_port, token, probe_url, args, gateway, coordinator
            )
            level.print_row(rss0, idle_p99)
            # Neighbours on a shared machine move the baseline: measure it again, streams closed.
            again = await unary_latencies(probe_url, token, args.requests, args.rate)
            print(
                f"       idle again (streams closed): GET /jobs/{{id}} p50 "
                f"{pct(again, 50) * 1e3:.2f} ms  p99 {pct(again, 99) * 1e3:.2f} ms",
                flush=True,
            )
        for job_id in jobs:
            await http.post(f"/jobs/{job_id}/cancel", json={}, headers=headers)


@dataclass
class Level:
    """What one stream count measured."""

    n: int
    open_s: float
    rss: int
    events_per_s: float
    lags: list[float]
    unary: list[float]
    busy: list[float]
    errors: list[str]

    def print_row(self, rss0: int, idle_p99: float) -> None:
        """One line of the results table."""
        u50, u99 = pct(self.unary, 50) * 1e3, pct(self.unary, 99) * 1e3
        lag50, lag99 = pct(self.lags, 50) * 1e3, pct(self.lags, 99) * 1e3
        per_stream = (self.rss - rss0) / self.n / 1024
        errors = f"{len(self.errors)}{' ' + str(self.errors[:3]) if self.errors else ''}"
        print(
            f"{self.n:<6} {self.open_s:6.1f}  {self.rss / 2**20:7.1f}  {per_stream:10.1f}  "
            f"{self.events_per_s:8.0f}  {lag50:10.1f}  {lag99:10.1f}  "
            f"{u50:12.2f}  {u99:12.2f}  {u99 / idle_p99:12.2f}  {self.busy[0]:7.0f}  "
            f"{self.busy[1]:10.0f}  {self.busy[2]:10.0f}  {self.busy[3]:9.0f}  {errors}",
            flush=True,
        )


async def run_level(
    n: int,
    jobs: list[str],
    port: int,
    token: str,
    probe_url: str,
    args: argparse.Namespace,
    gateway: subprocess.Popen[bytes],
    coordinator: subprocess.Popen[bytes],
) -> Level:
    paths = [f"{PREFIX}/jobs/{jobs[i % len(jobs)]}/logs?tail=0" for i in range(n)]
    t0 = time.perf_counter()
    readers = [
        await Reader.start(port, token, paths[k :: args.readers], args.tmp / f"reader-{n}-{k}.json")
        for k in range(args.readers)
    ]
    errors: list[str] = []
    for reader in readers:
        errors += (await reader.line())["opened"]
    open_s = time.perf_counter() - t0
    await asyncio.sleep(args.warmup)
    rss = rss_bytes(gateway.pid)
    for reader in readers:
        reader.tell("measure")
    cpu0 = (cpu_seconds(gateway.pid), cpu_seconds(coordinator.pid))
    machine0 = machine_busy()
    w0 = time.perf_counter()
    unary = await unary_latencies(probe_url, token, args.requests, args.rate)
    remaining = args.window - (time.perf_counter() - w0)
    if remaining > 0:
        await asyncio.sleep(remaining)
    elapsed = time.perf_counter() - w0
    cpu1 = (cpu_seconds(gateway.pid), cpu_seconds(coordinator.pid))
    machine1 = machine_busy()
    lags: list[float] = []
    events, reader_cpu = 0, 0.0
    for reader in readers:
        reader.tell("stop")
    for reader in readers:
        result = await reader.line()
        lags += result["lags"]
        events += result["events"]
        reader_cpu += result["cpu"]
        errors += [e for e in result["errors"] if e not in errors]
        await reader.proc.wait()
    # Let the gateway notice the disconnects before the next level.
    await asyncio.sleep(2)
    busy = [(b - a) / elapsed * 100 for a, b in zip(cpu0, cpu1, strict=True)]
    busy.append(reader_cpu / elapsed * 100)
    # Whole machine, in "% of one core" like the per-process figures (2 cores = 200%).
    cores = os.cpu_count() or 1
    busy.append((machine1[0] - machine0[0]) / (machine1[1] - machine0[1]) * 100 * cores)
    return Level(n, open_s, rss, events / elapsed, lags, unary, busy, errors)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_reader":
        # uvloop (installed with uvicorn[standard]) keeps the readers, which stand in for
        # remote clients, from taking more of the shared cores than they must.
        uvloop.run(reader_main(json.loads(Path(sys.argv[2]).read_text())))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "_probe":
        probe_main(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--streams",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1000, 2000, 5000],
        help="comma-separated stream counts",
    )
    parser.add_argument("--jobs", type=int, default=4, help="running CUSTOM jobs")
    parser.add_argument("--readers", type=int, default=2, help="stream reader processes")
    parser.add_argument("--window", type=float, default=10.0, help="measurement seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument(
        "--requests",
        type=int,
        default=1000,
        # A p99 of 200 samples is their second-worst value; 1,000 make it the tenth.
        help="GET /jobs/{id} samples per measurement",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="GET /jobs/{id} per second on a fixed schedule (default 0: back to back)",
    )
    parser.add_argument(
        "--profile-gateway", type=Path, default=None, help="write a cProfile of the gateway here"
    )
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The gateway holds one descriptor per stream (the readers half as many each), plus its own.
    needed = max(args.streams) + 1024
    if hard < needed:
        raise SystemExit(
            f"RLIMIT_NOFILE's hard limit is {hard}; {max(args.streams)} streams need about "
            f"{needed}: raise it (`ulimit -Hn {needed}` as root, or LimitNOFILE= in a unit)"
        )
    setup = start(args)
    args.tmp = setup.tmp
    try:
        asyncio.run(bench(args, setup))
    finally:
        stop(setup.gateway, setup.coordinator)


if __name__ == "__main__":
    main()
