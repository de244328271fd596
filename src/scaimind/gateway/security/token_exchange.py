"""Downstream tokens for ScaiDrive and ScaiAtlas (docs/API.md, "What the coordinator receives").

Calls that touch data or model artefacts carry `x-scaidrive-token` and `x-scaiatlas-token`,
short-lived tokens minted for the caller either by an RFC 8693 token exchange against the
identity provider or, in the embedded mode, signed locally with HS256. Tokens are never logged.
"""

import asyncio
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote_plus

import httpx

from scaimind.contract.downstream_tokens import METADATA_KEYS, sign_downstream_token
from scaimind.gateway.errors import TokenExchangeFailed
from scaimind.gateway.security.auth import CurrentUser, embedded_secret
from scaimind.settings import Settings

logger = logging.getLogger("scaimind.gateway.security.token_exchange")

# Exchanged tokens are replaced this long before the identity provider says they expire, so a
# token handed to the coordinator still has time to be used.
REFRESH_MARGIN_S: Final = 60.0

GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_JWT: Final = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_ACCESS: Final = "urn:ietf:params:oauth:token-type:access_token"

_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")
_MAX_CACHE_ENTRIES: Final = 10_000


def downstream_signing_key(settings: Settings) -> str:
    """The HS256 key of the embedded mode: `token_signing_key`, else the data dir's secret."""
    key = settings.token_signing_key
    return key.get_secret_value() if key else embedded_secret(settings.data_dir)


@dataclass(frozen=True, slots=True)
class _Issued:
    token: str
    # Clock reading after which the token is exchanged again.
    refresh_at: float


# (tenant, subject, audience, digest of the subject token): a different subject token for the
# same user (e.g. a narrower API key) never reuses a token exchanged from another one.
_Key = tuple[str, str, str, str]


class TokenExchange:
    """Mints the downstream tokens of a caller: RFC 8693 exchange, or local HS256 signing."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin_s: float = REFRESH_MARGIN_S,
    ) -> None:
        self._url = settings.token_exchange_url
        self._timeout_s = settings.token_exchange_timeout_s
        self._clock = clock
        self._refresh_margin_s = refresh_margin_s
        self._http = http
        self._auth: httpx.BasicAuth | None = None
        self._signing_key: str | None = None
        if self._url:
            if http is None:
                raise ValueError("token exchange needs an httpx.AsyncClient")
            client_id = settings.token_exchange_client_id
            if client_id:
                secret = settings.token_exchange_client_secret
                # RFC 6749 §2.3.1: both parts are form-encoded before Basic encoding.
                self._auth = httpx.BasicAuth(
                    quote_plus(client_id),
                    quote_plus(secret.get_secret_value() if secret else ""),
                )
        else:
            self._signing_key = downstream_signing_key(settings)
        self._cache: dict[_Key, _Issued] = {}
        self._inflight: dict[_Key, asyncio.Task[_Issued]] = {}

    @property
    def http(self) -> httpx.AsyncClient | None:
        """The shared HTTP client of the exchange (None in the embedded mode)."""
        return self._http

    @property
    def in_flight(self) -> int:
        """Exchanges waiting for the identity provider now."""
        return len(self._inflight)

    async def tokens_for(self, user: CurrentUser) -> dict[str, str]:
        """The downstream metadata for a caller; TokenExchangeFailed when it cannot be had."""
        if self._signing_key is not None:
            subject = user.user_id or f"tenant:{user.tenant_id}"
            return {
                header: sign_downstream_token(
                    self._signing_key, subject=subject, tenant_id=user.tenant_id, audience=aud
                )
                for aud, header in METADATA_KEYS.items()
            }
        if not user.token:
            raise TokenExchangeFailed(
                "token exchange is configured but the caller has no subject token to exchange"
            )
        subject_token = user.token
        digest = hashlib.sha256(subject_token.encode()).hexdigest()
        tokens = await asyncio.gather(
            *(self._token(user, subject_token, digest, aud) for aud in METADATA_KEYS)
        )
        return dict(zip(METADATA_KEYS.values(), tokens, strict=True))

    async def _token(
        self, user: CurrentUser, subject_token: str, digest: str, audience: str
    ) -> str:
        key: _Key = (user.tenant_id, user.user_id, audience, digest)
        cached = self._cache.get(key)
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.token
        task = self._inflight.get(key)
        if task is None:
            # Concurrent misses for one key share one request to the identity provider.
            task = asyncio.ensure_future(self._exchange(key, subject_token, audience))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._settled(key, t))
        # Shielded: one waiter going away must not cancel the exchange the others wait for.
        return (await asyncio.shield(task)).token

    def _settled(self, key: _Key, task: asyncio.Task[_Issued]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here so a failure nobody awaited is not reported

    async def _exchange(self, key: _Key, subject_token: str, audience: str) -> _Issued:
        assert self._http is not None
        assert self._url is not None
        form = {
            "grant_type": GRANT_TYPE,
            "subject_token": subject_token,
            "subject_token_type": (
                TOKEN_TYPE_JWT if _JWT_SHAPE.match(subject_token) else TOKEN_TYPE_ACCESS
            ),
            "audience": audience,
            "requested_token_type": TOKEN_TYPE_ACCESS,
        }
        started = self._clock()
        try:
            # httpx bounds each phase; this bounds the whole exchange (slow-drip answers too).
            async with asyncio.timeout(self._timeout_s):
                response = await self._http.post(
                    self._url,
                    data=form,
                    auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
                    headers={"Accept": "application/json"},
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            timed_out = isinstance(exc, TimeoutError | httpx.TimeoutException)
            reason = "timed out" if timed_out else f"unreachable ({type(exc).__name__})"
            self._log_failure(audience, reason)
            raise TokenExchangeFailed(
                f"token exchange for {audience} failed: the identity provider {reason}"
            ) from None
        token, ttl = self._parse(response, audience)
        # Without a lifetime the token is used once and not cached.
        refresh_at = started + ttl - self._refresh_margin_s if ttl is not None else started
        result = _Issued(token=token, refresh_at=refresh_at)
        if refresh_at > started:
            self._remember(key, result)
        logger.debug(
            "exchanged a token for %s (expires in %s s)",
            audience,
            ttl,
            extra={"event": "scaimind_token_exchange", "audience": audience},
        )
        return result

    def _parse(self, response: httpx.Response, audience: str) -> tuple[str, float | None]:
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.is_success:
            error = body.get("error") if isinstance(body, dict) else None
            code = error if isinstance(error, str) and _OAUTH_ERROR.match(error) else None
            detail = f"HTTP {response.status_code}" + (f" {code}" if code else "")
            self._log_failure(audience, f"refused: {detail}")
            raise TokenExchangeFailed(
                f"token exchange for {audience} failed: the identity provider answered {detail}"
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            problem = "invalid JSON" if body is None else "no access_token"
            self._log_failure(audience, problem)
            raise TokenExchangeFailed(
                f"token exchange for {audience} failed: the identity provider sent {problem}"
            )
        return token, _lifetime(body.get("expires_in"))

    def _remember(self, key: _Key, issued: _Issued) -> None:
        cache = self._cache
        cache.pop(key, None)
        cache[key] = issued
        if len(cache) > _MAX_CACHE_ENTRIES:
            now = self._clock()
            for stale in [k for k, v in cache.items() if v.refresh_at <= now]:
                del cache[stale]
            while len(cache) > _MAX_CACHE_ENTRIES:
                del cache[next(iter(cache))]

    def _log_failure(self, audience: str, reason: str) -> None:
        logger.warning(
            "token exchange for %s failed: %s",
            audience,
            reason,
            extra={"event": "scaimind_token_exchange_failed", "audience": audience},
        )


def _lifetime(raw: Any) -> float | None:
    """`expires_in` as seconds; None when absent or not a sane positive number."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


class DownstreamTokens:
    """The caller's downstream tokens, minted when first asked for.

    Minting is deferred to the handler so that permission and body validation (which FastAPI
    runs after dependencies) decide first, and an invalid request never reaches the identity
    provider.
    """

    def __init__(self, exchange: TokenExchange, user: CurrentUser) -> None:
        self._exchange = exchange
        self._user = user

    async def metadata(self) -> dict[str, str]:
        """`{"x-scaidrive-token": …, "x-scaiatlas-token": …}`; TokenExchangeFailed if not."""
        return await self._exchange.tokens_for(self._user)


async def open_token_exchange(settings: Settings, stack: AsyncExitStack) -> TokenExchange:
    """The token exchange service and its one shared HTTP client (closed by `stack`)."""
    http: httpx.AsyncClient | None = None
    if settings.token_exchange_url:
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.token_exchange_timeout_s),
            follow_redirects=False,
        )
        stack.push_async_callback(http.aclose)
    return TokenExchange(settings, http=http)
