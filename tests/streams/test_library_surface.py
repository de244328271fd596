"""The stream code uses sse-starlette through its public surface only (private methods would tie
us to one of its versions)."""

from __future__ import annotations

from sse_starlette import EventSourceResponse

from scaimind.gateway.streaming.response import EventStream


def test_event_stream_overrides_no_private_method_of_sse_starlette() -> None:
    # _send_with_timeout and _stream_response existed only from sse-starlette 3.5 on, so the
    # pin >=2.1 let installs that could not follow a log.
    overridden = {
        name
        for name, value in vars(EventStream).items()
        if callable(value) and name.startswith("_") and not name.startswith("__")
    }
    private_of_library = {name for name in dir(EventSourceResponse) if name.startswith("_")}
    assert overridden & private_of_library == set()
