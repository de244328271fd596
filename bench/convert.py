"""proto → dict conversion (`message_to_dict`) per message, this checkout against a baseline.

Times the conversion of a job as `GET /jobs/{id}` answers it (FULL, 5 checkpoints, every
config filled) and of a `GET /jobs` page of 20 BASIC jobs, in this process. With
`--baseline-src DIR` (the src/ of a `git worktree` of an older commit) the same is timed with
that checkout's `convert.py`, alternating, and the outputs are checked to be equal.

Usage: .venv/bin/python bench/convert.py [--repeat 5] [--baseline-src /tmp/before/src]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from scaimind.gateway.backend import convert
from scaimind.v1 import common_pb2, coordinator_pb2

JAN_1_2026 = 1767225600


def _time(seconds: int) -> Timestamp:
    return Timestamp(seconds=JAN_1_2026 + seconds, nanos=123_000_000)


def sample_job(checkpoints: int) -> common_pb2.Job:
    """A training job as the coordinator reports it mid-run, every config filled."""
    job = common_pb2.Job(
        job_id="job_0123456789abcdef",
        name="llama-sft",
        tenant_id="tenant-a",
        user_id="user-1",
        status=common_pb2.JOB_STATUS_TRAINING,
        status_message="step 40/50",
        training_config=common_pb2.TrainingConfig(
            training_type=common_pb2.TRAINING_TYPE_QLORA,
            base_model=common_pb2.BaseModel(model_id="meta-llama/Llama-3-8B"),
            hyperparameters={"learning_rate": "2e-4", "max_steps": "50", "lora_r": "16"},
        ),
        labels={"team": "nlp", "bench": "convert"},
        latest_metrics={"loss": 1.93, "learning_rate": 0.0002, "grad_norm": 0.8},
        created_at=_time(0),
        started_at=_time(5),
        updated_at=_time(60),
    )
    job.progress.current_step = 40
    job.progress.total_steps = 50
    for step in range(checkpoints):
        job.checkpoints.add(
            checkpoint_id=f"ckpt_{step}",
            step=step * 10,
            metrics={"loss": 2.0 - step / 10},
            created_at=_time(10 + step),
        )
    return job


def _per_call_us(fn: Callable[[Any], Any], message: Any, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(message)
    return (time.perf_counter() - start) / calls * 1e6


def _load(src: Path) -> ModuleType:
    path = src / "scaimind" / "gateway" / "backend" / "convert.py"
    spec = importlib.util.spec_from_file_location("baseline_convert", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no convert.py under {src}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds (the median is printed)")
    parser.add_argument("--baseline-src", type=Path, help="a source tree to compare against")
    args = parser.parse_args()
    job = sample_job(checkpoints=5)
    page = coordinator_pb2.ListJobsResponse(jobs=[sample_job(checkpoints=0)] * 20)
    cases = [
        ("GET /jobs/{id} (FULL, 5 checkpoints)", job, 2000),
        ("GET /jobs (20 BASIC)", page, 100),
    ]
    variants: list[tuple[str, ModuleType]] = [("this checkout", convert)]
    if args.baseline_src is not None:
        baseline = _load(args.baseline_src)
        for _, message, _ in cases:
            if baseline.message_to_dict(message) != convert.message_to_dict(message):
                raise SystemExit("the baseline converts differently: not comparable")
        variants.insert(0, ("baseline", baseline))
    print(f"{'message':<38} {'converter':<14} {'µs per message (median)':>24}")
    for label, message, calls in cases:
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        for _ in range(args.repeat):
            for name, module in variants:
                times[name].append(_per_call_us(module.message_to_dict, message, calls))
        for name, _ in variants:
            print(f"{label:<38} {name:<14} {statistics.median(times[name]):>24.1f}")


if __name__ == "__main__":
    main()
