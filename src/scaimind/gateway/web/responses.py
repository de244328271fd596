"""Success bodies rendered once, with orjson, straight from the converted message.

A handler that returns a dict has FastAPI validate it against the route's `response_model` and
serialise it again; for a job with its checkpoints that was a sizeable share of the gateway's CPU
per request (bench/overhead.py). The dicts `message_to_dict` makes already have exactly the shape
of the response models (tests/gateway/test_openapi.py checks every field of every view, and
tests/gateway/test_responses.py that both renderings agree), so routes keep `response_model` for
the OpenAPI contract and return a `DataResponse`, which FastAPI sends as it is.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from google.protobuf.message import Message
from starlette.background import BackgroundTask
from starlette.responses import Response

from scaimind.gateway.backend.convert import message_to_dict

# Non-string map keys (an int-keyed proto map) become strings, as pydantic renders them; NaN and
# infinities become null (orjson's default), like the `Measure` fields of the models.
_OPTIONS: Final = orjson.OPT_NON_STR_KEYS


def render(content: Any) -> bytes:
    """JSON bytes of an API-shaped value."""
    return orjson.dumps(content, option=_OPTIONS)


class DataResponse(Response):
    """`{"data": payload}` as application/json."""

    media_type = "application/json"

    def __init__(
        self,
        payload: Any,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__({"data": payload}, status_code, headers, None, background)

    def render(self, content: Any) -> bytes:
        return render(content)


def data_response(message: Message, status_code: int = 200) -> DataResponse:
    """The success envelope of a protocol message."""
    return DataResponse(message_to_dict(message), status_code)
