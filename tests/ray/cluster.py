"""A private local Ray head for tests and benchmarks: own temp dir, loopback only, every port
free and explicit, stopped by its own process ids.

`ray stop` kills every Ray process of the user on the machine (other sessions' clusters too), so
this module never calls it. The head is started with `ray start --head --block` in a new session
(`start_new_session=True`): every Ray system process and every worker inherits that session id.
Job entrypoints are the exception: Ray's job supervisor starts each one (`sh -c <entrypoint>`)
in a session of its own; they are found as descendants of the cluster's processes and, should
their supervisor be gone already, by RAY_ADDRESS=<this head's GCS> in their environment (their
whole process group is taken along).

Stopping: SIGTERM to `ray start --block` shuts the node down in order (2-5 s); what is left then
gets SIGTERM, and SIGKILL after a grace period; the temp dir is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ray.job_submission import JobSubmissionClient

RAY_BIN = Path(sys.executable).with_name("ray")


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on loopback (bound together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_band(size: int) -> int:
    """The first port of `size` consecutive free loopback ports for Ray's workers: below the
    kernel's ephemeral range (where the ports above come from, so none of them can fall inside
    it), starting at a random band so two heads do not pick the same one."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    bands = list(range(10_000, low - size, size))
    random.shuffle(bands)
    for start in bands:
        socks: list[socket.socket] = []
        try:
            for port in range(start, start + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {size} free consecutive ports below {low}")


def ray_env() -> dict[str, str]:
    """Environment for `ray start` and for clients: no telemetry, no network lookups."""
    env = dict(os.environ)
    env.update(
        {
            "RAY_USAGE_STATS_ENABLED": "0",
            # Treat this machine as a single-node "cluster": the node IP becomes 127.0.0.1
            # instead of the routable address (Ray rewrites --node-ip-address 127.0.0.1).
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            # Explicit: with RAY_AUTH_MODE unset, an existing ~/.ray/auth_token turns token auth
            # on by itself (a developer's token would break the fixture's readiness probe).
            "RAY_AUTH_MODE": "disabled",
            # No Grafana/Prometheus discovery from the dashboard.
            "RAY_GRAFANA_HOST": "",
            "RAY_PROMETHEUS_HOST": "",
        }
    )
    return env


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _session_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        return int(data[data.rfind(")") + 2 :].split()[3])
    except (OSError, ValueError, IndexError):
        return -1


def _pgid_of(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def _has_env(pid: int, marker: bytes) -> bool:
    """A job entrypoint of this head: the supervisor sets both variables for the driver only."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return False
    return marker in env and any(v.startswith(b"RAY_JOB_CONFIG_JSON_ENV_VAR=") for v in env)


def _alive(pid: int) -> bool:
    """True for a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        return data[data.rfind(")") + 2] != "Z"
    except OSError:
        return False


@dataclass
class LocalRayHead:
    """One private head node. `start()` returns when the job server answers."""

    num_cpus: int = 2
    num_gpus: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    object_store_bytes: int = 80 * 1024 * 1024
    temp_dir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="rsm-", dir="/tmp"))
    )
    gcs_port: int = 0
    dashboard_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    start_seconds: float = 0.0

    @property
    def address(self) -> str:
        """The job server (dashboard) address for JobSubmissionClient."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def start(self, timeout: float = 120.0) -> None:
        ports = free_ports(11)
        self.gcs_port, self.dashboard_port = ports[0], ports[1]
        nm, om, client, agl, agg, rte, met, autoscaler_metrics, dashboard_metrics = ports[2:]
        lo = free_band(100)
        argv = [
            str(RAY_BIN), "start", "--head", "--block",
            "--temp-dir", str(self.temp_dir),
            "--node-ip-address", "127.0.0.1",
            "--port", str(self.gcs_port),
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
            "--node-manager-port", str(nm), "--object-manager-port", str(om),
            "--ray-client-server-port", str(client),
            "--dashboard-agent-listen-port", str(agl), "--dashboard-agent-grpc-port", str(agg),
            "--runtime-env-agent-port", str(rte), "--metrics-export-port", str(met),
            "--min-worker-port", str(lo), "--max-worker-port", str(lo + 99),
            "--num-cpus", str(self.num_cpus), "--num-gpus", str(self.num_gpus),
            "--object-store-memory", str(self.object_store_bytes),
            "--disable-usage-stats",
        ]  # fmt: skip
        if self.resources:
            argv += ["--resources", json.dumps(self.resources)]
        t0 = time.monotonic()
        log = open(self.temp_dir / "ray-start.log", "wb")  # noqa: SIM115
        env = ray_env()
        # Two more servers with fixed default ports (44217, 44227): a second head on the
        # machine would collide on them.
        env["AUTOSCALER_METRIC_PORT"] = str(autoscaler_metrics)
        env["DASHBOARD_METRIC_PORT"] = str(dashboard_metrics)
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = (self.temp_dir / "ray-start.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{out[-3000:]}")
            if self._ready():
                self.start_seconds = time.monotonic() - t0
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError("the Ray head did not become ready")

    @property
    def token(self) -> str:
        """The cluster's token when it runs with RAY_AUTH_MODE=token ('' otherwise)."""
        return self.extra_env.get("RAY_AUTH_TOKEN", "")

    @property
    def headers(self) -> dict[str, str]:
        """What a client of the job server sends (the token, if any)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self) -> JobSubmissionClient:
        """A Ray Jobs SDK client of this head."""
        return JobSubmissionClient(self.address, headers=self.headers)

    def _ready(self) -> bool:
        # The job server answers once the dashboard's JobHead module is up; nodes must be
        # registered too, else the first submission waits for the raylet.
        headers = self.headers
        try:
            req = urllib.request.Request(f"{self.address}/api/jobs/", headers=headers)
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status != 200:
                    return False
            req = urllib.request.Request(f"{self.address}/nodes?view=summary", headers=headers)
            with urllib.request.urlopen(req, timeout=2) as r:
                body = json.loads(r.read())
            return bool(body.get("data", {}).get("summary"))
        except (OSError, ValueError):
            return False

    def pids(self) -> set[int]:
        """Every live process of this cluster: its session, the job entrypoints (each in a
        session of its own, carrying RAY_ADDRESS=<this GCS> in its environment) with their
        process groups, and all their descendants."""
        if self.proc is None:
            return set()
        sid = self.proc.pid  # session leader: start_new_session made ray start's pid the sid
        marker = f"RAY_ADDRESS={self.gcs_address}".encode()
        everything = _all_pids()
        found = {p for p in everything if _session_of(p) == sid}
        groups = {_pgid_of(p) for p in everything if _has_env(p, marker)} - {-1, os.getpgid(0)}
        found |= {p for p in everything if _pgid_of(p) in groups}
        stack = list(found)
        while stack:
            for child in _children(stack.pop()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return {p for p in found if _alive(p)}

    def stop(self, grace: float = 10.0) -> float:
        """Stop exactly this cluster and remove its temp dir; returns the seconds it took.

        Job entrypoints (and their process groups) are SIGKILLed first, then `ray start --block`
        gets SIGTERM and shuts its node down in order (2-5 s); whatever is still alive after
        that gets SIGTERM, then SIGKILL after `grace`.
        """
        t0 = time.monotonic()
        # Running jobs first: with a job running, `ray start --block` waits ~30 s on SIGTERM
        # before it tears the node down (measured); without, 2-5 s.
        marker = f"RAY_ADDRESS={self.gcs_address}".encode()
        own = {-1, os.getpgid(0)}
        for pgid in {_pgid_of(p) for p in _all_pids() if _has_env(p, marker)} - own:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        pids = self.pids()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        pids |= self.pids()
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pids |= self.pids()  # workers started during the shutdown
            if not any(_alive(p) for p in pids):
                break
            time.sleep(0.1)
        for pid in pids | self.pids():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return time.monotonic() - t0


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]
