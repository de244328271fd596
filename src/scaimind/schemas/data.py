"""Request schemas of the data endpoints (API.md §5.6)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scaimind.schemas.jobs import DataSource, Strict, TrainingType


class ValidateDataBody(Strict):
    """POST /data/validate."""

    sources: Annotated[list[DataSource], Field(min_length=1)]
    # Decides which fields a row must carry (SFT: prompt/completion or messages, ...).
    training_type: TrainingType = TrainingType.SFT
    # Rows checked in depth per source.
    sample_size: Annotated[int, Field(ge=1, le=1_000_000)] = 100
