"""Bearer tokens, permissions per role and scope, and tenancy taken from the token (§3)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import JWT_SECRET, auth, make_token, settings_for
from tests.gateway.conftest import PREFIX, Gateway, ScriptedCoordinator, running_gateway
from tests.gateway.test_metadata import MINIMAL_SUBMIT

BEARER_INVALID = 'Bearer error="invalid_token"'


def assert_401(r: httpx.Response, code: str, www_authenticate: str) -> None:
    """A 401 envelope with the right challenge."""
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == code
    assert r.headers["www-authenticate"] == www_authenticate


# --- HS256 (embedded / shared secret) ----------------------------------------------------------


async def test_missing_header(gateway: Gateway) -> None:
    client, servicer = gateway
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
async def test_invalid_tokens(gateway: Gateway, header: str) -> None:
    client, servicer = gateway
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
    gateway: Gateway, tenant: str, user: str
) -> None:
    client, servicer = gateway
    r = await client.get(f"{PREFIX}/jobs", headers=auth(tenant, user=user))
    assert_401(r, "AUTH_TOKEN_INVALID", BEARER_INVALID)
    assert servicer.calls == []


async def test_token_never_echoed_in_errors(gateway: Gateway) -> None:
    client, _ = gateway
    token = make_token(audience="elsewhere")
    r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert token not in r.text


async def test_expiry_within_leeway_is_accepted(gateway: Gateway) -> None:
    client, _ = gateway
    r = await client.get(f"{PREFIX}/jobs", headers=auth(ttl_s=-5))
    assert r.status_code == 200, r.text


async def test_scheme_is_case_insensitive(gateway: Gateway) -> None:
    client, _ = gateway
    r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"bearer {make_token()}"})
    assert r.status_code == 200, r.text


async def test_issuer_checked_when_configured(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    servicer, port = scripted
    settings = settings_for(
        tmp_path, grpc_host="127.0.0.1", grpc_port=port, jwt_issuer="https://id.example"
    )
    async with running_gateway(settings) as client:
        wrong = await client.get(f"{PREFIX}/jobs", headers=auth())  # iss scaimind-embedded
        assert_401(wrong, "AUTH_TOKEN_INVALID", BEARER_INVALID)
        assert "issuer" in wrong.json()["error"]["message"]
        right = await client.get(f"{PREFIX}/jobs", headers=auth(issuer="https://id.example"))
        assert right.status_code == 200, right.text
    assert len(servicer.calls) == 1


async def test_audience_not_checked_when_unset(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    _, port = scripted
    settings = settings_for(tmp_path, grpc_host="127.0.0.1", grpc_port=port, jwt_audience=None)
    async with running_gateway(settings) as client:
        r = await client.get(f"{PREFIX}/jobs", headers=auth(audience="anything"))
        assert r.status_code == 200, r.text


# --- RS256 / ES256 ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """A private key for signing and its public half as PEM and JWK."""

    algorithm: str
    private: Any
    public_pem: str
    kid: str

    def sign(self, kid: str | None = None, **overrides: Any) -> str:
        """A token with default claims, signed with this key."""
        headers = {"kid": kid or self.kid}
        return jwt.encode(_claims(**overrides), self.private, self.algorithm, headers=headers)

    def jwk(self) -> dict[str, Any]:
        """The public JWK."""
        algo = jwt.get_algorithm_by_name(self.algorithm)
        data: dict[str, Any] = algo.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "use": "sig", "alg": self.algorithm}


def _pem(private: Any) -> str:
    return str(
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair("RS256", private, _pem(private), "rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> KeyPair:
    private = ec.generate_private_key(ec.SECP256R1())
    return KeyPair("ES256", private, _pem(private), "ec-1")


@pytest.fixture(scope="module")
def other_rsa_key() -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair("RS256", private, _pem(private), "rsa-old")


@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key"])
@pytest.mark.parametrize("as_file", [False, True], ids=["inline", "file"])
async def test_pem_key_verification(
    scripted: tuple[ScriptedCoordinator, int],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    other_rsa_key: KeyPair,
    key_name: str,
    as_file: bool,
) -> None:
    servicer, port = scripted
    key: KeyPair = request.getfixturevalue(key_name)
    public: str = key.public_pem
    if as_file:
        path = tmp_path / "jwt.pem"
        path.write_text(key.public_pem)
        public = str(path)
    settings = settings_for(
        tmp_path, grpc_host="127.0.0.1", grpc_port=port, jwt_secret=None, jwt_public_key=public
    )
    async with running_gateway(settings) as client:

        async def status(token: str) -> int:
            r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {token}"})
            if r.status_code == 401:
                assert r.headers["www-authenticate"] == BEARER_INVALID
            return r.status_code

        assert await status(key.sign(sub="pem-user", tenant_id="tenant-pem")) == 200
        assert await status(other_rsa_key.sign()) == 401  # signed by another key
        assert await status(key.sign(exp=int(time.time()) - 3600)) == 401
        assert await status(key.sign(aud="other")) == 401
        # HS256 signed with the public key as the secret: the classic algorithm confusion.
        forged = jwt.encode(_claims(), JWT_SECRET, algorithm="HS256")
        assert await status(forged) == 401
        assert await status(make_token()) == 401
    md = servicer.last("ListJobs").metadata
    assert (md["x-tenant-id"], md["x-user-id"]) == ("tenant-pem", "pem-user")
    assert len(servicer.calls) == 1


async def test_public_key_algorithm_mismatch_is_rejected(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path, rsa_key: KeyPair, ec_key: KeyPair
) -> None:
    _, port = scripted
    settings = settings_for(
        tmp_path,
        grpc_host="127.0.0.1",
        grpc_port=port,
        jwt_secret=None,
        jwt_public_key=rsa_key.public_pem,
    )
    async with running_gateway(settings) as client:
        r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {ec_key.sign()}"})
        assert_401(r, "AUTH_TOKEN_INVALID", BEARER_INVALID)


class JwksServer:
    """A real HTTP server on loopback serving a JWKS document (the identity provider)."""

    def __init__(self, keys: list[dict[str, Any]], *, hang: bool = False) -> None:
        self.keys = keys
        self.hits = 0
        # When hanging, requests wait for this (set on exit) and then answer nothing.
        self.release = threading.Event() if hang else None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                if outer.release is not None:
                    outer.release.wait(30)
                    return
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.release is not None:
            self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def jwks(rsa_key: KeyPair, ec_key: KeyPair) -> Iterator[JwksServer]:
    with JwksServer([rsa_key.jwk(), ec_key.jwk()]) as server:
        yield server


@pytest.fixture
async def jwks_gateway(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path, jwks: JwksServer
) -> AsyncIterator[httpx.AsyncClient]:
    _, port = scripted
    settings = settings_for(
        tmp_path,
        grpc_host="127.0.0.1",
        grpc_port=port,
        jwt_secret=None,
        jwt_jwks_url=jwks.url,
        jwt_issuer="https://id.example",
    )
    async with running_gateway(settings) as client:
        yield client


async def test_jwks_verification(
    jwks_gateway: httpx.AsyncClient,
    jwks: JwksServer,
    scripted: tuple[ScriptedCoordinator, int],
    rsa_key: KeyPair,
    ec_key: KeyPair,
    other_rsa_key: KeyPair,
) -> None:
    servicer, _ = scripted
    client = jwks_gateway
    iss = "https://id.example"

    async def get(token: str) -> httpx.Response:
        return await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {token}"})

    for key in (rsa_key, ec_key):
        r = await get(key.sign(iss=iss, tenant_id=f"t-{key.kid}"))
        assert r.status_code == 200, r.text
        assert servicer.last("ListJobs").metadata["x-tenant-id"] == f"t-{key.kid}"
    assert jwks.hits >= 1
    for bad in (
        rsa_key.sign(iss="https://evil.example"),  # wrong issuer
        rsa_key.sign(iss=iss, aud="other"),  # wrong audience
        rsa_key.sign(iss=iss, exp=int(time.time()) - 3600),  # expired
        other_rsa_key.sign(iss=iss),  # a key the JWKS does not (or no longer) publish
        other_rsa_key.sign(iss=iss, kid=rsa_key.kid),  # right kid, wrong key
        jwt.encode(_claims(iss=iss), JWT_SECRET, algorithm="HS256"),  # no kid, wrong alg
    ):
        assert_401(await get(bad), "AUTH_TOKEN_INVALID", BEARER_INVALID)
    assert len(servicer.calls) == 2


def _jwks_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "scaimind_jwks_fetch_failed"]


async def test_jwks_unreachable_is_401_not_500(
    scripted: tuple[ScriptedCoordinator, int],
    tmp_path: Path,
    rsa_key: KeyPair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    servicer, port = scripted
    with JwksServer([]) as server:
        url = server.url
    # The server is closed now: nothing listens on the URL.
    settings = settings_for(
        tmp_path, grpc_host="127.0.0.1", grpc_port=port, jwt_secret=None, jwt_jwks_url=url
    )
    async with running_gateway(settings) as client:
        r = await client.get(
            f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {rsa_key.sign()}"}
        )
    assert_401(r, "AUTH_TOKEN_INVALID", BEARER_INVALID)
    # The internal failure is logged, not told to the caller.
    assert "127.0.0.1" not in r.text
    assert "refused" not in r.text.lower()
    assert len(_jwks_failures(caplog)) == 1
    assert servicer.calls == []


async def test_hung_jwks_endpoint_times_out(
    scripted: tuple[ScriptedCoordinator, int],
    tmp_path: Path,
    rsa_key: KeyPair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    servicer, port = scripted
    with JwksServer([rsa_key.jwk()], hang=True) as server:
        settings = settings_for(
            tmp_path,
            grpc_host="127.0.0.1",
            grpc_port=port,
            jwt_secret=None,
            jwt_jwks_url=server.url,
            jwt_jwks_timeout_s=0.5,
        )
        async with running_gateway(settings) as client:
            started = time.monotonic()
            r = await client.get(
                f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {rsa_key.sign()}"}
            )
            elapsed = time.monotonic() - started
    assert_401(r, "AUTH_TOKEN_INVALID", BEARER_INVALID)
    assert 0.4 <= elapsed <= 1.5, elapsed
    assert server.hits == 1
    assert len(_jwks_failures(caplog)) == 1
    assert servicer.calls == []


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
    gateway: Gateway, role: str, scope: str, granted: set[str]
) -> None:
    # One gateway per grant, every jobs route through it (a gateway per cell is slow).
    client, servicer = gateway
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
    gateway: Gateway, headers: dict[str, str], status: int, may_view: bool
) -> None:
    # Callers who may not submit learn nothing about the schema.
    client, servicer = gateway
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


async def test_tenant_comes_from_the_token_not_query_or_headers(gateway: Gateway) -> None:
    client, servicer = gateway
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


async def test_tenant_in_the_body_is_not_honoured(gateway: Gateway) -> None:
    client, servicer = gateway
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
