"""The real evaluator process on the reference trainer's checkpoints and final models."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from scaimind.coordinator.worker.evaluator import KNOWN_BENCHMARKS
from tests.trainer.conftest import FinishedRun, run_evaluator


def _spec(run: FinishedRun, model_path: str, benchmarks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "evaluation_id": "eval-1",
        "model_path": model_path,
        "benchmarks": benchmarks,
        "fallback_data_files": run.job.spec["data_files"],
        "validation_split": run.job.spec["validation_split"],
        "seed": run.job.spec["seed"],
    }


def _bench(name: str, dataset: str = "", num_samples: int = 0) -> dict[str, Any]:
    return {"name": name, "dataset": dataset, "num_samples": num_samples, "parameters": {}}


def _finals(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["name"]: line for line in lines if line["status"] != "RUNNING"}


def test_final_model_scores_every_known_benchmark(
    finished_run: FinishedRun, tmp_path: Path
) -> None:
    assert finished_run.result.returncode == 0, finished_run.result.stderr
    spec = _spec(
        finished_run,
        str(finished_run.job.output_path),
        [_bench(name) for name in KNOWN_BENCHMARKS],
    )

    code, lines, stderr = run_evaluator(tmp_path, spec)

    assert code == 0, stderr
    assert [(line["name"], line["status"]) for line in lines] == [
        (name, status) for name in KNOWN_BENCHMARKS for status in ("RUNNING", "COMPLETED")
    ]
    results = _finals(lines)
    loss = results["loss"]["score"]
    assert 0 < loss < math.log(256) / 2
    assert results["perplexity"]["score"] == pytest.approx(math.exp(loss), rel=1e-12)
    assert 0 < results["token_accuracy"]["score"] <= 1
    # Without a dataset the job's validation split is scored, exactly as the trainer did.
    eval_loss = next(
        e["metrics"]["eval_loss"]
        for e in finished_run.job.events()
        if e["type"] == "metrics" and "eval_loss" in e["metrics"]
    )
    assert loss == pytest.approx(eval_loss, rel=1e-12)
    for line in results.values():
        assert line["error"] == ""
        assert line["metrics"]["num_tokens"] > 0
        assert line["metrics"]["loss"] == pytest.approx(loss)


def test_checkpoint_uri_dataset_and_num_samples(finished_run: FinishedRun, tmp_path: Path) -> None:
    checkpoint = finished_run.job.checkpoint_dir / "step-000010"
    early = _spec(
        finished_run,
        checkpoint.as_uri(),
        [_bench("loss", str(finished_run.data), 5), _bench("loss", finished_run.data.as_uri())],
    )
    late = _spec(
        finished_run, str(finished_run.job.output_path), [_bench("loss", str(finished_run.data))]
    )

    code, lines, stderr = run_evaluator(tmp_path / "early", early)
    late_code, late_lines, _ = run_evaluator(tmp_path / "late", late)

    assert code == 0, stderr
    assert late_code == 0
    limited, everything = [line for line in lines if line["status"] == "COMPLETED"]
    assert limited["metrics"]["num_samples"] == 5
    assert everything["metrics"]["num_samples"] == 120
    assert limited["metrics"]["num_tokens"] < everything["metrics"]["num_tokens"]
    # The model after 50 steps fits the data better than the one after 10.
    assert _finals(late_lines)["loss"]["score"] < everything["score"]


def test_unknown_benchmark_and_missing_dataset_fail_individually(
    finished_run: FinishedRun, tmp_path: Path
) -> None:
    spec = _spec(
        finished_run,
        str(finished_run.job.output_path),
        [_bench("bleu"), _bench("loss", str(tmp_path / "missing.jsonl")), _bench("perplexity")],
    )

    code, lines, _ = run_evaluator(tmp_path, spec)

    assert code == 0
    results = [line for line in lines if line["status"] != "RUNNING"]
    assert [line["status"] for line in results] == ["FAILED", "FAILED", "COMPLETED"]
    assert "known: perplexity, loss, token_accuracy" in results[0]["error"]
    assert "file not found" in results[1]["error"]


def test_missing_model_fails_every_benchmark(finished_run: FinishedRun, tmp_path: Path) -> None:
    spec = _spec(
        finished_run, str(tmp_path / "nothing-here"), [_bench("loss"), _bench("perplexity")]
    )

    code, lines, stderr = run_evaluator(tmp_path, spec)

    assert code == 1
    assert "cannot load model" in stderr
    failed = [line for line in lines if line["status"] == "FAILED"]
    assert [line["name"] for line in failed] == ["loss", "perplexity"]
    assert all("no such model directory" in line["error"] for line in failed)


def test_invalid_spec_exits_2(tmp_path: Path) -> None:
    code, lines, stderr = run_evaluator(tmp_path, {"model_path": "/x", "benchmarks": "loss"})

    assert code == 2
    assert lines == []
    assert "benchmarks must be a list" in stderr
