"""Building blocks of the request schemas: the strict base model and capped string types.

Every string of a request is one of the types below: a length cap from `contract.limits` (the
coordinator enforces the same numbers) and the character rule of `limits.text_problem` (no lone
surrogates, no control characters; line breaks only in free text). A lone surrogate reached the
protobuf encoder (a 500) before this rule covered every body.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from scaimind.contract import limits

# pydantic's own alias (pydantic.config defines it without exporting it).
JsonDict = dict[str, Any]


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


# The character rules in OpenAPI (JSON Schema patterns), so clients and fuzzers see them; the
# validators above enforce them with a message that names the offending character.
_LINE: JsonDict = {"pattern": "^[^\\u0000-\\u001f\\u007f]*$"}
_TEXT: JsonDict = {"pattern": "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"}


def _line_of(max_chars: int, min_chars: int = 0) -> Any:
    return Field(min_length=min_chars or None, max_length=max_chars, json_schema_extra=_LINE)


# One line of text, by what it holds.
Id = Annotated[str, _line_of(limits.ID_CHARS), AfterValidator(_line)]
Name = Annotated[str, _line_of(limits.NAME_CHARS), AfterValidator(_line)]
Path = Annotated[str, _line_of(limits.PATH_CHARS), AfterValidator(_line)]
Value = Annotated[str, _line_of(limits.VALUE_CHARS), AfterValidator(_line)]
Key = Annotated[str, _line_of(limits.KEY_CHARS, 1), AfterValidator(_line)]
# Free text: line breaks and tabs allowed.
Reason = Annotated[
    str, Field(max_length=limits.REASON_CHARS, json_schema_extra=_TEXT), AfterValidator(_text)
]
Template = Annotated[
    str, Field(max_length=limits.TEMPLATE_CHARS, json_schema_extra=_TEXT), AfterValidator(_text)
]
MultilineValue = Annotated[
    str, Field(max_length=limits.VALUE_CHARS, json_schema_extra=_TEXT), AfterValidator(_text)
]


def _keys_by_pattern(schema: JsonDict) -> None:
    # pydantic writes a map whose keys have a pattern as patternProperties, which leaves keys
    # that do not match (and their values) unconstrained; say it as propertyNames instead.
    patterns = schema.pop("patternProperties", None)
    if isinstance(patterns, dict) and len(patterns) == 1:
        ((pattern, value),) = patterns.items()
        schema["additionalProperties"] = value
        schema.setdefault("propertyNames", {})["pattern"] = pattern


def map_of(max_items: int) -> Any:
    """The Field of a string map of at most `max_items` entries."""
    return Field(max_length=max_items, json_schema_extra=_keys_by_pattern)


LabelKey = Annotated[str, _line_of(limits.LABEL_KEY_CHARS, 1), AfterValidator(_line)]
LabelValue = Annotated[str, _line_of(limits.LABEL_VALUE_CHARS), AfterValidator(_line)]
Labels = Annotated[dict[LabelKey, LabelValue], map_of(limits.LABELS)]
# Every other string map (model_kwargs, framework configs, field_mapping, parameters).
Options = Annotated[dict[Key, Value], map_of(limits.OPTIONS)]
