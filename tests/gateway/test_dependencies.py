"""Every route and dependency of the module runs on the event loop, never in a thread."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from scaimind.gateway.app import create_app
from tests.conftest import settings_for


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # Included routers (FastAPI keeps them as one entry each) and their own inclusions.
        nested = getattr(route, "original_router", None) or getattr(route, "router", None)
        if nested is not None and nested is not route:
            yield from _api_routes(nested.routes)


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _is_coroutine(call: Any) -> bool:
    # A dependency may be an instance with an async __call__ (fastapi.security's schemes).
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004
    )


def test_every_dependency_and_endpoint_is_a_coroutine(tmp_path: Path) -> None:
    # FastAPI runs a plain `def` endpoint or dependency in a worker thread; behind an event
    # loop busy with thousands of streams each such hop waited for the GIL, and GET
    # /jobs/{id} p99 rose several times over (bench/streams.py).
    app = create_app(settings_for(tmp_path))
    routes = list(_api_routes(app.routes))
    assert len(routes) > 20
    sync = sorted(
        {
            f"{route.path}: {getattr(call, '__qualname__', call)}"
            for route in routes
            for call in [route.endpoint, *_calls(route.dependant)]
            if call is not None and not _is_coroutine(call)
        }
    )
    assert sync == []
