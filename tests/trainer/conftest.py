"""Helpers that run the real trainer and evaluator processes on small generated corpora."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROCESS_TIMEOUT = 60.0
SUBJECTS = ("the cat", "a dog", "my friend", "the teacher", "the old man", "a small bird")
VERBS = ("sees", "likes", "finds", "carries", "watches", "follows", "paints")
OBJECTS = ("the red ball", "a green apple", "the long road", "a quiet river", "an open door")


def write_corpus(path: Path, records: int = 120, seed: int = 1) -> Path:
    """Write a prompt/completion jsonl file of simple English sentences (about 10 KB)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for index in range(records):
            sentence = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
            record = {"prompt": f"Tell me about item {index}.", "completion": sentence}
            handle.write(json.dumps(record) + "\n")
    return path


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line the process has appended so far."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith("\n")]


def training_metrics(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step metrics lines (not the evaluation one)."""
    return [e for e in events if e["type"] == "metrics" and "loss" in e["metrics"]]


def wait_until(predicate: Callable[[], Any], *, within: float = 30.0) -> Any:
    """Poll `predicate` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


@dataclass
class Job:
    """Files of one trainer process: spec, metrics, checkpoints, final model."""

    root: Path
    spec: dict[str, Any]

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.json"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def output_path(self) -> Path:
        return Path(self.spec["output_path"])

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.metrics_file)

    def env(self, resume: str = "") -> dict[str, str]:
        self.spec_file.write_text(json.dumps(self.spec), encoding="utf-8")
        env = dict(os.environ)
        env.update(
            SCAIMIND_JOB_ID=self.spec["job_id"],
            SCAIMIND_SPEC_FILE=str(self.spec_file),
            SCAIMIND_METRICS_FILE=str(self.metrics_file),
            SCAIMIND_CHECKPOINT_DIR=str(self.checkpoint_dir),
            SCAIMIND_RESUME_CHECKPOINT=resume,
        )
        return env

    def start(self, resume: str = "") -> subprocess.Popen[str]:
        """Start the real trainer process the way the executor does."""
        return subprocess.Popen(
            [sys.executable, "-m", "scaimind.coordinator.worker.trainer"],
            cwd=self.root,
            env=self.env(resume),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, resume: str = "") -> subprocess.CompletedProcess[str]:
        """Run the trainer to completion."""
        return subprocess.run(
            [sys.executable, "-m", "scaimind.coordinator.worker.trainer"],
            cwd=self.root,
            env=self.env(resume),
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )


def make_job(root: Path, data: Path, **overrides: Any) -> Job:
    """A job spec as the executor writes it, with `overrides` applied."""
    root.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "job_id": "job-test",
        "training_type": "LORA",
        "framework": "HF_TRAINER",
        "model_id": "meta-llama/Llama-3-8B",
        "hyperparameters": {"max_steps": "50"},
        "data_files": [{"path": str(data), "format": "", "columns": []}],
        "validation_split": 0.1,
        "seed": 7,
        "batch_size": 0,
        "max_seq_length": 0,
        "checkpoint_interval_steps": 10,
        "keep_last_checkpoints": 0,
        "output_path": str(root / "final"),
        "save_final_model": True,
    }
    spec.update(overrides)
    return Job(root, spec)


def run_evaluator(root: Path, spec: dict[str, Any]) -> tuple[int, list[dict[str, Any]], str]:
    """Run the real evaluator process; return its exit code, benchmark lines and stderr."""
    root.mkdir(parents=True, exist_ok=True)
    spec_file = root / "eval-spec.json"
    metrics_file = root / "eval-metrics.jsonl"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = dict(
        os.environ, SCAIMIND_SPEC_FILE=str(spec_file), SCAIMIND_METRICS_FILE=str(metrics_file)
    )
    done = subprocess.run(
        [sys.executable, "-m", "scaimind.coordinator.worker.evaluator"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    return done.returncode, read_events(metrics_file), done.stderr


@dataclass
class FinishedRun:
    """A completed default 50-step run shared by several tests."""

    job: Job
    data: Path
    result: subprocess.CompletedProcess[str]
    seconds: float


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "data.jsonl")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> FinishedRun:
    job = make_job(tmp_path_factory.mktemp("finished"), corpus)
    began = time.monotonic()
    result = job.run()
    return FinishedRun(job, corpus, result, time.monotonic() - began)
