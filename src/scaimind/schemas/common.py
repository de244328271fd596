"""Building blocks of the request schemas: the strict base model and capped string types.

Every string of a request is one of the types below: a length cap from `scaimind.limits` (the
coordinator enforces the same numbers) and the character rule of `limits.text_problem` (no lone
surrogates, no control characters; line breaks only in free text). A lone surrogate reached the
protobuf encoder (a 500) before this rule covered every body.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from scaimind import limits


class Strict(BaseModel):
    """Base: unknown fields are errors, so typos do not silently vanish; no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _line(value: str) -> str:
    problem = limits.text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _text(value: str) -> str:
    problem = limits.text_problem(value, multiline=True)
    if problem is not None:
        raise ValueError(problem)
    return value


# One line of text, by what it holds.
Id = Annotated[str, Field(max_length=limits.ID_CHARS), AfterValidator(_line)]
Name = Annotated[str, Field(max_length=limits.NAME_CHARS), AfterValidator(_line)]
Path = Annotated[str, Field(max_length=limits.PATH_CHARS), AfterValidator(_line)]
Value = Annotated[str, Field(max_length=limits.VALUE_CHARS), AfterValidator(_line)]
Key = Annotated[str, Field(min_length=1, max_length=limits.KEY_CHARS), AfterValidator(_line)]
# Free text: line breaks and tabs allowed.
Reason = Annotated[str, Field(max_length=limits.REASON_CHARS), AfterValidator(_text)]
Template = Annotated[str, Field(max_length=limits.TEMPLATE_CHARS), AfterValidator(_text)]
MultilineValue = Annotated[str, Field(max_length=limits.VALUE_CHARS), AfterValidator(_text)]

LabelKey = Annotated[
    str, Field(min_length=1, max_length=limits.LABEL_KEY_CHARS), AfterValidator(_line)
]
LabelValue = Annotated[str, Field(max_length=limits.LABEL_VALUE_CHARS), AfterValidator(_line)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=limits.LABELS)]
# Every other string map (model_kwargs, framework configs, field_mapping, parameters).
Options = Annotated[dict[Key, Value], Field(max_length=limits.OPTIONS)]
