"""Configurable claim names (SCAIMIND_JWT_*_CLAIM): RS256 tokens shaped like Keycloak's and
Auth0's, verified against a JWKS document served by a real HTTP server on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from scaimind.gateway.app import create_app
from tests.conftest import gateway_settings
from tests.gateway.conftest import PREFIX, ScriptedCoordinator, running_gateway
from tests.gateway.test_auth import BEARER_INVALID, assert_401
from tests.gateway.test_auth_keys import JwksServer, KeyPair, _pem

ISSUER = "https://keycloak.example/realms/scaigrid"
AUDIENCE = "scaimind"


def _keycloak(idp_key: KeyPair, **claims: Any) -> str:
    """An access token shaped like Keycloak's, with a `tenant_id` user-attribute mapper."""
    now = int(time.time())
    body: dict[str, Any] = {
        "exp": now + 300,
        "iat": now,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "0b6f4a52-7c1e-4c55-9a0e-6b1f0a0c2d11",
        "typ": "Bearer",
        "azp": "scaimind-console",
        "realm_access": {
            "roles": ["offline_access", "default-roles-scaigrid", "tenant_viewer"],
        },
        "resource_access": {"account": {"roles": ["manage-account"]}},
        "scope": "openid profile email",
        "preferred_username": "alice",
        "tenant_id": "acme",
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, idp_key.private, "RS256", headers={"kid": idp_key.kid})


@pytest.fixture(scope="module")
def idp_key() -> KeyPair:
    """The identity provider's RS256 signing key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair("RS256", private, _pem(private), "idp-1")


@pytest.fixture
def jwks(idp_key: KeyPair) -> Iterator[JwksServer]:
    with JwksServer([idp_key.jwk()]) as server:
        yield server


def _settings(tmp_path: Path, port: int, jwks: JwksServer, **claims: str) -> Any:
    return gateway_settings(
        tmp_path,
        port,
        jwt_secret=None,
        jwt_jwks_url=jwks.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        **claims,
    )


@pytest.fixture
async def keycloak_gateway(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path, jwks: JwksServer
) -> AsyncIterator[httpx.AsyncClient]:
    _, port = scripted
    settings = _settings(tmp_path, port, jwks, jwt_role_claim="realm_access.roles")
    async with running_gateway(settings) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_keycloak_roles_list_and_scope_string(
    keycloak_gateway: httpx.AsyncClient,
    scripted: tuple[ScriptedCoordinator, int],
    idp_key: KeyPair,
) -> None:
    servicer, _ = scripted
    client = keycloak_gateway
    viewer = _bearer(_keycloak(idp_key))
    r = await client.get(f"{PREFIX}/jobs", headers=viewer)
    assert r.status_code == 200, r.text
    assert servicer.last("ListJobs").metadata["x-tenant-id"] == "acme"
    assert servicer.last("ListJobs").metadata["x-user-id"] == (
        "0b6f4a52-7c1e-4c55-9a0e-6b1f0a0c2d11"
    )
    # tenant_viewer only: no cancel.
    r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=viewer)
    assert r.status_code == 403, r.text
    assert "scaimind:manage" in r.json()["error"]["message"]

    # Another role in the list grants its permissions too; unknown roles grant nothing.
    admin = _keycloak(
        idp_key, realm_access={"roles": ["offline_access", "tenant_viewer", "tenant_admin"]}
    )
    r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=_bearer(admin))
    assert r.status_code == 200, r.text
    nobody = _keycloak(idp_key, realm_access={"roles": ["offline_access", "uma_authorization"]})
    r = await client.get(f"{PREFIX}/jobs", headers=_bearer(nobody))
    assert r.status_code == 403, r.text

    # Keycloak's scope is a space-separated string: a client scope named like a permission key
    # adds it, the OpenID scopes add nothing.
    scoped = _keycloak(
        idp_key,
        realm_access={"roles": ["offline_access"]},
        scope="openid profile scaimind:view scaimind:evaluate",
    )
    assert (await client.get(f"{PREFIX}/jobs", headers=_bearer(scoped))).status_code == 200
    r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=_bearer(scoped))
    assert r.status_code == 403, r.text


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"tenant_id": None}, "no tenant_id claim"),
        ({"tenant_id": ""}, "no tenant_id claim"),
        ({"tenant_id": ["acme", "globex"]}, "names 2 tenants"),
        ({"tenant_id": {"id": "acme"}}, "'tenant_id' must be a string or a list of strings"),
        ({"realm_access": {"roles": "tenant_admin "}}, None),
        ({"realm_access": {"roles": [1, 2]}}, "'realm_access.roles' must be"),
        ({"realm_access": ["tenant_admin"]}, None),
        ({"scope": {"a": 1}}, "'scope' must be"),
    ],
)
async def test_unusable_claims(
    keycloak_gateway: httpx.AsyncClient,
    scripted: tuple[ScriptedCoordinator, int],
    idp_key: KeyPair,
    claims: dict[str, Any],
    detail: str | None,
) -> None:
    servicer, _ = scripted
    r = await keycloak_gateway.get(f"{PREFIX}/jobs", headers=_bearer(_keycloak(idp_key, **claims)))
    if detail is None:
        # A role that is not in the table ("tenant_admin " with a space), or no roles at all
        # where the path leads nowhere: authenticated, without permissions.
        assert r.status_code == 403, r.text
    else:
        assert_401(r, "AUTH_TOKEN_INVALID", BEARER_INVALID)
        assert detail in r.json()["error"]["message"]
    assert servicer.calls == []


async def test_single_tenant_in_a_list_and_nested_tenant_path(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path, jwks: JwksServer, idp_key: KeyPair
) -> None:
    servicer, port = scripted
    settings = _settings(
        tmp_path,
        port,
        jwks,
        jwt_tenant_claim="scaigrid.tenant",
        jwt_role_claim="resource_access.scaimind.roles",
    )
    async with running_gateway(settings) as client:
        token = _keycloak(
            idp_key,
            tenant_id="ignored",
            scaigrid={"tenant": ["globex"]},
            resource_access={"scaimind": {"roles": ["tenant_viewer"]}},
        )
        r = await client.get(f"{PREFIX}/jobs", headers=_bearer(token))
        assert r.status_code == 200, r.text
        assert servicer.last("ListJobs").metadata["x-tenant-id"] == "globex"
        # The default `tenant_id` claim is not consulted once another claim is configured.
        no_tenant = _keycloak(idp_key, resource_access={"scaimind": {"roles": ["tenant_viewer"]}})
        r = await client.get(f"{PREFIX}/jobs", headers=_bearer(no_tenant))
        assert_401(r, "AUTH_TOKEN_INVALID", BEARER_INVALID)
        assert "no scaigrid.tenant claim" in r.json()["error"]["message"]


async def test_auth0_namespaced_claims_and_a_permissions_list(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path, jwks: JwksServer, idp_key: KeyPair
) -> None:
    servicer, port = scripted
    namespace = "https://scaigrid.example/"
    settings = _settings(
        tmp_path,
        port,
        jwks,
        jwt_tenant_claim=namespace + "tenant_id",
        jwt_role_claim=namespace + "role",
        jwt_scope_claim="permissions",
    )
    async with running_gateway(settings) as client:
        token = _keycloak(
            idp_key,
            tenant_id=None,
            realm_access=None,
            **{namespace + "tenant_id": "initech", "permissions": ["scaimind:view"]},
        )
        r = await client.get(f"{PREFIX}/jobs", headers=_bearer(token))
        assert r.status_code == 200, r.text
        assert servicer.last("ListJobs").metadata["x-tenant-id"] == "initech"
        r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=_bearer(token))
        assert r.status_code == 403, r.text
        role = _keycloak(
            idp_key, **{namespace + "tenant_id": "initech", namespace + "role": "tenant_admin"}
        )
        r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=_bearer(role))
        assert r.status_code == 200, r.text


async def test_the_console_reads_the_configured_claims(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path, jwks: JwksServer
) -> None:
    _, port = scripted
    settings = _settings(
        tmp_path,
        port,
        jwks,
        jwt_role_claim="realm_access.roles",
        role_permissions={"operator": ["scaimind:view", "scaimind:cluster_admin"]},
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
        async with running_gateway(settings) as client:
            started = await client.get(f"{PREFIX}/ui/")
        plain = await http.get(f"{PREFIX}/ui/")
    for shell in (started, plain):
        assert shell.status_code == 200
    config = json.loads(
        started.text.split('id="scaimind-config"', 1)[1].split(">", 1)[1].split("</script>")[0]
    )
    assert config["claims"] == {
        "tenant": "tenant_id",
        "role": "realm_access.roles",
        "scope": "scope",
    }
    assert config["roles"]["operator"] == ["scaimind:cluster_admin", "scaimind:view"]
