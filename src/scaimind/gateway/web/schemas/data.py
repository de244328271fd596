"""Request schemas of the data endpoints (docs/API.md, "Data")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scaimind.contract import limits
from scaimind.gateway.web.schemas.common import Strict
from scaimind.gateway.web.schemas.jobs import DataSource, TrainingType


class ValidateDataBody(Strict):
    """POST /data/validate."""

    sources: Annotated[list[DataSource], Field(min_length=1, max_length=limits.SOURCES)] = Field(
        description=f"Sources to read (1 to {limits.SOURCES})."
    )
    training_type: TrainingType = Field(
        TrainingType.SFT,
        description="Decides which fields a row must carry (SFT: prompt/completion, "
        "messages or text; DPO: prompt/chosen/rejected; ...).",
    )
    sample_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        100, description="Rows checked in depth per source."
    )
