"""The training workload: runs the built-in trainer or a CUSTOM script per the process contract."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scaimind.coordinator.data import LocalSource, resolve_source
from scaimind.coordinator.evaluations import job_drive
from scaimind.coordinator.executor import OutputSink, ProcessSpec, process_env, script_argv
from scaimind.coordinator.manager import JobManager, JobRuntime, L, to_int, to_numbers
from scaimind.coordinator.notifier import LOGS, METRICS
from scaimind.coordinator.store import PendingLog
from scaimind.v1 import common_pb2, coordinator_pb2

LEVELS = {
    "DEBUG": L.LOG_LEVEL_DEBUG,
    "INFO": L.LOG_LEVEL_INFO,
    "WARNING": L.LOG_LEVEL_WARNING,
    "WARN": L.LOG_LEVEL_WARNING,
    "ERROR": L.LOG_LEVEL_ERROR,
    "CRITICAL": L.LOG_LEVEL_ERROR,
}
# Keys of a flat CUSTOM metrics record that describe progress rather than metrics.
PROGRESS_KEYS = {"type", "step", "epoch", "total_steps", "total_epochs"}


class TrainingWorkload:
    """SubmitJob's jobs (job_type "training")."""

    preparing = "resolving data sources"

    async def prepare(
        self, m: JobManager, rt: JobRuntime, row: sqlite3.Row, attempt: int
    ) -> ProcessSpec:
        """Resolve the sources, write the spec file, build argv and environment."""
        req = m.request_of(row)
        # The job's sources as the caller may read them now, copied into the dataset cache.
        drive = job_drive(m, row)
        sources = await m.data_cache.fetch(
            rt.tenant_id,
            rt.node_id,
            rt.job_id,
            [
                resolve_source(s, f"data_config.sources[{i}]", drive)
                for i, s in enumerate(req.data_config.sources)
            ],
        )
        work = m.jobs_dir / rt.job_id
        ckpt_dir = work / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        spec_file = work / f"spec-{attempt}.json"
        metrics = work / f"metrics-{attempt}.jsonl"
        spec = self.spec(m, rt.job_id, req, sources, self.output_path(m, rt.job_id, req))
        spec_file.write_text(json.dumps(spec, indent=2))
        fw = req.training_config.framework
        if fw.type == common_pb2.FRAMEWORK_TYPE_CUSTOM:
            argv = script_argv(Path(fw.custom_script_path))
        else:
            argv = [sys.executable, "-m", "scaimind.coordinator.trainer"]
        env = process_env(
            {
                "SCAIMIND_JOB_ID": rt.job_id,
                "SCAIMIND_SPEC_FILE": str(spec_file),
                "SCAIMIND_CHECKPOINT_DIR": str(ckpt_dir),
                "SCAIMIND_RESUME_CHECKPOINT": row["resume_checkpoint"],
                "SCAIMIND_METRICS_FILE": str(metrics),
            },
            dict(req.training_config.environment),
        )
        return ProcessSpec(argv=argv, env=env, cwd=work, metrics_file=metrics)

    def sink(self, m: JobManager, rt: JobRuntime, row: sqlite3.Row) -> OutputSink:
        """Metrics, checkpoints, phases and logs of the trainer."""
        return TrainingSink(m, rt, m.request_of(row))

    def max_runtime_seconds(self, row: sqlite3.Row) -> int:
        """resource_config.max_runtime_seconds."""
        req = coordinator_pb2.SubmitJobRequest.FromString(row["request"])
        return int(req.resource_config.max_runtime_seconds)

    def completed(
        self, m: JobManager, rt: JobRuntime, row: sqlite3.Row
    ) -> tuple[dict[str, Any], str]:
        """Record where the final model is."""
        req = m.request_of(row)
        final = Path(rt.final_model or self.output_path(m, rt.job_id, req))
        uri = final.resolve().as_uri() if final.exists() else ""
        return {"final_model_uri": uri}, "finished" + (f"; final model at {uri}" if uri else "")

    @staticmethod
    def output_path(m: JobManager, job_id: str, req: coordinator_pb2.SubmitJobRequest) -> str:
        """output_config.output_path, else the job's own model directory."""
        return req.output_config.output_path or str(m.jobs_dir / job_id / "model")

    @staticmethod
    def spec(
        m: JobManager,
        job_id: str,
        req: coordinator_pb2.SubmitJobRequest,
        sources: list[LocalSource],
        output: str,
    ) -> dict[str, Any]:
        """The SCAIMIND_SPEC_FILE contents."""
        tc, dc, oc = req.training_config, req.data_config, req.output_config
        return {
            "job_id": job_id,
            "training_type": common_pb2.TrainingType.Name(tc.training_type).removeprefix(
                "TRAINING_TYPE_"
            ),
            "framework": common_pb2.FrameworkType.Name(
                tc.framework.type or common_pb2.FRAMEWORK_TYPE_HF_TRAINER
            ).removeprefix("FRAMEWORK_TYPE_"),
            "model_id": tc.base_model.model_id,
            "hyperparameters": dict(tc.hyperparameters),
            "data_files": [s.as_spec() for s in sources],
            "validation_split": dc.validation_split,
            "seed": dc.seed,
            "batch_size": dc.batch_size,
            "max_seq_length": dc.max_seq_length,
            "checkpoint_interval_steps": oc.checkpoint_interval_steps
            or m.config.default_checkpoint_interval_steps,
            "keep_last_checkpoints": oc.keep_last_checkpoints,
            "output_path": output,
            "save_final_model": oc.save_final_model if oc.HasField("save_final_model") else True,
        }


class TrainingSink:
    """Turns process output into log entries, metric points, checkpoints and states."""

    def __init__(
        self, manager: JobManager, rt: JobRuntime, req: coordinator_pb2.SubmitJobRequest
    ) -> None:
        self.m = manager
        self.rt = rt
        self.req = req
        self.latest: dict[str, float] = {}
        self.flushed_points = self.flushed_logs = False
        row = manager.store.get_job(rt.job_id)
        if row is not None:
            self.latest = json.loads(row["latest_metrics"])

    def on_output(self, source: str, lines: Sequence[str]) -> None:
        level = L.LOG_LEVEL_INFO if source == "stdout" else L.LOG_LEVEL_WARNING
        self.m.store.append_logs(
            self.rt.job_id, [PendingLog(level, line, source, self.rt.node_id) for line in lines]
        )
        self.m.notifier.notify(self.rt.job_id, LOGS)

    def on_bad_event(self, line: str, error: str) -> None:
        self.m.log(
            self.rt.job_id,
            f"ignored malformed metrics line ({error}): {line[:200]}",
            L.LOG_LEVEL_WARNING,
        )

    def on_events(self, events: Sequence[dict[str, Any]]) -> None:
        job_id = self.rt.job_id
        points: list[tuple[int, int, str, float, float]] = []
        logs: list[PendingLog] = []
        progress: dict[str, Any] = {}
        now = time.time()
        for ev in events:
            kind = ev.get("type")
            if kind in (None, "metrics"):
                step = to_int(ev.get("step"))
                epoch = to_int(ev.get("epoch"))
                values = to_numbers(
                    ev.get("metrics")
                    if kind == "metrics"
                    else {k: v for k, v in ev.items() if k not in PROGRESS_KEYS}
                )
                points.extend((step, epoch, name, value, now) for name, value in values.items())
                self.latest.update(values)
                progress["current_step"] = step
                progress["current_epoch"] = epoch
                if to_int(ev.get("total_steps")):
                    progress["total_steps"] = to_int(ev.get("total_steps"))
                if to_int(ev.get("total_epochs")):
                    progress["total_epochs"] = to_int(ev.get("total_epochs"))
                self.rt.current_step = step
                self.rt.total_steps = progress.get("total_steps", self.rt.total_steps)
                self.rt.steps.append((time.monotonic(), step))
            elif kind == "checkpoint":
                self._flush(points, logs, progress)
                points, logs, progress = [], [], {}
                self.m.record_checkpoint(self.rt, self.req, ev)
            elif kind == "phase":
                self._flush(points, logs, progress)
                points, logs, progress = [], [], {}
                self.m.phase(self.rt, str(ev.get("phase", "")))
            elif kind == "final_model":
                self.rt.final_model = str(ev.get("path") or "")
                logs.append(
                    PendingLog(
                        L.LOG_LEVEL_INFO,
                        f"final model written to {self.rt.final_model}",
                        "coordinator",
                        self.rt.node_id,
                    )
                )
            elif kind == "log":
                level = LEVELS.get(str(ev.get("level", "INFO")).upper(), L.LOG_LEVEL_INFO)
                logs.append(
                    PendingLog(level, str(ev.get("message", "")), "trainer", self.rt.node_id)
                )
            else:
                logs.append(
                    PendingLog(
                        L.LOG_LEVEL_DEBUG,
                        f"unknown event type {kind!r} ignored",
                        "coordinator",
                        self.rt.node_id,
                    )
                )
        self._flush(points, logs, progress)
        # Checkpoints and phases notified on their own (they log and transition).
        topics = ([METRICS] if self.flushed_points else []) + ([LOGS] if self.flushed_logs else [])
        if topics:
            self.m.notifier.notify(job_id, *topics)
        self.flushed_points = self.flushed_logs = False

    def _flush(
        self,
        points: list[tuple[int, int, str, float, float]],
        logs: list[PendingLog],
        progress: dict[str, Any],
    ) -> None:
        job_id = self.rt.job_id
        if points:
            self.m.store.add_metric_points(job_id, points)
            self.flushed_points = True
        if progress or points:
            self.m.store.update_job(job_id, {**progress, "latest_metrics": json.dumps(self.latest)})
        if logs:
            self.m.store.append_logs(job_id, logs)
            self.flushed_logs = True
