"""The Ray executor: every attempt of a job is a Ray job, submitted through the Ray Jobs API.

- Submission id = `<job id>-a<attempt>` (so `ray job list` shows the ScaiMind id); entrypoint =
  the launcher (ray_entry.py) with the attempt's launch file, which runs the same process as the
  local executor would (the trainer, the evaluator or the CUSTOM script, in the bubblewrap
  sandbox when the coordinator uses it). Metadata: job id, attempt, tenant and labels; the
  job's variables never go to Ray (its job server shows them to every client).
- Resources: the GPUs (and accelerator type) or CPU slots our scheduler reserved, pinned to the
  node it chose (`ray.io/node-id` label selector). Ray does not refuse what does not fit, it
  waits, and not in our priority order: the coordinator stays the gate and submits only what
  its slot table says fits; an attempt Ray still holds back after `pending_timeout_seconds`
  (someone else uses the cluster) is withdrawn and the job waits in our queue again.
- Logs, metrics and the exit come back through the Ray job's log (`tail_job_logs`), as the
  launcher's tagged records; Ray replays a log from its start, so a follower that attaches again
  (a broken stream, a restarted coordinator) skips the records it delivered (`delivered`).
- Stop with checkpoint: a `stop` order in the control file on the shared root (the launcher
  sends SIGTERM to the job's process group, SIGKILL after the grace; Ray's own stop_job would
  kill a sandboxed job at once); cancel: a `kill` order plus `stop_job`.
- Runs do not depend on the coordinator: a restarted coordinator adopts them.

Only the job server's HTTP address is needed (no `ray.init()`, no GCS port). The SDK is
synchronous and sends its requests without a timeout, so calls run in a small thread pool with
one (`_Client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import requests
from ray.exceptions import AuthenticationError
from ray.job_submission import JobStatus, JobSubmissionClient

from scaimind.contract.private_files import private_dir
from scaimind.coordinator.config import RayConfig
from scaimind.coordinator.executors.base import (
    ExecutorError,
    Inventory,
    LaunchSpec,
    RunExit,
    RunHandle,
    StartedCallback,
    TrackedTasks,
    kind_of,
)
from scaimind.coordinator.executors.inventory import CPU, NodeSpec
from scaimind.coordinator.executors.process import OutputSink
from scaimind.coordinator.executors.ray_entry import MODULE, launch_document, process_spec
from scaimind.coordinator.executors.ray_log import LogReader, RayRun
from scaimind.coordinator.status import invalid
from scaimind.v1 import common_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

KIND = "ray"
ACCELERATOR = "accelerator_type:"
NODE_ID_LABEL = "ray.io/node-id"
META_JOB, META_ATTEMPT = "scaimind_job_id", "scaimind_attempt"
META_TENANT, META_LABELS = "scaimind_tenant", "scaimind_labels"
GIB = 1024**3
# Ray reads a log file and the job's status once a second; the follower looks as often.
_POLL_SECONDS = 1.0
# The job ended without the launcher's exit record (its launcher was killed): how long the log
# stream may take to deliver what is left.
_END_WAIT_SECONDS = 10.0
# How long the job server may stay unreachable before a followed run counts as lost.
_LOST_AFTER_SECONDS = 300.0
# A stop whose process has not ended this long after its grace is killed through Ray.
_STOP_MARGIN_SECONDS = 15.0


def submission_id(job_id: str, attempt: int) -> str:
    """The Ray submission id of an attempt."""
    return f"{job_id}-a{attempt}"


class _Client(JobSubmissionClient):
    """The SDK with a timeout on every request (it sends none: a stuck job server would hold a
    thread forever). `_do_request` is private; ray is pinned to the version it was read in."""

    def __init__(self, address: str, timeout: float, headers: dict[str, str] | None) -> None:
        self._timeout = timeout
        super().__init__(address, headers=headers)

    def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super()._do_request(method, endpoint, **kwargs)

    def get_json(self, endpoint: str) -> Any:
        """GET a JSON document of the dashboard (the state API)."""
        response = self._do_request("GET", endpoint)
        if response.status_code != 200:
            self._raise_error(response)
        return response.json()


# What a call to the job server raises: the SDK's RuntimeError("Request failed with status code
# N: …"), a refused token, requests' connection errors (OSError), our timeout.
_SERVER_ERRORS = (RuntimeError, AuthenticationError, OSError, TimeoutError)


def _status_code(error: BaseException) -> int:
    """The HTTP status in the SDK's RuntimeError('Request failed with status code N: …')."""
    text = str(error)
    marker = "status code "
    if isinstance(error, RuntimeError) and marker in text:
        with contextlib.suppress(ValueError):
            return int(text.split(marker, 1)[1].split(":", 1)[0].strip(". "))
    return 0


def _describe(error: BaseException) -> str:
    """An error of the job server in a few words: never Ray's text (tracebacks, paths)."""
    if isinstance(error, AuthenticationError):
        return "it refused the credentials (SCAIMIND_RAY_AUTH_TOKEN must be the cluster's token)"
    code = _status_code(error)
    if code:
        return f"HTTP {code}"
    if isinstance(error, TimeoutError | requests.Timeout):
        return "no answer in time"
    if isinstance(error, ValueError | KeyError | TypeError):
        return "an answer of an unexpected form"
    return "no connection"


class RayExecutor:
    """Runs attempts as Ray jobs (see the module docstring)."""

    kind = KIND
    keeps_running = True

    def __init__(self, config: RayConfig, shared: Path) -> None:
        self.config = config
        self.refresh_seconds = config.inventory_seconds
        self.python = config.python or sys.executable
        self.launches = shared / "launches"
        token = config.auth_token
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ray-jobs")
        self._client: _Client | None = None
        self._lock = asyncio.Lock()
        self._tasks = TrackedTasks()
        self._largest = {"memory": 0.0, "CPU": 0.0}
        # Nodes where Ray held back an attempt (someone else's work): node -> (needs, since).
        self._held: dict[str, tuple[dict[str, float], float]] = {}

    # ---- plumbing ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.wait_for(
            loop.run_in_executor(self._pool, call), self.config.request_timeout_seconds + 5
        )

    async def client(self) -> _Client:
        """The SDK client (its constructor asks the job server for its version)."""
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await self._call(
                        _Client,
                        self.config.address,
                        self.config.request_timeout_seconds,
                        self._headers,
                    )
                except _SERVER_ERRORS as e:
                    raise ExecutorError(
                        f"cannot reach the Ray job server at {self.config.address}: {_describe(e)}"
                    ) from e
            return self._client

    def _files(self, sid: str) -> tuple[Path, Path]:
        return self.launches / f"{sid}.json", self.launches / f"{sid}.control"

    # ---- inventory --------------------------------------------------------------------------

    async def inventory(self) -> Inventory:
        """Alive nodes with GPUs: their GPUs as slots of their accelerator type; CPU-only nodes:
        their CPUs as CPU slots (a dead node is not listed: the manager takes it offline)."""
        c = await self.client()
        try:
            raw = await self._call(c.get_json, "/api/v0/nodes?detail=1&limit=10000")
            items = [n for n in raw["data"]["result"]["result"] if n.get("state") == "ALIVE"]
        except (*_SERVER_ERRORS, ValueError, KeyError, TypeError) as e:
            raise ExecutorError(
                f"cannot read the nodes of the Ray cluster at {self.config.address}: {_describe(e)}"
            ) from e
        nodes: list[NodeSpec] = []
        largest = {"memory": 0.0, "CPU": 0.0}
        for item in items:
            total: dict[str, float] = item.get("resources_total") or {}
            gpus = int(total.get("GPU", 0))
            if gpus > 0:
                types = sorted(k[len(ACCELERATOR) :] for k in total if k.startswith(ACCELERATOR))
                gpu_type, slots = (types[0] if types else "GPU"), gpus
            else:
                gpu_type, slots = CPU, int(total.get("CPU", 0))
            if slots < 1:
                continue  # a head started with --num-cpus 0 runs no jobs
            node_id = str(item["node_id"])
            raw_labels = item.get("labels") or {}
            labels = {str(k): v for k, v in raw_labels.items() if isinstance(v, str)}
            name = item.get("node_name") or item.get("node_ip") or node_id[:12]
            nodes.append(NodeSpec(node_id, str(name), gpu_type, slots, labels))
            for key in largest:
                largest[key] = max(largest[key], float(total.get(key, 0)))
        self._largest = largest
        if self._held:
            await self._release_held(c)
        return Inventory(nodes, busy=frozenset(self._held))

    async def _release_held(self, c: _Client) -> None:
        """Nodes where Ray has room again for what was held back there take work again (Ray's
        usage view lags by seconds; at worst a node is released after a few pending timeouts)."""
        try:
            raw = await self._call(c.get_json, "/api/cluster_status")
            usage = raw["data"]["clusterStatus"]["loadMetricsReport"].get("usageByNode") or {}
        except (*_SERVER_ERRORS, ValueError, KeyError, TypeError):
            usage = {}
        now = time.monotonic()
        for node_id, (needs, since) in list(self._held.items()):
            used = usage.get(node_id) or {}
            room = bool(used) and all(
                key in used and used[key][1] - used[key][0] >= amount
                for key, amount in needs.items()
            )
            if room or now - since > 5 * max(self.config.pending_timeout_seconds, 10.0):
                del self._held[node_id]

    def check_resources(self, rc: common_pb2.ResourceConfig, field: str) -> None:
        """One node per job; memory and CPU cores a node of the cluster has."""
        if rc.num_nodes > 1:
            raise invalid(
                f"{field}.num_nodes: the Ray executor runs a job on one node (a Ray job's "
                f"entrypoint runs on one node); ask for 1, not {rc.num_nodes}"
            )
        memory = self._largest["memory"]
        if rc.memory_gb and rc.memory_gb * GIB > memory:
            raise invalid(
                f"{field}.memory_gb: {rc.memory_gb:g} GB is more than any Ray node offers "
                f"(largest: {memory / GIB:.1f} GB)"
            )
        if rc.cpu_cores > self._largest["CPU"]:
            raise invalid(
                f"{field}.cpu_cores: {rc.cpu_cores} is more than any Ray node has "
                f"(largest: {self._largest['CPU']:g})"
            )

    # ---- start / adopt ----------------------------------------------------------------------

    def planned_run_id(self, job_id: str, attempt: int) -> str:
        """Known in advance: the submission id."""
        return f"{KIND}:{submission_id(job_id, attempt)}"

    def _submit_args(self, spec: LaunchSpec, launch: Path) -> dict[str, Any]:
        p = spec.placement
        sid = submission_id(spec.job_id, spec.attempt)
        args: dict[str, Any] = {
            "entrypoint": shlex.join([self.python, "-m", MODULE, str(launch)]),
            "submission_id": sid,
            # Everything here is readable by every client of the job server: settings only.
            # How long Ray's own stop (a cancel; `ray job stop`) waits before SIGKILL.
            "runtime_env": {
                "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(math.ceil(spec.stop_grace_seconds))}
            },
            "metadata": {
                META_JOB: spec.job_id,
                META_ATTEMPT: str(spec.attempt),
                META_TENANT: spec.tenant_id,
                META_LABELS: json.dumps(dict(spec.labels), sort_keys=True),
            },
        }
        if p.gpu_type != CPU:
            args["entrypoint_num_gpus"] = p.slots_per_node
            if p.gpu_type != "GPU":
                # A GPU node has accelerator_type:<T> = 1; a job takes a sliver of it (as
                # Ray's own accelerator_type option does), so any number of jobs fit.
                args["entrypoint_resources"] = {ACCELERATOR + p.gpu_type: 0.001}
            if p.cpu_cores:
                args["entrypoint_num_cpus"] = p.cpu_cores
        else:
            # Always a resource: a Ray job asking for none runs on the head and uses nothing.
            args["entrypoint_num_cpus"] = p.slots_per_node
        if p.memory_bytes:
            args["entrypoint_memory"] = p.memory_bytes
        if p.node_ids:
            # Our scheduler chose the node; Ray must not put the job elsewhere.
            args["entrypoint_label_selector"] = {NODE_ID_LABEL: p.node_ids[0]}
        return args

    async def start(self, spec: LaunchSpec) -> RunHandle:
        """Write the launch file and submit the Ray job; a duplicate of this attempt is adopted."""
        c = await self.client()
        sid = submission_id(spec.job_id, spec.attempt)
        launch, control = self._files(sid)
        private_dir(self.launches)
        with contextlib.suppress(FileNotFoundError):
            control.unlink()
        document = launch_document(spec.process, control, spec.stop_grace_seconds, sys.executable)
        fd = os.open(launch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(document, f)
        try:
            await self._call(c.submit_job, **self._submit_args(spec, launch))
        except _SERVER_ERRORS as e:
            # A duplicate id answers HTTP 500 ("already exists"); a lost answer to a submit
            # that worked looks like a timeout. Either way, if Ray has this attempt, it is ours.
            try:
                run = await self.adopt(
                    self.planned_run_id(spec.job_id, spec.attempt), spec.job_id, 0
                )
            except ExecutorError:
                run = None
            if run is None:
                launch.unlink(missing_ok=True)  # it holds the job's variables
                raise ExecutorError(f"the Ray job server refused the job: {_describe(e)}") from e
            run.process, run.adopted = spec.process, False
            return run
        return RayRun(
            run_id=self.planned_run_id(spec.job_id, spec.attempt),
            job_id=spec.job_id,
            attempt=spec.attempt,
            label=f"Ray job {sid}",
            node_id=spec.placement.node_ids[0] if spec.placement.node_ids else "",
            started_at=time.time(),
            process=spec.process,
            submission_id=sid,
            launch_file=launch,
            control_file=control,
            needs=_needs(spec),
        )

    async def adopt(self, run_id: str, job_id: str, delivered: int) -> RunHandle | None:
        """The Ray job of a previous coordinator, if Ray still has it and it is this job's."""
        if kind_of(run_id) != KIND:
            return None
        sid = run_id.split(":", 1)[1]
        c = await self.client()
        try:
            info = await self._call(c.get_job_info, sid)
        except _SERVER_ERRORS as e:
            if _status_code(e) == 404:
                return None
            raise ExecutorError(f"cannot ask the Ray job server about {sid}: {_describe(e)}") from e
        meta = info.metadata or {}
        if meta.get(META_JOB) != job_id:
            return None
        launch, control = self._files(sid)
        process = None
        try:
            process = process_spec(json.loads(launch.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Only the mapping of reported paths is lost: checkpoint events are then ignored.
            log.warning("job %s: the launch file of %s is unreadable (%s)", job_id, sid, e)
        return RayRun(
            run_id=run_id,
            job_id=job_id,
            attempt=int(meta.get(META_ATTEMPT) or 0),
            label=f"Ray job {sid}",
            node_id=info.driver_node_id or "",
            delivered=delivered,
            adopted=True,
            started_at=(info.start_time or 0) / 1000,
            process=process,
            submission_id=sid,
            launch_file=launch,
            control_file=control,
            needs={},
        )

    # ---- follow -----------------------------------------------------------------------------

    async def follow(
        self,
        run: RunHandle,
        sink: OutputSink,
        on_started: StartedCallback,
        on_progress: StartedCallback | None = None,
    ) -> RunExit:
        """The Ray job's log until the launcher's exit record (or the job's end)."""
        r = _ray(run)
        c = await self.client()
        reader = LogReader(r, sink, on_started, on_progress)
        tail: asyncio.Task[None] | None = None
        attaches = 0
        attach_at = next_poll = pending_since = ended_at = unreachable_since = 0.0
        withdrawn = lost_contact = False
        try:
            while True:
                if tail is None and time.monotonic() >= attach_at:
                    tail = asyncio.create_task(self._tail(c, reader))
                if tail is not None:
                    await asyncio.wait({tail}, timeout=0.2)
                else:
                    await asyncio.sleep(0.2)
                now = time.monotonic()
                if tail is not None and tail.done():
                    broke = tail.exception()
                    tail = None
                    if reader.gone or (reader.exit is not None and broke is None):
                        break  # the whole log is read (or there is no such job)
                    # A broken stream, or one a restarting job server closed: ask Ray, and
                    # attach again (Ray replays the log; the reader skips what it delivered).
                    if broke is not None:
                        log.info("log stream of %s broke (%r)", r.label, broke)
                    reader.reset()
                    attach_at = now + min(0.5 * 2**attaches, 5.0)
                    attaches += 1
                    next_poll = 0.0
                if now < next_poll:
                    continue
                quick = reader.exit is not None or r.stopping
                next_poll = now + (0.2 if quick else _POLL_SECONDS)
                phase = await self._phase(c, r.submission_id)
                if phase == "unreachable":
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since > _LOST_AFTER_SECONDS:
                        lost_contact = True
                        break
                    continue
                unreachable_since = 0.0
                if phase == "gone":
                    reader.gone = True
                    break
                if phase == "pending":
                    if r.stopping:
                        break  # stopped before it ran: the launcher will not start it
                    pending_since = pending_since or now
                    limit = self.config.pending_timeout_seconds
                    if limit and now - pending_since > limit:
                        self.kill(r)
                        if r.node_id:
                            self._held[r.node_id] = (r.needs, now)
                        withdrawn = True
                        break
                elif phase == "ended":
                    if reader.exit is not None:
                        break
                    # No exit record yet: the stream may still deliver it, for a while.
                    ended_at = ended_at or now
                    if now - ended_at > _END_WAIT_SECONDS:
                        break
        finally:
            if tail is not None and not tail.done():
                tail.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tail
        return await self._exit(c, r, reader, withdrawn, lost_contact)

    async def _tail(self, c: _Client, reader: LogReader) -> None:
        try:
            async for chunk in c.tail_job_logs(reader.run.submission_id):
                reader.feed(chunk)
        except aiohttp.WSServerHandshakeError as e:
            if e.status == 404:
                reader.gone = True
                return
            raise

    async def _phase(self, c: _Client, sid: str) -> str:
        try:
            status = await self._call(c.get_job_status, sid)
        except _SERVER_ERRORS as e:
            return "gone" if _status_code(e) == 404 else "unreachable"
        if status == JobStatus.PENDING:
            return "pending"
        return "running" if status == JobStatus.RUNNING else "ended"

    async def _exit(
        self, c: _Client, r: RayRun, reader: LogReader, withdrawn: bool, lost_contact: bool
    ) -> RunExit:
        if withdrawn:
            waited = round(self.config.pending_timeout_seconds)
            return RunExit(
                None, withdrawn=True, detail=f"the Ray cluster kept it waiting for {waited} s"
            )
        if lost_contact:
            self.kill(r)
            return RunExit(None, lost=True, detail="lost contact with the Ray job server")
        if reader.exit is not None:
            code = reader.exit.get("code")
            if isinstance(code, int):
                return RunExit(code)
            error = reader.exit.get("error")
            return RunExit(None, detail=str(error) if isinstance(error, str) else "it never ran")
        if reader.gone:
            return RunExit(None, lost=True, detail="the Ray job no longer exists")
        try:
            info = await self._call(c.get_job_info, r.submission_id)
        except _SERVER_ERRORS as e:
            lost = "no longer exists" if _status_code(e) == 404 else "could not be asked"
            return RunExit(None, lost=True, detail=f"the Ray job {lost}")
        if info.status == JobStatus.PENDING:
            return RunExit(None, detail="stopped before it started on the Ray cluster")
        if r.started or info.status == JobStatus.RUNNING:
            self.kill(r)
            # Ray's message carries log tails and paths; only the state is shown.
            return RunExit(
                None, lost=True, detail=f"the Ray job ended ({info.status}) without an exit status"
            )
        kind = str(info.error_type or "unknown error").lower().replace("_", " ")
        return RunExit(None, detail=f"Ray could not run the job ({kind})")

    # ---- stop / kill ------------------------------------------------------------------------

    def _order(self, r: RayRun, order: str) -> None:
        try:
            r.control_file.write_text(order)
        except OSError as e:
            log.warning("%s: cannot write the %s order: %s", r.label, order, e)

    def stop(self, run: RunHandle, grace: float) -> None:
        """The launcher sends SIGTERM, and SIGKILL after `grace`; Ray kills what is left."""
        r = _ray(run)
        r.stopping = True
        self._order(r, "stop")
        if r.escalation is None:
            r.escalation = asyncio.get_running_loop().call_later(
                grace + _STOP_MARGIN_SECONDS, self.kill, r
            )

    def kill(self, run: RunHandle) -> None:
        """The launcher kills the process group at once; Ray stops the job."""
        r = _ray(run)
        r.stopping = True
        self._order(r, "kill")
        self._tasks.spawn(self._stop_job(r))

    async def _stop_job(self, r: RayRun) -> None:
        try:
            c = await self.client()
            await self._call(c.stop_job, r.submission_id)
        except (ExecutorError, *_SERVER_ERRORS) as e:
            if _status_code(e) != 404:
                log.warning("%s: stop_job failed: %s", r.label, _describe(e))

    def stats(self, run: RunHandle) -> dict[str, float]:
        """Not known on Ray (the node's agent has them; not read)."""
        return {}

    def release(self, run: RunHandle) -> None:
        """Cancel the stop's escalation; remove the launch file (it holds the job's variables)
        and the control file."""
        r = _ray(run)
        if r.escalation is not None:
            r.escalation.cancel()
        for path in (r.launch_file, r.control_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def discard(self, run_id: str) -> None:
        """Nothing: a Ray job that cannot be adopted no longer exists or is not this job's."""

    async def close(self) -> None:
        """Finish pending stop requests; release the threads."""
        await self._tasks.drain(5.0)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _needs(spec: LaunchSpec) -> dict[str, float]:
    p = spec.placement
    return {"CPU" if p.gpu_type == CPU else "GPU": float(p.slots_per_node)}


def _ray(run: RunHandle) -> RayRun:
    assert isinstance(run, RayRun), run
    return run
