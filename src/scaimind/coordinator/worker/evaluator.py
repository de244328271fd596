"""The reference coordinator's evaluation process.

Run as `python -m scaimind.coordinator.worker.evaluator`.

It loads a checkpoint or final model of the reference trainer and scores built-in benchmarks on
a dataset (the benchmark's own, or else the job's validation split, or else its data), writing
one `benchmark` JSON line when a benchmark starts and one when it ends. Exit codes: 0 every
benchmark was attempted, 1 the model could not be loaded, 2 the spec is invalid.
"""

from __future__ import annotations

import os

# See trainer.py: one BLAS thread per process keeps two cores from being oversubscribed.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import IO, Any  # noqa: E402

from scaimind.coordinator.worker.datasets import (  # noqa: E402
    DataFormatError,
    load_texts,
    split_texts,
)
from scaimind.coordinator.worker.model import (  # noqa: E402
    CharLM,
    Evaluation,
    ModelFormatError,
    encode,
    load_model,
)

KNOWN_BENCHMARKS = ("perplexity", "loss", "token_accuracy")

EXIT_OK = 0
EXIT_NO_MODEL = 1
EXIT_BAD_SPEC = 2


class EvaluationSpecError(Exception):
    """The evaluation spec file is missing or malformed."""


def benchmark_event(
    name: str,
    status: str,
    *,
    score: float = 0.0,
    metrics: Mapping[str, float] | None = None,
    error: str = "",
) -> dict[str, Any]:
    """A `benchmark` line with every field present."""
    return {
        "type": "benchmark",
        "name": name,
        "status": status,
        "score": score,
        "metrics": dict(metrics or {}),
        "error": error,
    }


def _score(name: str, result: Evaluation) -> float:
    if name == "perplexity":
        return result.perplexity
    if name == "loss":
        return result.loss
    return result.accuracy


def benchmark_texts(benchmark: Mapping[str, Any], spec: Mapping[str, Any]) -> list[str]:
    """The records a benchmark is scored on, limited to `num_samples` when positive."""
    dataset = str(benchmark.get("dataset") or "")
    if dataset:
        texts = load_texts([{"path": dataset, "format": "", "columns": []}])
    else:
        fallback = spec.get("fallback_data_files") or []
        if not fallback:
            raise DataFormatError("the benchmark names no dataset and the job has no data files")
        texts = load_texts(fallback)
        split = float(spec.get("validation_split") or 0)
        if split > 0:
            # The job's own held-out records, split exactly as the trainer split them.
            texts = split_texts(texts, split, int(spec.get("seed") or 0))[1]
    limit = int(benchmark.get("num_samples") or 0)
    return texts[:limit] if limit > 0 else texts


def run_benchmark(
    model: CharLM, benchmark: Mapping[str, Any], spec: Mapping[str, Any]
) -> dict[str, Any]:
    """Score one benchmark and return its final `benchmark` event."""
    name = str(benchmark.get("name") or "")
    if name not in KNOWN_BENCHMARKS:
        known = ", ".join(KNOWN_BENCHMARKS)
        return benchmark_event(name, "FAILED", error=f"unknown benchmark {name!r}; known: {known}")
    try:
        texts = benchmark_texts(benchmark, spec)
        tokens = encode("\n".join(texts))
        if len(tokens) == 0:
            raise DataFormatError("the evaluation dataset holds no text")
        result = model.evaluate(tokens)
    except DataFormatError as exc:
        return benchmark_event(name, "FAILED", error=f"data error: {exc}")
    except (TypeError, ValueError) as exc:
        return benchmark_event(name, "FAILED", error=f"invalid benchmark settings: {exc}")
    metrics = {
        "loss": result.loss,
        "perplexity": result.perplexity,
        "token_accuracy": result.accuracy,
        "num_samples": float(len(texts)),
        "num_tokens": float(result.num_tokens),
    }
    return benchmark_event(name, "COMPLETED", score=_score(name, result), metrics=metrics)


def _read_spec(path: str) -> dict[str, Any]:
    if not path:
        raise EvaluationSpecError("SCAIMIND_SPEC_FILE is not set")
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvaluationSpecError(f"cannot read spec file {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise EvaluationSpecError(f"spec file {path} is not valid JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise EvaluationSpecError(f"spec file {path} must hold a JSON object")
    benchmarks = spec.get("benchmarks")
    if not isinstance(benchmarks, list) or not all(isinstance(b, dict) for b in benchmarks):
        raise EvaluationSpecError("benchmarks must be a list of {name, dataset, ...} objects")
    if not spec.get("model_path"):
        raise EvaluationSpecError("model_path is required")
    return spec


def main() -> int:
    """Run the evaluation described by the environment; return the exit code."""
    try:
        spec = _read_spec(os.environ.get("SCAIMIND_SPEC_FILE", ""))
    except EvaluationSpecError as exc:
        print(f"invalid evaluation spec: {exc}", file=sys.stderr)
        return EXIT_BAD_SPEC
    metrics_path = os.environ.get("SCAIMIND_METRICS_FILE", "")
    stream: IO[str] = (
        open(metrics_path, "a", encoding="utf-8") if metrics_path else sys.stdout  # noqa: SIM115
    )

    def emit(event: dict[str, Any]) -> None:
        stream.write(json.dumps(event) + "\n")
        stream.flush()

    try:
        try:
            model: CharLM | None = load_model(spec["model_path"])
            load_error = ""
        except ModelFormatError as exc:
            model, load_error = None, f"cannot load model: {exc}"
            print(load_error, file=sys.stderr)
        for benchmark in spec["benchmarks"]:
            name = str(benchmark.get("name") or "")
            emit(benchmark_event(name, "RUNNING"))
            if model is None:
                emit(benchmark_event(name, "FAILED", error=load_error))
            else:
                emit(run_benchmark(model, benchmark, spec))
        return EXIT_OK if model is not None else EXIT_NO_MODEL
    finally:
        if stream is not sys.stdout:
            stream.close()


if __name__ == "__main__":
    sys.exit(main())
