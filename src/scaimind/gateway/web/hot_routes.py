"""The three most-called endpoints answered without FastAPI's per-request machinery.

`bench/overhead.py --profile` showed that for GET /jobs/{id}, GET /jobs and POST
/jobs/{id}/cancel most of what the gateway adds to the gRPC call is FastAPI's: routing
through the included routers, solving six dependency nodes and their parameters, and the
route's own request/response wrappers. A `HotRoute` sits in front of the module's routes and
takes only the plain form of its request (a valid job id, no query or a known one, no body or a
JSON body that validates); it runs the same permission check and call context (`deps`) and the
same handler function of `routes/jobs.py`. Everything else falls through to the FastAPI route,
which answers as it always did: a query parameter, a body that fails validation or a client
gone in the middle of it (replayed to it as read), a root path, or any dependency override.
Errors raised here reach the app's exception handlers like a route's, so the envelope is the
same; the middlewares (request id, body limit, metrics) wrap both alike. Only the standalone
app (`create_app`) has hot routes: a host app's own app-wide dependencies would not run here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from fastapi import Request, Response
from starlette.datastructures import URLPath
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Message, Receive, Scope, Send

from scaimind.contract import limits
from scaimind.gateway.security.auth import MANAGE, VIEW
from scaimind.gateway.web.deps import Caller, caller_of, get_current_user, permit, state_of
from scaimind.gateway.web.routes import jobs
from scaimind.gateway.web.schemas.jobs import CancelBody, JobView

# Set on a request this module handed back to the router: its routes then stand aside.
_DECLINED: Final = "scaimind.hot_route_declined"

# An answer gets the request and the job id ("" without one); None hands it to FastAPI.
Answer = Callable[[Request, str], Awaitable[Response | None]]


class HotRoute(BaseRoute):
    """One endpoint's plain requests, answered by `answer`; the rest go on to its FastAPI route."""

    def __init__(
        self, method: str, path_format: str, answer: Answer, queries: frozenset[bytes]
    ) -> None:
        self.method = method
        # The template the request metrics label the request with, as for the FastAPI route.
        self.path_format = path_format
        self.answer = answer
        self.queries = queries
        head, with_id, tail = path_format.partition("{job_id}")
        self._head, self._tail = head, tail
        self._with_id = bool(with_id)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if (
            scope["type"] != "http"
            or scope["method"] != self.method
            or scope["query_string"] not in self.queries
            or scope.get("root_path")
            or _DECLINED in scope
            # An override (a test's, or a host's own user dependency) would not run here.
            or scope["app"].dependency_overrides
        ):
            return Match.NONE, {}
        job_id = self._job_id(scope["path"])
        if job_id is None:
            return Match.NONE, {}
        params = {"job_id": job_id} if self._with_id else {}
        return Match.FULL, {"route": self, "endpoint": self.answer, "path_params": params}

    def _job_id(self, path: str) -> str | None:
        """The id in `path` when it is this route's path with a valid id; None otherwise."""
        if not self._with_id:
            return "" if path == self._head else None
        if not (path.startswith(self._head) and path.endswith(self._tail)):
            return None
        job_id = path[len(self._head) : len(path) - len(self._tail)]
        # The FastAPI route's JobId: 1 to ID_CHARS characters of one path segment. Anything
        # unusual (control characters, a lone surrogate a server left in the path) is left to
        # FastAPI's validation and the coordinator's rules.
        if 0 < len(job_id) <= limits.ID_CHARS and "/" not in job_id and job_id.isprintable():
            return job_id
        return None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.answer(request, scope["path_params"].get("job_id", ""))
        except ClientDisconnect:
            # Gone in the middle of its body: FastAPI answers that (400), as it always did.
            await _hand_over(scope, {"type": "http.disconnect"}, receive, send)
            return
        if response is None:
            body = await request.body()
            await _hand_over(scope, {"type": "http.request", "body": body}, receive, send)
            return
        await response(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        # Not a named route: url_for() finds the FastAPI route of the same endpoint.
        raise NoMatchFound(name, path_params)


async def _hand_over(scope: Scope, first: Message, receive: Receive, send: Send) -> None:
    """Route the request again, past the hot routes: what was read of it (the whole body, or
    the client's disconnect) comes first, then the server's messages."""
    scope[_DECLINED] = True
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return first

    await scope["router"](scope, replay, send)


async def _authorize(request: Request, *permissions: str) -> Caller:
    """What FastAPI's caller dependency resolves to (the standalone user dependency)."""
    return caller_of(request, permit(await get_current_user(request), permissions))


_VIEW_QUERIES: Final[Mapping[bytes, JobView]] = {
    b"view=FULL": JobView.FULL,
    b"view=BASIC": JobView.BASIC,
}


async def _get_job(request: Request, job_id: str) -> Response:
    who = await _authorize(request, VIEW)
    state = state_of(request)
    view = _VIEW_QUERIES.get(request.scope["query_string"])
    if view is None:  # no query: the handler's own default view
        return await jobs.get_job(job_id, who, state.client, state.cache.jobs)
    return await jobs.get_job(job_id, who, state.client, state.cache.jobs, view)


async def _list_jobs(request: Request, _: str) -> Response:
    who = await _authorize(request, VIEW)
    state = state_of(request)
    # The handler's own defaults: the first page of 20, newest first, BASIC.
    return await jobs.list_jobs(who, state.client, state.cache.jobs)


async def _cancel_job(request: Request, job_id: str) -> Response | None:
    # FastAPI reads and parses the body before it solves the dependencies, so a malformed body
    # is a 422 even without a token: anything but an empty or valid JSON body goes to it.
    body = await request.body()
    parsed = CancelBody()
    if body:
        # FastAPI parses only a body declared JSON (one without a content type is bytes).
        media_type = request.headers.get("content-type", "")
        if media_type.partition(";")[0].strip().lower() != "application/json":
            return None
        try:
            parsed = CancelBody.model_validate_json(body)
        except ValueError:
            return None
    who = await _authorize(request, MANAGE)
    return await jobs.cancel_job(job_id, who, state_of(request).client, parsed)


def hot_routes(prefix: str) -> list[BaseRoute]:
    """The hot routes of the module under `prefix`; they go before its FastAPI routes."""
    return [
        HotRoute("GET", f"{prefix}/jobs/{{job_id}}", _get_job, frozenset({b"", *_VIEW_QUERIES})),
        HotRoute("GET", f"{prefix}/jobs", _list_jobs, frozenset({b""})),
        HotRoute("POST", f"{prefix}/jobs/{{job_id}}/cancel", _cancel_job, frozenset({b""})),
    ]
