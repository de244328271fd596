"""Asymmetric tokens (RS256/ES256 against a PEM key or a loopback JWKS server), issuer, audience."""

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

from tests.conftest import JWT_SECRET, auth, gateway_settings, make_token
from tests.gateway.conftest import PREFIX, ScriptedCoordinator, running_gateway
from tests.gateway.test_auth import BEARER_INVALID, _claims, assert_401


async def test_issuer_checked_when_configured(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    servicer, port = scripted
    settings = gateway_settings(tmp_path, port, jwt_issuer="https://id.example")
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
    settings = gateway_settings(tmp_path, port, jwt_audience=None)
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
    settings = gateway_settings(tmp_path, port, jwt_secret=None, jwt_public_key=public)
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
    settings = gateway_settings(
        tmp_path,
        port,
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
    settings = gateway_settings(
        tmp_path,
        port,
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
        ec_key.sign(iss=iss, kid=rsa_key.kid),  # an RSA key's kid on an ES256 token
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
    settings = gateway_settings(tmp_path, port, jwt_secret=None, jwt_jwks_url=url)
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
        settings = gateway_settings(
            tmp_path,
            port,
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
