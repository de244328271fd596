"""HS256 bearer tokens, permissions per role and scope, tenancy taken from the token (§3)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import JWT_SECRET, auth, make_token
from tests.gateway.conftest import PREFIX, Gateway
from tests.gateway.test_metadata import MINIMAL_SUBMIT

BEARER_INVALID = 'Bearer error="invalid_token"'

# Many small tests: one gateway for the module (shared_gateway resets the script per test).
pytestmark = pytest.mark.asyncio(loop_scope="module")


def assert_401(r: httpx.Response, code: str, www_authenticate: str) -> None:
    """A 401 envelope with the right challenge."""
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == code
    assert r.headers["www-authenticate"] == www_authenticate


# --- HS256 (embedded / shared secret) ----------------------------------------------------------


async def test_missing_header(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.get(f"{PREFIX}/jobs")
    assert_401(r, "AUTH_TOKEN_MISSING", "Bearer")
    assert servicer.calls == []


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "user-1",
        "tenant_id": "tenant-a",
        "role": "tenant_admin",
        "iat": now,
        "exp": now + 600,
        "iss": "scaimind-embedded",
        "aud": "scaimind",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


INVALID_HEADERS = {
    "basic_scheme": "Basic dXNlcjpwYXNz",
    "bearer_without_token": "Bearer",
    "bearer_blank": "Bearer    ",
    "not_a_jwt": "Bearer not-a-jwt",
    "three_garbage_parts": "Bearer aaa.bbb.ccc",
    "wrong_signature": "Bearer " + make_token(secret="another-secret-0123456789abcdef-0123456789"),
    "expired": "Bearer " + make_token(ttl_s=-3600),
    "wrong_audience": "Bearer " + make_token(audience="scaigrid"),
    "no_tenant": "Bearer " + jwt.encode(_claims(tenant_id=None), JWT_SECRET, algorithm="HS256"),
    "empty_tenant": "Bearer " + jwt.encode(_claims(tenant_id=""), JWT_SECRET, algorithm="HS256"),
    "no_exp": "Bearer " + jwt.encode(_claims(exp=None), JWT_SECRET, algorithm="HS256"),
    "no_sub": "Bearer " + jwt.encode(_claims(sub=None), JWT_SECRET, algorithm="HS256"),
    "alg_none": "Bearer " + jwt.encode(_claims(), None, algorithm="none"),  # type: ignore[arg-type]
    "not_yet_valid": "Bearer "
    + jwt.encode(_claims(nbf=int(time.time()) + 3600), JWT_SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("header", INVALID_HEADERS.values(), ids=INVALID_HEADERS.keys())
async def test_invalid_tokens(shared_gateway: Gateway, header: str) -> None:
    client, servicer = shared_gateway
    r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": header})
    assert_401(r, "AUTH_TOKEN_INVALID", BEARER_INVALID)
    assert r.json()["meta"]["request_id"] == r.headers["x-request-id"]
    assert servicer.calls == []


@pytest.mark.parametrize(
    ("tenant", "user"),
    [("tenant-a", "josé@example.com"), ("tenänt", "u"), ("tenant-a", "a\nb"), ("t\x7f", "u")],
    ids=["non-ascii-sub", "non-ascii-tenant", "newline", "control"],
)
async def test_identities_that_cannot_travel_as_metadata(
    shared_gateway: Gateway, tenant: str, user: str
) -> None:
    client, servicer = shared_gateway
    r = await client.get(f"{PREFIX}/jobs", headers=auth(tenant, user=user))
    assert_401(r, "AUTH_TOKEN_INVALID", BEARER_INVALID)
    assert servicer.calls == []


@pytest.mark.parametrize(
    ("tenant", "user"),
    [
        (" tenant-a ", "u"),
        ("tenant-a ", "u"),
        ("\ttenant-a", "u"),
        ("tenant-a", " user-1"),
        ("t" * 129, "u"),
        ("tenant-a", "u" * 129),
    ],
    ids=["padded tenant", "trailing space", "tab", "padded user", "long tenant", "long user"],
)
async def test_one_identity_rule_no_normalising(
    shared_gateway: Gateway, tenant: str, user: str
) -> None:
    # A token for " tenant-a " listed tenant-a's jobs (the coordinator stripped the id) while
    # the stream cap and the idempotency ledger counted it as another tenant.
    client, servicer = shared_gateway
    r = await client.get(f"{PREFIX}/jobs", headers=auth(tenant, user=user))
    assert_401(r, "AUTH_TOKEN_INVALID", BEARER_INVALID)
    assert servicer.calls == []


async def test_the_longest_identity_is_accepted(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.get(f"{PREFIX}/jobs", headers=auth("t" * 128, user="u" * 128))
    assert r.status_code == 200, r.text
    assert servicer.last("ListJobs").metadata["x-tenant-id"] == "t" * 128


async def test_token_never_echoed_in_errors(shared_gateway: Gateway) -> None:
    client, _ = shared_gateway
    token = make_token(audience="elsewhere")
    r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert token not in r.text


async def test_expiry_within_leeway_is_accepted(shared_gateway: Gateway) -> None:
    client, _ = shared_gateway
    r = await client.get(f"{PREFIX}/jobs", headers=auth(ttl_s=-5))
    assert r.status_code == 200, r.text


async def test_scheme_is_case_insensitive(shared_gateway: Gateway) -> None:
    client, _ = shared_gateway
    r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"bearer {make_token()}"})
    assert r.status_code == 200, r.text


# --- permissions: role defaults ∪ scope, on every jobs route -----------------------------------

VIEW, MANAGE = "scaimind:view", "scaimind:manage"
JOB_ROUTES: list[tuple[str, str, str, Any]] = [
    ("GET", "/jobs", VIEW, None),
    ("POST", "/jobs", MANAGE, MINIMAL_SUBMIT),
    ("GET", "/jobs/job_1", VIEW, None),
    ("POST", "/jobs/job_1/cancel", MANAGE, None),
    ("POST", "/jobs/job_1/pause", MANAGE, None),
    ("POST", "/jobs/job_1/resume", MANAGE, None),
    ("POST", "/jobs/job_1/retry", MANAGE, None),
]
GRANTS: list[tuple[str, str, set[str]]] = [
    ("super_admin", "", {VIEW, MANAGE}),
    ("partner_admin", "", {VIEW, MANAGE}),
    ("tenant_admin", "", {VIEW, MANAGE}),
    ("tenant_viewer", "", {VIEW}),
    ("tenant_user", "", set()),
    ("no_such_role", "", set()),
    ("tenant_user", VIEW, {VIEW}),
    ("tenant_user", MANAGE, {MANAGE}),
    ("tenant_viewer", MANAGE, {VIEW, MANAGE}),
    ("tenant_user", f"{VIEW} {MANAGE} unrelated:key", {VIEW, MANAGE}),
    ("tenant_user", "scaimind:evaluate scaimind:cluster_admin", set()),
]


@pytest.mark.parametrize(
    ("role", "scope", "granted"), GRANTS, ids=[f"{g[0]}+{g[1] or '-'}" for g in GRANTS]
)
async def test_permission_matrix(
    shared_gateway: Gateway, role: str, scope: str, granted: set[str]
) -> None:
    # One gateway per grant, every jobs route through it (a gateway per cell is slow).
    client, servicer = shared_gateway
    headers = auth(role=role, scope=scope)
    for method, path, needs, body in JOB_ROUTES:
        servicer.calls.clear()
        r = await client.request(method, f"{PREFIX}{path}", json=body, headers=headers)
        route = f"{method} {path}"
        if needs in granted:
            assert r.status_code in (200, 201), (route, r.text)
            assert len(servicer.calls) == 1, route
        else:
            assert r.status_code == 403, (route, r.text)
            error = r.json()["error"]
            assert error["code"] == "AUTHZ_PERMISSION_DENIED", route
            assert needs in error["message"], route
            assert servicer.calls == [], route


@pytest.mark.parametrize(
    ("headers", "status", "may_view"),
    [
        ({}, 401, False),
        (auth(role="tenant_user"), 403, False),
        (auth(role="tenant_viewer"), 403, True),
    ],
    ids=["anonymous", "no-permission", "viewer"],
)
async def test_authentication_and_permission_come_before_validation(
    shared_gateway: Gateway, headers: dict[str, str], status: int, may_view: bool
) -> None:
    # Callers who may not submit learn nothing about the schema.
    client, servicer = shared_gateway
    r = await client.post(f"{PREFIX}/jobs", json={"bogus": 1}, headers=headers)
    assert r.status_code == status, r.text
    r = await client.post(
        f"{PREFIX}/jobs/job_1/retry", json={"modify_resources": True}, headers=headers
    )
    assert r.status_code == status, r.text
    r = await client.get(f"{PREFIX}/jobs", params={"page_size": 0}, headers=headers)
    assert r.status_code == (422 if may_view else status), r.text
    assert servicer.calls == []


# --- tenancy ------------------------------------------------------------------------------------


async def test_tenant_comes_from_the_token_not_query_or_headers(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.get(
        f"{PREFIX}/jobs",
        params={"tenant_id": "tenant-b", "tenant": "tenant-b"},
        headers={**auth("tenant-a"), "x-tenant-id": "tenant-b", "X-Tenant": "tenant-b"},
    )
    assert r.status_code == 200
    assert servicer.last("ListJobs").metadata["x-tenant-id"] == "tenant-a"
    r = await client.get(
        f"{PREFIX}/jobs/job_1", params={"tenant_id": "tenant-b"}, headers=auth("tenant-c")
    )
    assert r.status_code == 200
    assert servicer.last("GetJob").metadata["x-tenant-id"] == "tenant-c"


async def test_tenant_in_the_body_is_not_honoured(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await client.post(
        f"{PREFIX}/jobs", json={**MINIMAL_SUBMIT, "tenant_id": "tenant-b"}, headers=auth()
    )
    assert r.status_code == 422  # unknown field: never silently used or dropped
    assert servicer.calls == []
    r = await client.post(
        f"{PREFIX}/jobs",
        json={**MINIMAL_SUBMIT, "labels": {"tenant_id": "tenant-b"}},
        headers={**auth("tenant-a"), "x-tenant-id": "tenant-b"},
    )
    assert r.status_code == 201
    call = servicer.last("SubmitJob")
    assert call.metadata["x-tenant-id"] == "tenant-a"
    assert dict(call.request.labels) == {"tenant_id": "tenant-b"}  # type: ignore[attr-defined]
    r = await client.post(
        f"{PREFIX}/jobs/job_1/cancel",
        json={"reason": "x", "tenant_id": "tenant-b"},
        headers=auth("tenant-a"),
    )
    assert r.status_code == 422
