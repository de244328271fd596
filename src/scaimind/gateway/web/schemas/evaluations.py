"""Request schemas of the evaluation endpoints (docs/API.md, "Evaluations")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scaimind.contract import limits
from scaimind.gateway.web.schemas.common import Id, Name, Options, Path, Strict


class BenchmarkSpec(Strict):
    """One benchmark to run."""

    name: Annotated[
        Name,
        Field(min_length=1),
        Field(description="Built-in: `perplexity`, `loss`, `token_accuracy`."),
    ]
    dataset: Path = Field("", description="Path or URI; empty = the job's validation split.")
    num_samples: Annotated[int, Field(ge=0, le=2**31 - 1)] = Field(
        0, description="Samples to score; 0 = all."
    )
    parameters: Options = Field(default_factory=dict, description="Benchmark settings.")


class SubmitEvaluationBody(Strict):
    """POST /evaluations."""

    job_id: Annotated[Id, Field(min_length=1), Field(description="The evaluated job.")]
    model_uri: Path = Field(
        "",
        description=(
            "The model to score: empty for the job's final model (else its latest checkpoint), "
            "or a model folder the caller may read: scaidrive://<tenant>/... or a path under a "
            "local data root."
        ),
    )
    checkpoint_id: Id = Field(
        "", description="A checkpoint of the job to score; wins over model_uri."
    )
    benchmarks: Annotated[
        list[BenchmarkSpec], Field(min_length=1, max_length=limits.BENCHMARKS)
    ] = Field(description=f"Benchmarks to run (1 to {limits.BENCHMARKS}).")
