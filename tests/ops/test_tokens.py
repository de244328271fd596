"""Downstream tokens: embedded signing, RFC 8693 exchange against a loopback IdP, verification."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from scaimind.contract.downstream_tokens import (
    MAX_TTL_S,
    DownstreamTokenRejected,
    sign_downstream_token,
    verify_downstream_token,
)
from scaimind.gateway.app import create_app, lifespan, mount_module
from scaimind.gateway.security.auth import ALL_PERMISSIONS, CurrentUser, embedded_secret
from scaimind.gateway.security.token_exchange import (
    TokenExchange,
    downstream_signing_key,
)
from tests.conftest import auth, closed_port, gateway_settings, make_token, settings_for, wait_for
from tests.gateway.conftest import app_client
from tests.ops.conftest import (
    ATLAS,
    DRIVE,
    PREFIX,
    GatewayFactory,
    IdP,
    OpsCoordinator,
    exchange_settings,
)

SUBMIT: dict[str, Any] = {
    "name": "demo",
    "training_config": {"training_type": "SFT", "base_model": {"model_id": "tiny"}},
    "data_config": {"sources": [{"path": "scaidrive://tenant-a/train.jsonl"}]},
    "resource_config": {"gpu_count": 1},
}
EVAL_BODY = {"job_id": "job_1", "model_uri": "m", "benchmarks": [{"name": "loss"}]}
DATA_BODY = {"sources": [{"path": "scaidrive://tenant-a/train.jsonl"}]}

# Every call that needs artefacts: (method, path, body, rpc).
TOKEN_ROUTES: list[tuple[str, str, Any, str]] = [
    ("POST", "/jobs", SUBMIT, "SubmitJob"),
    ("POST", "/jobs/job_1/retry", None, "RetryJob"),
    ("POST", "/jobs/job_1/resume", None, "ResumeJob"),
    ("POST", "/evaluations", EVAL_BODY, "SubmitEvaluation"),
    ("POST", "/data/validate", DATA_BODY, "ValidateData"),
    ("GET", "/data/cache", None, "GetDataCache"),
]
# Calls that must not carry them.
PLAIN_ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/jobs/job_1", "GetJob"),
    ("POST", "/jobs/job_1/cancel", "CancelJob"),
    ("POST", "/jobs/job_1/pause", "PauseJob"),
    ("GET", "/evaluations/eval_1", "GetEvaluation"),
    ("GET", "/cluster", "GetClusterStatus"),
    ("POST", "/cluster/nodes/node-1/drain", "DrainNode"),
]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- embedded mode -------------------------------------------------------------------------


async def test_embedded_tokens_on_exactly_the_artefact_calls(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    key = embedded_secret(gw.settings.data_dir)
    assert downstream_signing_key(gw.settings) == key
    for method, path, body, rpc in TOKEN_ROUTES:
        before = time.time()
        r = await gw.http.request(method, f"{PREFIX}{path}", json=body, headers=auth())
        assert r.status_code in (200, 201), (path, r.text)
        md = gw.coordinator.last(rpc).metadata
        for audience, header in (("scaidrive", DRIVE), ("scaiatlas", ATLAS)):
            claims = verify_downstream_token(
                md[header], key=key, audience=audience, tenant_id="tenant-a"
            )
            assert claims["sub"] == "user-1"
            assert claims["aud"] == audience
            assert claims["tenant_id"] == "tenant-a"
            assert claims["act"] == {"sub": "scaimind"}
            assert before - 1 <= claims["iat"] <= time.time()
            assert 0 < claims["exp"] - claims["iat"] <= MAX_TTL_S
    for method, path, rpc in PLAIN_ROUTES:
        r = await gw.http.request(method, f"{PREFIX}{path}", headers=auth())
        assert r.status_code == 200, (path, r.text)
        md = gw.coordinator.last(rpc).metadata
        assert DRIVE not in md
        assert ATLAS not in md


async def test_configured_signing_key_is_used(make_gateway: GatewayFactory) -> None:
    signing_key = "downstream-signing-key-0123456789abcdef"
    gw = await make_gateway(token_signing_key=signing_key)
    r = await gw.http.post(f"{PREFIX}/data/validate", json=DATA_BODY, headers=auth("tenant-z"))
    assert r.status_code == 200
    token = gw.coordinator.last("ValidateData").metadata[DRIVE]
    assert downstream_signing_key(gw.settings) == signing_key
    claims = verify_downstream_token(
        token, key=signing_key, audience="scaidrive", tenant_id="tenant-z"
    )
    assert claims["tenant_id"] == "tenant-z"
    with pytest.raises(DownstreamTokenRejected, match="invalid scaidrive token"):
        verify_downstream_token(
            token,
            key=embedded_secret(gw.settings.data_dir),
            audience="scaidrive",
            tenant_id="tenant-z",
        )


# --- verify_downstream_token ---------------------------------------------------------------

KEY = "verification-key-" + "0123456789abcdef" * 4


def test_verify_accepts_a_fresh_token() -> None:
    token = sign_downstream_token(KEY, subject="u1", tenant_id="t1", audience="scaidrive")
    claims = verify_downstream_token(token, key=KEY, audience="scaidrive", tenant_id="t1")
    assert (claims["sub"], claims["tenant_id"], claims["aud"]) == ("u1", "t1", "scaidrive")


@pytest.mark.parametrize(
    ("make", "audience", "tenant", "reason"),
    [
        (lambda: None, "scaidrive", "t1", "missing scaidrive token"),
        (lambda: "", "scaidrive", "t1", "missing scaidrive token"),
        (lambda: "not-a-jwt", "scaidrive", "t1", "invalid scaidrive token"),
        (
            lambda: sign_downstream_token(KEY, subject="u1", tenant_id="t2", audience="scaidrive"),
            "scaidrive",
            "t1",
            "belongs to another tenant",
        ),
        (
            lambda: sign_downstream_token(KEY, subject="u1", tenant_id="t1", audience="scaiatlas"),
            "scaidrive",
            "t1",
            "not valid for scaidrive",
        ),
        (
            lambda: sign_downstream_token(
                KEY, subject="u1", tenant_id="t1", audience="scaidrive", now=time.time() - 1000
            ),
            "scaidrive",
            "t1",
            "has expired",
        ),
        (
            lambda: sign_downstream_token(
                "another-key-0123456789abcdef-0123456", subject="u", tenant_id="t1", audience="x"
            ),
            "x",
            "t1",
            "invalid x token",
        ),
        (
            lambda: jwt.encode(
                {"sub": "u", "aud": "scaidrive", "iat": int(time.time()), "exp": 2**40},
                KEY,
                algorithm="HS256",
            ),
            "scaidrive",
            "t1",
            "invalid scaidrive token",  # no tenant_id claim
        ),
        (
            lambda: jwt.encode(
                {
                    "sub": "u",
                    "aud": "scaidrive",
                    "tenant_id": "t1",
                    "iat": int(time.time()),
                    "exp": int(time.time()) + 3600,
                },
                KEY,
                algorithm="HS256",
            ),
            "scaidrive",
            "t1",
            "lives longer than allowed",
        ),
        (
            lambda: jwt.encode(
                {
                    "sub": "u",
                    "aud": "scaidrive",
                    "tenant_id": "t1",
                    "iat": int(time.time()),
                    "exp": int(time.time()) + 60,
                },
                KEY,
                algorithm="HS512",
            ),
            "scaidrive",
            "t1",
            "invalid scaidrive token",
        ),
    ],
    ids=[
        "none",
        "empty",
        "garbage",
        "other-tenant",
        "wrong-audience",
        "expired",
        "bad-signature",
        "no-tenant",
        "too-long-lived",
        "other-algorithm",
    ],
)
def test_verify_refuses(
    make: Callable[[], str | None], audience: str, tenant: str, reason: str
) -> None:
    with pytest.raises(DownstreamTokenRejected, match=reason):
        verify_downstream_token(make(), key=KEY, audience=audience, tenant_id=tenant)


def test_sign_refuses_long_lifetimes() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        sign_downstream_token(KEY, subject="u", tenant_id="t", audience="a", ttl_s=MAX_TTL_S + 1)


# --- RFC 8693 exchange -----------------------------------------------------------------------


async def test_exchange_success_and_cache(make_gateway: GatewayFactory, idp: IdP) -> None:
    gw = await make_gateway(**exchange_settings(idp))
    bearer = make_token()
    headers = {"Authorization": f"Bearer {bearer}"}
    r = await gw.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=headers)
    assert r.status_code == 201, r.text
    assert sorted(idp.audiences()) == ["scaiatlas", "scaidrive"]
    for form in idp.requests:
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
        assert form["subject_token"] == bearer
        assert form["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
        assert form["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    md = gw.coordinator.last("SubmitJob").metadata
    drive = next(t for t in idp.issued if t.startswith("idp.scaidrive."))
    atlas = next(t for t in idp.issued if t.startswith("idp.scaiatlas."))
    assert (md[DRIVE], md[ATLAS]) == (drive, atlas)

    # Every other artefact call of the same caller is served from the cache.
    for method, path, body, rpc in TOKEN_ROUTES:
        r = await gw.http.request(method, f"{PREFIX}{path}", json=body, headers=headers)
        assert r.status_code in (200, 201), r.text
        md = gw.coordinator.last(rpc).metadata
        assert (md[DRIVE], md[ATLAS]) == (drive, atlas)
    assert len(idp.requests) == 2

    # Another user, and the same user with another subject token, get their own exchanges.
    r = await gw.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=auth(user="user-2"))
    assert r.status_code == 201
    assert len(idp.requests) == 4
    assert gw.coordinator.last("SubmitJob").metadata[DRIVE] not in (drive, atlas)
    r = await gw.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=auth(scope="x:y"))
    assert r.status_code == 201
    assert len(idp.requests) == 6


async def test_one_http_client_per_lifespan_closed_on_shutdown(
    coordinator: tuple[OpsCoordinator, int], tmp_path: Path, idp: IdP
) -> None:
    settings = gateway_settings(tmp_path, coordinator[1], **exchange_settings(idp))
    app = create_app(settings)
    async with lifespan(app):
        exchange = app.state.scaimind.token_exchange
        assert isinstance(exchange, TokenExchange)
        async with lifespan(app):  # a nested entry shares the first one's resources
            assert app.state.scaimind.token_exchange is exchange
        http = exchange.http
        assert http is not None
        assert not http.is_closed
        user = CurrentUser(user_id="u", tenant_id="t", token="opaque")
        assert set(await exchange.tokens_for(user)) == {DRIVE, ATLAS}
    assert http.is_closed
    embedded = create_app(gateway_settings(tmp_path, 1))
    async with lifespan(embedded):
        assert embedded.state.scaimind.token_exchange.http is None


async def test_exchange_refreshes_before_expiry(make_gateway: GatewayFactory, idp: IdP) -> None:
    gw = await make_gateway(**exchange_settings(idp))
    clock = FakeClock()
    headers = auth()  # one bearer token: the cache is per subject token too
    async with httpx.AsyncClient(timeout=5) as http:
        gw.state.token_exchange = TokenExchange(gw.settings, http=http, clock=clock)

        async def submit() -> dict[str, str]:
            r = await gw.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=headers)
            assert r.status_code == 201, r.text
            return gw.coordinator.last("SubmitJob").metadata

        idp.expires_in = 120
        first = await submit()
        assert len(idp.requests) == 2
        clock.now += 59.9  # still more than the 60 s margin before expiry
        assert (await submit())[DRIVE] == first[DRIVE]
        assert len(idp.requests) == 2
        clock.now += 0.2  # now inside the margin: exchanged again
        second = await submit()
        assert len(idp.requests) == 4
        assert second[DRIVE] != first[DRIVE]
        assert second[ATLAS] != first[ATLAS]
        assert (await submit())[DRIVE] == second[DRIVE]
        assert len(idp.requests) == 4

        # Numeric strings are accepted for expires_in (some IdPs send them).
        clock.now += 1000
        idp.expires_in = "300"
        await submit()
        await submit()
        assert len(idp.requests) == 6


@pytest.mark.parametrize("expires_in", [60, 30, None, "soon", "inf", -5, True, [600]])
async def test_tokens_that_expire_too_soon_are_not_cached(
    make_gateway: GatewayFactory, idp: IdP, expires_in: Any
) -> None:
    gw = await make_gateway(**exchange_settings(idp))
    idp.expires_in = expires_in
    headers = auth()
    for expected in (2, 4):
        r = await gw.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=headers)
        assert r.status_code == 201
        assert len(idp.requests) == expected


@pytest.mark.parametrize(
    ("mode", "overrides", "message"),
    [
        ("error", {}, "answered HTTP 500 server_error"),
        ("badjson", {}, "sent invalid JSON"),
        ("noaccess", {}, "sent no access_token"),
        ("hang", {"token_exchange_timeout_s": 0.3}, "timed out"),
        ("ok", {"token_exchange_client_secret": "wrong"}, "answered HTTP 401 invalid_client"),
        ("ok", {"token_exchange_url": "<closed>"}, "unreachable"),
    ],
    ids=["500", "bad-json", "no-access-token", "timeout", "bad-client-auth", "idp-down"],
)
async def test_exchange_failure_is_502_and_nothing_reaches_the_coordinator(
    make_gateway: GatewayFactory, idp: IdP, mode: str, overrides: dict[str, Any], message: str
) -> None:
    if overrides.get("token_exchange_url") == "<closed>":
        overrides = {"token_exchange_url": f"http://127.0.0.1:{closed_port()}/token"}
    gw = await make_gateway(**exchange_settings(idp, **overrides))
    idp.mode = mode
    started = time.monotonic()
    r = await gw.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=auth())
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "TOKEN_EXCHANGE_FAILED"
    assert message in error["message"]
    assert time.monotonic() - started < 3  # bounded by token_exchange_timeout_s
    assert gw.coordinator.calls == []


async def test_every_artefact_route_fails_before_the_coordinator(
    make_gateway: GatewayFactory, idp: IdP
) -> None:
    gw = await make_gateway(**exchange_settings(idp))
    idp.mode = "error"
    for method, path, body, _ in TOKEN_ROUTES:
        r = await gw.http.request(method, f"{PREFIX}{path}", json=body, headers=auth())
        assert r.status_code == 502, (path, r.text)
        assert r.json()["error"]["code"] == "TOKEN_EXCHANGE_FAILED"
    assert gw.coordinator.calls == []
    # A request fails with the first audience that fails; the other audience's exchange may
    # still be on its way back from the failing IdP, and a request now would share it.
    exchange = gw.state.token_exchange

    async def settled() -> bool:
        return bool(exchange.in_flight == 0)

    await wait_for(settled, within=10)
    # Failures are not cached: once the IdP recovers, the same caller gets through.
    idp.mode = "ok"
    r = await gw.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=auth())
    assert r.status_code == 201
    assert gw.rpcs() == ["SubmitJob"]


async def test_invalid_requests_never_reach_the_idp(make_gateway: GatewayFactory, idp: IdP) -> None:
    gw = await make_gateway(**exchange_settings(idp))
    idp.mode = "error"
    r = await gw.http.post(f"{PREFIX}/jobs", json={"name": "x"}, headers=auth())
    assert r.status_code == 422
    r = await gw.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=auth(role="tenant_viewer"))
    assert r.status_code == 403
    r = await gw.http.post(f"{PREFIX}/evaluations", json={"job_id": "j"}, headers=auth())
    assert r.status_code == 422
    assert idp.requests == []


async def test_concurrent_misses_share_one_exchange(tmp_path: Path, idp: IdP) -> None:
    settings = settings_for(tmp_path, **exchange_settings(idp))
    user = CurrentUser(user_id="u1", tenant_id="t1", token=make_token("t1", "u1"))
    async with httpx.AsyncClient(timeout=5) as http:
        exchange = TokenExchange(settings, http=http)
        idp.gate.clear()  # hold the IdP's answers until every caller is waiting
        callers = [asyncio.ensure_future(exchange.tokens_for(user)) for _ in range(5)]

        async def both_requests_held() -> bool:
            return len(idp.requests) >= 2

        await wait_for(both_requests_held, within=10)
        # A caller that goes away does not cancel the exchange the others share.
        callers[0].cancel()
        idp.gate.set()
        results = await asyncio.gather(*callers[1:])
        assert callers[0].cancelled()
    assert len(idp.requests) == 2
    assert all(r == results[0] for r in results)
    assert set(results[0].values()) == set(idp.issued)


async def test_tokens_are_never_logged(
    make_gateway: GatewayFactory, idp: IdP, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bearer = make_token()
    headers = {"Authorization": f"Bearer {bearer}"}
    exchanged = await make_gateway(**exchange_settings(idp))
    assert (await exchanged.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=headers)).is_success
    idp.mode = "error"
    r = await exchanged.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=auth(user="user-9"))
    assert r.status_code == 502
    embedded = await make_gateway()
    assert (await embedded.http.post(f"{PREFIX}/jobs", json=SUBMIT, headers=headers)).is_success
    signed = embedded.coordinator.last("SubmitJob").metadata

    secrets_ = [bearer, *idp.issued, signed[DRIVE], signed[ATLAS]]
    assert len(idp.issued) == 2
    # The capture works: the exchange and its failure were logged.
    events = {getattr(rec, "event", None) for rec in caplog.records}
    assert {"scaimind_token_exchange", "scaimind_token_exchange_failed"} <= events
    for rec in caplog.records:
        dump = f"{rec.getMessage()} {rec.__dict__!r}"
        for secret in secrets_:
            assert secret not in dump, rec
    for secret in secrets_:
        assert secret not in caplog.text


# --- the module mounted in a host app with its own user dependency ---------------------------


@asynccontextmanager
async def host_app(
    coordinator: tuple[OpsCoordinator, int], tmp_path: Path, user: CurrentUser, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A host app that mounts the module with its own `current_user` and enters its lifespan."""
    _, port = coordinator
    host = FastAPI()

    async def host_user() -> CurrentUser:
        return user

    mount_module(
        host,
        gateway_settings(tmp_path, port, **overrides),
        current_user=host_user,
    )
    async with app_client(host, base_url="http://host") as client:
        yield client


def _host_user(token: str | None) -> CurrentUser:
    return CurrentUser(
        user_id="host-user",
        tenant_id="tenant-h",
        permissions=frozenset(ALL_PERMISSIONS),
        token=token,
    )


async def test_host_user_without_token_and_exchange_is_a_clear_502(
    coordinator: tuple[OpsCoordinator, int], tmp_path: Path, idp: IdP
) -> None:
    async with host_app(coordinator, tmp_path, _host_user(None), **exchange_settings(idp)) as c:
        r = await c.post(f"{PREFIX}/jobs", json=SUBMIT)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "TOKEN_EXCHANGE_FAILED"
    assert "no subject token" in r.json()["error"]["message"]
    assert coordinator[0].calls == []
    assert idp.requests == []


async def test_host_supplied_subject_token_is_exchanged(
    coordinator: tuple[OpsCoordinator, int], tmp_path: Path, idp: IdP
) -> None:
    user = _host_user("host-opaque-session-token")
    async with host_app(coordinator, tmp_path, user, **exchange_settings(idp)) as c:
        r = await c.post(f"{PREFIX}/evaluations", json=EVAL_BODY)
    assert r.status_code == 201, r.text
    assert {f["subject_token"] for f in idp.requests} == {"host-opaque-session-token"}
    assert {f["subject_token_type"] for f in idp.requests} == {
        "urn:ietf:params:oauth:token-type:access_token"
    }
    md = coordinator[0].last("SubmitEvaluation").metadata
    assert {md[DRIVE], md[ATLAS]} == set(idp.issued)
    assert md["x-tenant-id"] == "tenant-h"


async def test_host_user_without_token_in_embedded_mode(
    coordinator: tuple[OpsCoordinator, int], tmp_path: Path
) -> None:
    async with host_app(coordinator, tmp_path, _host_user(None)) as c:
        r = await c.post(f"{PREFIX}/data/validate", json=DATA_BODY)
    assert r.status_code == 200, r.text
    md = coordinator[0].last("ValidateData").metadata
    key = embedded_secret(tmp_path / "data")
    claims = verify_downstream_token(md[ATLAS], key=key, audience="scaiatlas", tenant_id="tenant-h")
    assert claims["sub"] == "host-user"
