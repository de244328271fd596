"""Request schemas of the evaluation endpoints (API.md §5.5)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scaimind.schemas.jobs import Strict, StrMap


class BenchmarkSpec(Strict):
    """One benchmark to run."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    # Empty: the job's validation split.
    dataset: Annotated[str, Field(max_length=4096)] = ""
    # 0: every sample.
    num_samples: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    parameters: StrMap = Field(default_factory=dict)


class SubmitEvaluationBody(Strict):
    """POST /evaluations."""

    job_id: Annotated[str, Field(min_length=1, max_length=128)]
    # Empty: the job's final model (else its latest checkpoint). Otherwise a model directory
    # the caller may read: scaidrive://<tenant>/... or a path under a local data root.
    model_uri: Annotated[str, Field(max_length=4096)] = ""
    # A checkpoint of the job; wins over model_uri.
    checkpoint_id: Annotated[str, Field(max_length=256)] = ""
    benchmarks: Annotated[list[BenchmarkSpec], Field(min_length=1)]
