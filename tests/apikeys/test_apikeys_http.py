"""`sgk_` keys as bearer tokens on the jobs API, on every database the gateway supports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scaimind.contract.downstream_tokens import verify_downstream_token
from scaimind.gateway.security.apikeys import ApiKeyStore, generate_key
from scaimind.gateway.security.auth import MANAGE, VIEW
from scaimind.gateway.security.token_exchange import downstream_signing_key
from tests.apikeys.conftest import KeyedGateway
from tests.conftest import auth, closed_port, gateway_settings
from tests.gateway.conftest import PREFIX, ScriptedCoordinator, running_gateway
from tests.gateway.test_metadata import MINIMAL_SUBMIT


def bearer(key: str) -> dict[str, str]:
    """The Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}


def assert_invalid(response: httpx.Response) -> None:
    """401 AUTH_TOKEN_INVALID with the Bearer challenge."""
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "AUTH_TOKEN_INVALID"
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_key_authenticates_the_jobs_api_as_its_tenant_and_user(gw: KeyedGateway) -> None:
    _, key = await gw.store.create("tenant-k", "ci-bot", role="tenant_admin", name="ci")

    listed = await gw.http.get(f"{PREFIX}/jobs", headers=bearer(key))
    assert listed.status_code == 200, listed.text
    md = gw.coordinator.last("ListJobs").metadata
    assert (md["x-tenant-id"], md["x-user-id"]) == ("tenant-k", "ci-bot")

    submitted = await gw.http.post(f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers=bearer(key))
    assert submitted.status_code == 201, submitted.text
    md = gw.coordinator.last("SubmitJob").metadata
    assert md["x-tenant-id"] == "tenant-k"
    # The embedded mode signs downstream tokens for the key's user without a subject JWT.
    claims = verify_downstream_token(
        md["x-scaidrive-token"],
        key=downstream_signing_key(gw.settings),
        audience="scaidrive",
        tenant_id="tenant-k",
    )
    assert claims["sub"] == "ci-bot"
    # JWTs keep working next to keys.
    assert (await gw.http.get(f"{PREFIX}/jobs", headers=auth("tenant-j"))).status_code == 200
    assert gw.coordinator.last("ListJobs").metadata["x-tenant-id"] == "tenant-j"


async def test_unknown_revoked_and_expired_keys_are_401(gw: KeyedGateway) -> None:
    revoked_id, revoked = await gw.store.create("tenant-a", "u1")
    assert (await gw.http.get(f"{PREFIX}/jobs", headers=bearer(revoked))).status_code == 200
    assert await gw.store.revoke(revoked_id)
    # Created two hours ago with a one-hour lifetime.
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    _, expired = await ApiKeyStore(gw.engine, clock=lambda: two_hours_ago).create(
        "tenant-a", "u1", ttl_s=3600
    )
    calls = len(gw.coordinator.calls)
    for key in (revoked, expired, generate_key(), "sgk_", "sgk_short"):
        assert_invalid(await gw.http.get(f"{PREFIX}/jobs", headers=bearer(key)))
    assert len(gw.coordinator.calls) == calls


async def test_role_and_scope_decide_permissions(gw: KeyedGateway) -> None:
    _, viewer = await gw.store.create("tenant-a", "v", role="tenant_viewer")
    _, manager = await gw.store.create("tenant-a", "m", role="tenant_user", scope=MANAGE)
    _, scoped_viewer = await gw.store.create("tenant-a", "s", role="", scope=VIEW)

    async def statuses(key: str) -> tuple[int, int]:
        get = await gw.http.get(f"{PREFIX}/jobs", headers=bearer(key))
        post = await gw.http.post(f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers=bearer(key))
        return get.status_code, post.status_code

    assert await statuses(viewer) == (200, 403)
    assert await statuses(manager) == (403, 201)
    assert await statuses(scoped_viewer) == (200, 403)
    denied = await gw.http.post(f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers=bearer(viewer))
    assert denied.json()["error"]["code"] == "AUTHZ_PERMISSION_DENIED"


async def test_a_database_outage_is_503_not_a_refused_key(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    _, port = scripted
    settings = gateway_settings(
        tmp_path,
        port,
        # Port 9 (discard) on loopback is closed: every database call fails fast.
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/none",
    )
    async with running_gateway(settings) as client:
        r = await client.get(f"{PREFIX}/jobs", headers=bearer(generate_key()))
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "BACKEND_UNAVAILABLE"
        assert r.headers["retry-after"] == "5"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_with_token_exchange_configured_key_callers_get_no_downstream_tokens(
    scripted: tuple[ScriptedCoordinator, int],
    database_url: str,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    servicer, port = scripted
    settings = gateway_settings(
        tmp_path,
        port,
        database_url=database_url,
        # Never reached: there is no subject token to send it.
        token_exchange_url=f"http://127.0.0.1:{closed_port()}/token",
    )
    _, key = await ApiKeyStore(engine).create("tenant-a", "u1")
    async with running_gateway(settings) as client:
        listed = await client.get(f"{PREFIX}/jobs", headers=bearer(key))
        assert listed.status_code == 200, listed.text
        r = await client.post(f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers=bearer(key))
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "TOKEN_EXCHANGE_FAILED"
        assert "no subject token" in r.json()["error"]["message"]
    assert [c.rpc for c in servicer.calls] == ["ListJobs"]
