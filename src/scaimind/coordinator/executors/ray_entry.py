"""The launcher of a ScaiMind job on a Ray node: the entrypoint of its Ray job.

    python -m scaimind.coordinator.executors.ray_entry <launch file>

The launch file (JSON, mode 0600, in the coordinator's own folder on the shared root) holds the
job's `ProcessSpec`: argv, environment, working directory, metrics file, and the sandbox's
mounts and limits. So nothing of the job (its variables, its paths) is in what Ray shows about
the job: Ray shows `runtime_env` and the entrypoint in plain text to every client of its job
server.

The launcher runs the process exactly as the local executor does (process.py: under the
bubblewrap sandbox when the spec has one, from the clean environment, with the per-job limits,
the same pipes and metrics-file tail) and writes what the coordinator needs to its stdout, which
is the Ray job's log the coordinator follows (`tail_job_logs`). One record per line, a tag and a
JSON value:

    @s {"pid": 123, "node": "host"}      the process runs
    @o "line"  /  @e "line"              a line the process wrote to stdout / stderr
    @m {...}                             an event of the metrics file (the event protocol)
    @b {"line": "...", "error": "..."}   a metrics-file line that is not an event
    @x {"code": 0}                       the process ended ({"code": null, "error": …}: it
                                         never ran)

JSON escapes every control character, so no byte a job writes can end a record or start one:
a job cannot forge an exit record or another tag. Lines Ray itself writes into the log have no
tag.

Control: the coordinator writes `stop` (checkpoint and stop: SIGTERM to the job's process group,
SIGKILL after the grace) or `kill` into the control file. A `kill` found before the start means
the job was cancelled while Ray still held it back (Ray's stop_job cannot stop a PENDING job; it
starts it later), so the process never starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scaimind.coordinator.config import JobLimits, SandboxConfig
from scaimind.coordinator.executors.base import os_message
from scaimind.coordinator.executors.process import ProcessSpec, follow_process, start_process
from scaimind.coordinator.executors.sandbox import Mount, Sandbox

MODULE = "scaimind.coordinator.executors.ray_entry"
# An argv entry standing for the Python interpreter of the node (the one running this module).
PYTHON = "{python}"
# Devices Ray assigned to this job: the only variables of Ray's environment a job gets.
DEVICE_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "NEURON_RT_VISIBLE_CORES",
    "TPU_VISIBLE_CHIPS",
    "ONEAPI_DEVICE_SELECTOR",
)
STARTED, STDOUT, STDERR, EVENT, BAD_EVENT, EXIT = "s", "o", "e", "m", "b", "x"
# Pieces of a long output line, in characters (a record stays far below the 4 MiB websocket
# message limit of the coordinator's log follower, whatever the JSON escaping adds).
_PIECE = 64 * 1024
_MAX_EVENT = 256 * 1024
_CONTROL_POLL_SECONDS = 0.2


def launch_document(spec: ProcessSpec, control: Path, grace: float, python: str) -> dict[str, Any]:
    """What the launch file holds for `spec` (`python`, the coordinator's interpreter, becomes
    the node's)."""
    sandbox = spec.sandbox
    return {
        "argv": [PYTHON if arg == python else arg for arg in spec.argv],
        "env": spec.env,
        "cwd": str(spec.cwd),
        "metrics_file": str(spec.metrics_file),
        "mounts": [[str(m.host), m.inside, m.writable] for m in spec.mounts],
        "inside_cwd": spec.inside_cwd,
        "sandbox": None
        if sandbox is None
        else {
            "config": sandbox.config.model_dump(),
            "protected": [str(p) for p in sandbox.protected],
        },
        "limits": spec.limits.model_dump(),
        "owner": list(spec.owner) if spec.owner is not None else None,
        "control": str(control),
        "grace": grace,
    }


def process_spec(
    doc: dict[str, Any], python: str = sys.executable, extra_env: dict[str, str] | None = None
) -> ProcessSpec:
    """The `ProcessSpec` of a launch file, on this node."""
    sandbox = None
    if doc.get("sandbox"):
        sandbox = Sandbox(
            SandboxConfig(**doc["sandbox"]["config"]),
            protected=[Path(p) for p in doc["sandbox"]["protected"]],
        )
    owner = doc.get("owner")
    return ProcessSpec(
        argv=[python if arg == PYTHON else str(arg) for arg in doc["argv"]],
        env={**doc["env"], **(extra_env or {})},
        cwd=Path(doc["cwd"]),
        metrics_file=Path(doc["metrics_file"]),
        mounts=[Mount(Path(host), inside, bool(rw)) for host, inside, rw in doc["mounts"]],
        inside_cwd=str(doc.get("inside_cwd") or ""),
        sandbox=sandbox,
        limits=JobLimits(**doc["limits"]),
        owner=(int(owner[0]), int(owner[1])) if owner else None,
    )


def parse_record(line: str) -> tuple[str, Any]:
    """(tag, value) of a launcher record; ("", None) for any other line (Ray's own)."""
    if len(line) < 3 or line[0] != "@" or line[2] != " ":
        return "", None
    try:
        return line[1], json.loads(line[3:])
    except json.JSONDecodeError:
        return "", None


class Relay:
    """An `OutputSink` that writes records to stdout (the Ray job's log)."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout

    def emit(self, tag: str, value: Any) -> None:
        """One record."""
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
        self.out.write(f"@{tag} {text}\n")
        self.out.flush()

    def on_output(self, source: str, lines: Sequence[str]) -> None:
        tag = STDOUT if source == "stdout" else STDERR
        for line in lines:
            for i in range(0, max(len(line), 1), _PIECE):
                self.emit(tag, line[i : i + _PIECE])

    def on_events(self, events: Sequence[dict[str, Any]]) -> None:
        for event in events:
            text = json.dumps(event, ensure_ascii=True, separators=(",", ":"))
            if len(text) > _MAX_EVENT:
                self.emit(BAD_EVENT, {"line": text[:200], "error": "line too long"})
            else:
                self.out.write(f"@{EVENT} {text}\n")
        self.out.flush()

    def on_bad_event(self, line: str, error: str) -> None:
        self.emit(BAD_EVENT, {"line": line[:1000], "error": error})


def _control(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


async def run(doc: dict[str, Any], relay: Relay) -> int | None:
    """Run the launch's process; its exit code (None when it never ran)."""
    control = Path(doc["control"])
    if _control(control) == "kill":
        relay.emit(EXIT, {"code": None, "error": "cancelled before it started"})
        return None
    devices = {name: os.environ[name] for name in DEVICE_VARIABLES if name in os.environ}
    spec = process_spec(doc, extra_env=devices)
    # Ray kills the launcher's process group when the job's supervisor dies; a process outside
    # the sandbox (in a session of its own) goes with the launcher instead.
    spec.die_with_parent = spec.sandbox is None
    try:
        running = await start_process(spec)
    except OSError as e:
        relay.emit(EXIT, {"code": None, "error": f"cannot start the process: {os_message(e)}"})
        return None
    relay.emit(STARTED, {"pid": running.pid, "node": socket.gethostname()})
    loop = asyncio.get_running_loop()
    escalation: list[asyncio.TimerHandle] = []

    def stop() -> None:
        # Checkpoint and stop, as the local executor's stop: the job's whole process group.
        running.signal(signal.SIGTERM)
        if not escalation:
            escalation.append(loop.call_later(float(doc["grace"]), running.signal, signal.SIGKILL))

    async def watch() -> None:
        stopping = False
        while True:
            order = _control(control)
            if order == "kill":
                running.signal(signal.SIGKILL)
            elif order == "stop" and not stopping:
                stopping = True
                stop()
            await asyncio.sleep(_CONTROL_POLL_SECONDS)

    # A signal to the launcher itself (Ray's stop_job, `ray job stop`) is a stop request too:
    # the launcher lives on to report how the process ended.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    watcher = asyncio.create_task(watch())
    try:
        code = await follow_process(running, spec, relay)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        for timer in escalation:
            timer.cancel()
    relay.emit(EXIT, {"code": code})
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launch file named on the command line; the exit status mirrors the process's."""
    args = list(sys.argv[1:] if argv is None else argv)
    relay = Relay()
    try:
        doc = json.loads(Path(args[0]).read_text())
        code = asyncio.run(run(doc, relay))
    except Exception as e:  # the coordinator gets a record instead of a traceback
        relay.emit(EXIT, {"code": None, "error": f"the launcher failed ({type(e).__name__})"})
        return 1
    if code is None:
        return 1
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
