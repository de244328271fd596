"""The training workload: runs the built-in trainer or a CUSTOM script per the process contract."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from scaimind.contract.private_files import private_dir
from scaimind.coordinator.data.sources import resolve_source
from scaimind.coordinator.executors.process import (
    OutputSink,
    ProcessSpec,
    process_env,
    script_argv,
    write_new,
)
from scaimind.coordinator.jobs.jobfiles import (
    CHECKPOINTS,
    CODE,
    JOB,
    OUTPUT,
    MountPlan,
)
from scaimind.coordinator.jobs.notifier import LOGS, METRICS
from scaimind.coordinator.jobs.rules import check_script
from scaimind.coordinator.jobs.runtime import LOG_LEVELS, JobHost, JobRuntime, L, to_int, to_numbers
from scaimind.coordinator.persistence.records import JobRecord, PendingLog
from scaimind.v1 import common_pb2, coordinator_pb2

TRAINING = "training"  # job_type of SubmitJob's jobs
# Keys of a flat CUSTOM metrics record that describe progress rather than metrics.
PROGRESS_KEYS = {"type", "step", "epoch", "total_steps", "total_epochs"}


class TrainingWorkload:
    """SubmitJob's jobs (job_type "training")."""

    preparing = "resolving data sources"

    async def prepare(
        self, m: JobHost, rt: JobRuntime, row: JobRecord, attempt: int
    ) -> ProcessSpec:
        """Resolve and cache the sources, lay out the job's directories, build the launch."""
        req = m.request_of(row)
        files = m.files.for_job(row)
        custom = req.training_config.framework.type == common_pb2.FRAMEWORK_TYPE_CUSTOM
        sandboxed = m.files.sandboxed(custom)
        # The job's sources as the caller may read them now, copied into the dataset cache.
        sources = await m.data_cache.fetch(
            rt.tenant_id,
            rt.node_id,
            rt.job_id,
            [
                resolve_source(s, f"data_config.sources[{i}]", files)
                for i, s in enumerate(req.data_config.sources)
            ],
            files,
        )
        owner = m.files.owner if sandboxed else None
        plan = MountPlan(sandboxed)
        work = private_dir(m.files.layout.work_dir(rt.job_id), owner)
        # The artefacts' folder is the coordinator's (0700); the job writes only inside it.
        private_dir(m.files.layout.jobs_area(rt.tenant_id))
        private_dir(m.files.layout.artifacts(rt.tenant_id, rt.job_id))
        ckpt_dir = private_dir(m.files.layout.checkpoints(rt.tenant_id, rt.job_id), owner)
        output = m.files.output_dir(row, create=True, owner=owner)
        job_dir = plan.add(work, JOB, writable=True)
        ckpt_seen = plan.add(ckpt_dir, CHECKPOINTS, writable=True)
        output_seen = plan.add(output, OUTPUT, writable=True)
        data_files = [{**s.as_spec(), "path": plan.add_input(s.path)} for s in sources]
        resume = m.files.resume_for(row, ckpt_dir, ckpt_seen, plan, owner)
        spec_file = work / f"spec-{attempt}.json"
        metrics = work / f"metrics-{attempt}.jsonl"
        spec = self.spec(m, rt.job_id, req, data_files, output_seen)
        write_new(spec_file, json.dumps(spec, indent=2).encode())
        if custom:
            script = await asyncio.to_thread(
                check_script, files, req.training_config.framework.custom_script_path
            )
            # The script's folder is visible read-only, so its own modules import as usual.
            m.files.check_visible(script.parent, "the CUSTOM script's folder", owner)
            m.files.check_visible(script, "the CUSTOM script", owner)
            code = m.files.mount_stable(script.parent, CODE, plan)
            argv = script_argv(f"{code}/{script.name}")
        else:
            argv = [sys.executable, "-m", "scaimind.coordinator.worker.trainer"]
        env = process_env(
            {
                "SCAIMIND_JOB_ID": rt.job_id,
                "SCAIMIND_SPEC_FILE": f"{job_dir}/{spec_file.name}",
                "SCAIMIND_CHECKPOINT_DIR": ckpt_seen,
                "SCAIMIND_RESUME_CHECKPOINT": resume,
                "SCAIMIND_METRICS_FILE": f"{job_dir}/{metrics.name}",
                "SCAIMIND_OUTPUT_DIR": output_seen,
            },
            dict(req.training_config.environment),
            home="/tmp" if sandboxed else str(work),
        )
        return ProcessSpec(
            argv=argv,
            env=env,
            cwd=work,
            metrics_file=metrics,
            mounts=plan.mounts,
            inside_cwd=job_dir,
            sandbox=m.sandbox if sandboxed else None,
            limits=m.config.sandbox.limits,
            owner=owner,
        )

    def sink(self, m: JobHost, rt: JobRuntime, row: JobRecord) -> OutputSink:
        """Metrics, checkpoints, phases and logs of the trainer."""
        return TrainingSink(m, rt, m.request_of(row))

    def max_runtime_seconds(self, row: JobRecord) -> int:
        """resource_config.max_runtime_seconds."""
        req = coordinator_pb2.SubmitJobRequest.FromString(row.request)
        return int(req.resource_config.max_runtime_seconds)

    def describe(self, m: JobHost, row: JobRecord) -> str:
        """The built-in trainer, or the CUSTOM script as the user named it."""
        fw = m.request_of(row).training_config.framework
        if fw.type == common_pb2.FRAMEWORK_TYPE_CUSTOM:
            return f"CUSTOM script {fw.custom_script_path}"
        return "the built-in trainer"

    def completed(self, m: JobHost, rt: JobRuntime, row: JobRecord) -> tuple[dict[str, Any], str]:
        """Record where the final model is (as the tenant names it)."""
        output = m.files.output_dir(row)
        has_model = output.is_dir() and any(output.iterdir())
        uri = m.files.output_display(row) if has_model else ""
        return {"final_model_uri": uri}, "finished" + (f"; final model at {uri}" if uri else "")

    @staticmethod
    def spec(
        m: JobHost,
        job_id: str,
        req: coordinator_pb2.SubmitJobRequest,
        data_files: list[dict[str, Any]],
        output: str,
    ) -> dict[str, Any]:
        """The SCAIMIND_SPEC_FILE contents (paths as the process sees them)."""
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
            "data_files": data_files,
            "validation_split": dc.validation_split,
            "seed": dc.seed,
            "batch_size": dc.batch_size,
            "max_seq_length": dc.max_seq_length,
            "checkpoint_interval_steps": oc.checkpoint_interval_steps
            or m.config.default_checkpoint_interval_steps,
            "keep_last_checkpoints": m.keep_last(req),
            "output_path": output,
            "save_final_model": oc.save_final_model if oc.HasField("save_final_model") else True,
        }


class TrainingSink:
    """Turns process output into log entries, metric points, checkpoints and states."""

    def __init__(
        self, manager: JobHost, rt: JobRuntime, req: coordinator_pb2.SubmitJobRequest
    ) -> None:
        self.m = manager
        self.rt = rt
        self.req = req
        self.latest: dict[str, float] = {}
        self.flushed_points = self.flushed_logs = False
        self.output_shown = ""
        row = manager.store.get_job(rt.job_id)
        if row is not None:
            self.latest = json.loads(row.latest_metrics)
            self.output_shown = manager.files.output_display(row)

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
                logs.append(
                    PendingLog(
                        L.LOG_LEVEL_INFO,
                        f"final model written to {self.output_shown}",
                        "coordinator",
                        self.rt.node_id,
                    )
                )
            elif kind == "log":
                level = LOG_LEVELS.get(str(ev.get("level", "INFO")).upper(), L.LOG_LEVEL_INFO)
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
