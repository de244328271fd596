"""The real trainer process: metrics, checkpoints, signals, orphaning, resume and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaimind.coordinator.worker.datasets import load_texts
from scaimind.coordinator.worker.model import META_FILE, PARAMS_FILE, load_model, load_state
from scaimind.coordinator.worker.trainer import EXIT_BAD_INPUT, EXIT_STOPPED
from tests.conftest import process_ended
from tests.trainer.conftest import (
    PROCESS_TIMEOUT,
    FinishedRun,
    make_job,
    read_events,
    training_metrics,
    wait_until,
)


def test_full_run_trains_checkpoints_evaluates_and_exports(finished_run: FinishedRun) -> None:
    result, job = finished_run.result, finished_run.job
    assert result.returncode == 0, result.stderr
    events = job.events()

    logs = [e["message"] for e in events if e["type"] == "log"]
    assert "HF_TRAINER / LORA of meta-llama/Llama-3-8B" in logs[0]

    metrics = training_metrics(events)
    assert [m["step"] for m in metrics] == list(range(1, 51))
    for line in metrics:
        assert line["total_steps"] == 50
        assert set(line["metrics"]) == {"loss", "learning_rate", "tokens_per_second", "grad_norm"}
        assert line["metrics"]["tokens_per_second"] > 0
        assert 1 <= line["epoch"] <= line["total_epochs"]
    losses = [m["metrics"]["loss"] for m in metrics]
    assert losses[0] == pytest.approx(np.log(256), abs=0.1)  # untrained: uniform over bytes
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 2.0
    rates = [m["metrics"]["learning_rate"] for m in metrics]
    assert rates[0] < max(rates)  # warmup
    assert rates[-1] < max(rates) / 5  # decay

    checkpoints = [e for e in events if e["type"] == "checkpoint"]
    assert [c["step"] for c in checkpoints] == [10, 20, 30, 40, 50]
    for event in checkpoints:
        path = Path(event["path"])
        assert path == job.checkpoint_dir / f"step-{event['step']:06d}"
        assert event["size_bytes"] == sum(p.stat().st_size for p in path.iterdir())
        assert sorted(p.name for p in path.iterdir()) == sorted([META_FILE, PARAMS_FILE])
        assert event["metrics"] == metrics[event["step"] - 1]["metrics"]
        assert load_state(path).step == event["step"]

    kinds = [e.get("phase") or e["type"] for e in events if e["type"] != "log"]
    assert kinds[-4:] == ["EVALUATING", "metrics", "EXPORTING", "final_model"]
    evaluation = [e for e in events if e["type"] == "metrics" and "eval_loss" in e["metrics"]]
    assert len(evaluation) == 1
    assert evaluation[0]["metrics"]["eval_perplexity"] == pytest.approx(
        np.exp(evaluation[0]["metrics"]["eval_loss"])
    )
    final = [e for e in events if e["type"] == "final_model"]
    assert final == [{"type": "final_model", "path": str(job.output_path)}]
    trained = load_model(job.output_path)
    last = load_model(job.checkpoint_dir / "step-000050")
    for name, value in trained.params.items():
        assert np.array_equal(value, last.params[name])


def test_resume_reproduces_the_uninterrupted_run(finished_run: FinishedRun, tmp_path: Path) -> None:
    assert finished_run.result.returncode == 0, finished_run.result.stderr
    resumed = make_job(tmp_path, finished_run.data)
    checkpoint = finished_run.job.checkpoint_dir / "step-000020"

    result = resumed.run(resume=str(checkpoint))

    assert result.returncode == 0, result.stderr
    original = {m["step"]: m for m in training_metrics(finished_run.job.events())}
    again = training_metrics(resumed.events())
    assert [m["step"] for m in again] == list(range(21, 51))
    for line in again:
        expected = original[line["step"]]
        assert line["epoch"] == expected["epoch"]
        for key in ("loss", "learning_rate", "grad_norm"):
            assert line["metrics"][key] == expected["metrics"][key], (line["step"], key)
    evals = [
        [e["metrics"]["eval_loss"] for e in events if "eval_loss" in e.get("metrics", {})]
        for events in (finished_run.job.events(), resumed.events())
    ]
    assert evals[0] == evals[1]
    first, second = load_model(finished_run.job.output_path), load_model(resumed.output_path)
    for name, value in first.params.items():
        assert np.array_equal(value, second.params[name]), name


def test_sigterm_checkpoints_at_a_step_boundary_and_exits_75(corpus: Path, tmp_path: Path) -> None:
    job = make_job(tmp_path, corpus, hyperparameters={"max_steps": "100000"})
    process = job.start()
    try:
        wait_until(lambda: len(training_metrics(job.events())) >= 3)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == EXIT_STOPPED, stderr

    events = job.events()
    last_step = training_metrics(events)[-1]["step"]
    checkpoint = [e for e in events if e["type"] == "checkpoint"][-1]
    assert checkpoint["step"] == last_step
    assert "received SIGTERM" in events[-1]["message"]
    state = load_state(checkpoint["path"])
    assert state.step == last_step
    assert state.cursor > 0
    assert not [e for e in events if e["type"] in ("phase", "final_model")]


def test_orphaned_trainer_checkpoints_and_stops(corpus: Path, tmp_path: Path) -> None:
    job = make_job(tmp_path, corpus, hyperparameters={"max_steps": "100000"})
    # A stand-in coordinator that starts the trainer and is then SIGKILLed.
    launcher = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-m', 'scaimind.coordinator.worker.trainer'],"
        " start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", launcher],
        cwd=tmp_path,
        env=job.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    trainer_pid = int(parent.stdout.readline())
    try:
        wait_until(lambda: len(training_metrics(job.events())) >= 2)
        parent.kill()
        parent.wait(timeout=PROCESS_TIMEOUT)
        wait_until(lambda: process_ended(trainer_pid))
    finally:
        if not process_ended(trainer_pid):
            os.kill(trainer_pid, signal.SIGKILL)
        parent.stdout.close()

    events = job.events()
    assert "orphaned" in events[-1]["message"]
    checkpoints = [e for e in events if e["type"] == "checkpoint"]
    assert checkpoints[-1]["step"] == training_metrics(events)[-1]["step"]
    assert Path(checkpoints[-1]["path"], META_FILE).is_file()


def test_keep_last_checkpoints_prunes_older_ones(corpus: Path, tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        corpus,
        hyperparameters={"max_steps": "12"},
        checkpoint_interval_steps=3,
        keep_last_checkpoints=2,
        validation_split=0.0,
        save_final_model=False,
    )

    result = job.run()

    assert result.returncode == 0, result.stderr
    events = job.events()
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [3, 6, 9, 12]
    assert sorted(p.name for p in job.checkpoint_dir.iterdir()) == ["step-000009", "step-000012"]
    # Without a validation split or a final model there is nothing to evaluate or export.
    assert not [e for e in events if e["type"] in ("phase", "final_model")]
    assert not job.output_path.exists()


def test_epochs_hyperparameter_sets_the_number_of_steps(corpus: Path, tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        corpus,
        hyperparameters={"epochs": "2", "batch_size": "32", "learning_rate": "0.003"},
        validation_split=0.0,
        save_final_model=False,
    )

    result = job.run()

    assert result.returncode == 0, result.stderr
    metrics = training_metrics(job.events())
    # Default sequences of 64 bytes, 32 of them per batch.
    sequences = len("\n".join(load_texts(job.spec["data_files"])).encode()) // 64
    per_epoch = -(-sequences // 32)
    assert per_epoch > 1
    assert len(metrics) == 2 * per_epoch
    assert {m["total_epochs"] for m in metrics} == {2}
    assert [m["epoch"] for m in metrics] == [1] * per_epoch + [2] * per_epoch
    assert max(m["metrics"]["learning_rate"] for m in metrics) == pytest.approx(0.003)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "spec_changes", "message"),
    [
        ('{"text": "fine"}\n{"text": broken\n', {}, "row 2: invalid JSON"),
        ('{"text": "fine"}\n{"label": 1}\n', {}, "row 2: no training text"),
        ("", {}, "contain no records"),
        (None, {}, "file not found"),
        ('{"text": "fine"}\n', {"hyperparameters": {"max_steps": "many"}}, "max_steps"),
        ('{"text": "fine"}\n', {"validation_split": 1.5}, "validation_split"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, content: str | None, spec_changes: dict[str, object], message: str
) -> None:
    data = tmp_path / "data.jsonl"
    if content is not None:
        _write(data, content)
    job = make_job(tmp_path, data, **spec_changes)

    result = job.run()

    assert result.returncode == EXIT_BAD_INPUT
    assert message in result.stderr
    assert not job.checkpoint_dir.exists()


def test_unreadable_resume_checkpoint_exits_2(corpus: Path, tmp_path: Path) -> None:
    job = make_job(tmp_path, corpus)

    result = job.run(resume=str(tmp_path / "no-such-checkpoint"))

    assert result.returncode == EXIT_BAD_INPUT
    assert "cannot resume" in result.stderr


def test_metrics_file_lines_are_valid_json_objects(finished_run: FinishedRun) -> None:
    lines = finished_run.job.metrics_file.read_text(encoding="utf-8").splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert read_events(finished_run.job.metrics_file) == [json.loads(line) for line in lines]
