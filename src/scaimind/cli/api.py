"""The one HTTP client of every remote command, with the one retry policy they all follow.

Retried: 429 and 503 answers (honouring `Retry-After`) and broken connections, with jittered
exponential backoff inside a bounded total time (`SCAIMIND_RETRY_S`, default 30 s). A broken
connection is retried only when sending the request again is harmless: a GET, or a POST that
carries an Idempotency-Key. A server that was never reached (connection refused, a timeout
while connecting) fails within `connect_s`: a wrong URL is reported in seconds, not after the
whole budget. An unknown host or a malformed URL fails at once. Other 4xx/5xx are never
retried. Streams follow the same policy and resume with `Last-Event-ID`, so a gateway restart
loses and repeats nothing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import httpx

from scaimind import __version__
from scaimind.cli.base import DATA_DIR_CLAIM, CliError, ExitCode, note
from scaimind.cli.sse import SSEEvent, SSEParser
from scaimind.contract.http import API_PREFIX

RETRY_STATUSES: Final = frozenset({429, 503})
CONNECT_TIMEOUT_S: Final = 3.0
# A server never reached (refused, connect timeout) is retried this long, for one that is
# just starting; a wrong URL is reported after it.
CONNECT_RETRY_S: Final = 1.5
REQUEST_TIMEOUT_S: Final = 30.0
# Several missed heartbeats (15 s by default) before a silent stream counts as dropped.
STREAM_READ_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt: an HTTP error answer, or no answer."""

    reason: str
    status: int | None = None
    retry_after: float | None = None
    # No connection was made (refused, connect timeout): the request surely was not sent.
    connect: bool = False
    # Retrying cannot help: unknown host, malformed URL.
    final: bool = False

    @classmethod
    def of_response(cls, response: httpx.Response) -> Failure:
        """An error answer."""
        retry_after: float | None = None
        with contextlib.suppress(ValueError):
            retry_after = float(response.headers.get("retry-after", ""))
        return cls(describe(response), response.status_code, retry_after)

    @classmethod
    def of_exception(cls, exc: httpx.TransportError) -> Failure:
        """No answer."""
        text = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return cls(f"invalid URL: {text}", final=True)
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, socket.gaierror):
                return cls(f"unknown host: {text}", final=True)
            cause = cause.__cause__ or cause.__context__
        connect = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        return cls(text, connect=connect)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try again, and how long to wait first."""

    total_s: float = 30.0
    connect_s: float = CONNECT_RETRY_S
    first_delay_s: float = 0.1
    max_delay_s: float = 5.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The default policy, with `SCAIMIND_RETRY_S` as the total budget when set."""
        raw = os.environ.get("SCAIMIND_RETRY_S", "")
        if not raw:
            return cls()
        try:
            total = float(raw)
        except ValueError:
            total = -1.0
        if not 0 <= total <= 3600:
            raise CliError(f"SCAIMIND_RETRY_S must be 0-3600 seconds, not {raw!r}", ExitCode.USAGE)
        return cls(total_s=total, connect_s=min(total, CONNECT_RETRY_S))

    def delay(
        self, failure: Failure, *, attempt: int, elapsed: float, reached: bool, replayable: bool
    ) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up now."""
        ceiling = min(self.max_delay_s, self.first_delay_s * 2**attempt)
        wait = random.uniform(ceiling / 2, ceiling)
        if failure.final:
            return None
        if failure.status is not None:
            if failure.status not in RETRY_STATUSES:
                return None
            wait = max(wait, failure.retry_after or 0.0)
            budget = self.total_s
        elif failure.connect and not reached:
            budget = self.connect_s
        elif failure.connect or replayable:
            budget = self.total_s
        else:
            return None
        return wait if elapsed + wait <= budget else None


class ApiError(CliError):
    """The gateway answered with an error envelope."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message, ExitCode.API_ERROR)
        self.status = status
        self.error_code = code


def describe(response: httpx.Response, token: str | None = None) -> str:
    """`CODE: message (details) (HTTP n)` from an error envelope, plus a hint where one helps."""
    code, message, details = "", "", ""
    try:
        error = response.json().get("error") or {}
        code, message = str(error.get("code", "")), str(error.get("message", ""))
        fields = [f"{d.get('field')}: {d.get('message')}" for d in error.get("details") or []]
        details = f" ({'; '.join(fields)})" if fields else ""
    except (ValueError, AttributeError, TypeError):
        pass
    if not code:
        # No ScaiGrid envelope: something else answers at this URL (its body may be a page).
        where = response.request.url.copy_with(path="/", query=None)
        return (
            f"{response.reason_phrase or 'error'} (HTTP {response.status_code}) — is {where} a "
            "ScaiMind gateway?"
        )
    hint = _hint(response.status_code, code, message, token)
    return f"{code}: {message}{details} (HTTP {response.status_code}){hint}"


def _hint(status: int, code: str, message: str, token: str | None) -> str:
    if status != 401:
        return ""
    if code == "AUTH_TOKEN_MISSING" or not token:
        return " — pass --token or set SCAIMIND_TOKEN"
    if "signature" not in message:
        return ""
    minted_for = token_claims(token).get(DATA_DIR_CLAIM)
    if isinstance(minted_for, str):
        return (
            f" — this token was minted by `scaimind token` for data dir {minted_for}; a server"
            " on another data dir rejects it: mint one with that server's --data-dir"
        )
    return (
        " — a token from `scaimind token` is accepted only by a `scaimind serve` on the same"
        " --data-dir (or with the same SCAIMIND_JWT_SECRET)"
    )


def token_claims(token: str) -> dict[str, Any]:
    """The unverified claims of a JWT (empty for an API key or anything unreadable)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


class ApiClient:
    """Requests to the module's API under `url`, with the token and the retry policy."""

    def __init__(self, url: str, token: str | None, policy: RetryPolicy | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise CliError(
                f"--url must start with http:// or https://, not {url!r}", ExitCode.USAGE
            )
        self.url = url.rstrip("/")
        self._token = token
        self._policy = policy or RetryPolicy.from_env()
        # Once the server answered, a refused connection means a restart, not a wrong URL.
        self._reached = False
        headers = {"User-Agent": f"scaimind-cli/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._http = httpx.Client(
                base_url=self.url + API_PREFIX,
                headers=headers,
                timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            )
        except httpx.InvalidURL as exc:
            raise CliError(f"invalid --url {url!r}: {exc}", ExitCode.USAGE) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET → the `data` payload."""
        return self._payload(self.request("GET", path, params=params))

    def post(self, path: str, body: Any = None, *, idempotency_key: str | None = None) -> Any:
        """POST (JSON body) → the `data` payload."""
        return self._payload(self.request("POST", path, body=body, idempotency_key=idempotency_key))

    def _payload(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "data" not in body:
            raise CliError(
                f"{self.url} answered HTTP {response.status_code} without a ScaiMind payload: "
                "is it a ScaiMind gateway?"
            )
        return body["data"]

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send with retries; a 2xx response, else CliError (ApiError for an error answer)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        replayable = method == "GET" or idempotency_key is not None
        started, attempt = time.monotonic(), 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(
                    method, path, params=params, json=body, headers=headers
                )
            except httpx.TransportError as exc:
                failure = Failure.of_exception(exc)
            else:
                self._reached = True
                if response.status_code < 400:
                    return response
                failure = Failure.of_response(response)
            delay = self._policy.delay(
                failure,
                attempt=attempt,
                elapsed=time.monotonic() - started,
                reached=self._reached,
                replayable=replayable,
            )
            if delay is None:
                raise self._give_up(failure, response)
            if self._reached or not failure.connect:
                note(f"{failure.reason}; retrying in {delay:.1f}s")
            time.sleep(delay)
            attempt += 1

    def follow(
        self,
        path: str,
        params: dict[str, Any],
        on_event: Callable[[SSEEvent], None],
        *,
        max_retries: int,
    ) -> dict[str, Any]:
        """Follow an SSE endpoint until its `end` event (returned); reconnect on drops."""
        last_id: str | None = None
        failures = 0
        outage_started: float | None = None
        timeout = httpx.Timeout(
            REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S, read=STREAM_READ_TIMEOUT_S
        )
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            response: httpx.Response | None = None
            try:
                with self._http.stream(
                    "GET", path, params=params, headers=headers, timeout=timeout
                ) as response:
                    self._reached = True
                    if response.status_code != 200:
                        response.read()
                        failure = Failure.of_response(response)
                    else:
                        failure = Failure("the stream closed before the job ended")
                        parser = SSEParser()
                        for line in response.iter_lines():
                            event = parser.feed(line)
                            if event is None or event.data == "[DONE]":
                                continue
                            # Anything, even a heartbeat, proves the connection is healthy.
                            failures, outage_started = 0, None
                            if event.is_comment:
                                continue
                            if event.event == "end":
                                end: dict[str, Any] = event.json()
                                return end
                            if event.event == "error":
                                info = event.json()
                                code = info.get("code", "unknown error")
                                if not info.get("retryable"):
                                    raise CliError(f"the stream failed: {code}")
                                failure = Failure(f"the stream failed: {code}")
                                break
                            on_event(event)
                            if event.id is not None:
                                last_id = event.id
            except httpx.TransportError as exc:
                failure = Failure.of_exception(exc)
            now = time.monotonic()
            outage_started = outage_started if outage_started is not None else now
            delay = self._policy.delay(
                failure,
                attempt=failures,
                elapsed=now - outage_started,
                reached=self._reached,
                replayable=True,
            )
            failures += 1
            if delay is None or (failures > max_retries and not self._reached):
                raise self._give_up(failure, response)
            if failures > max_retries:
                code = ExitCode.CONNECTION if failure.status is None else ExitCode.API_ERROR
                raise CliError(
                    f"giving up after {max_retries} reconnect attempts: {failure.reason}", code
                )
            if self._reached or not failure.connect:
                note(f"{failure.reason}; reconnecting in {delay:.1f}s")
            time.sleep(delay)

    def _give_up(self, failure: Failure, response: httpx.Response | None) -> CliError:
        if response is not None and failure.status is not None:
            return ApiError(describe(response, self._token), failure.status, _code(response))
        if failure.final:
            return CliError(f"cannot reach {self.url}: {failure.reason}", ExitCode.CONNECTION)
        hint = "" if self._reached else " (is `scaimind serve` running? check --url / SCAIMIND_URL)"
        return CliError(f"cannot reach {self.url}: {failure.reason}{hint}", ExitCode.CONNECTION)


def _code(response: httpx.Response) -> str:
    try:
        return str((response.json().get("error") or {}).get("code", ""))
    except (ValueError, AttributeError):
        return ""
