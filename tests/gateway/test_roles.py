"""SCAIMIND_ROLE_PERMISSIONS replaces role grants; a plain-text coordinator link is warned about."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from scaimind.gateway.app import create_app, lifespan
from scaimind.gateway.security.apikeys import ApiKeyStore
from tests.conftest import auth, gateway_settings, settings_for
from tests.gateway.conftest import PREFIX, ScriptedCoordinator, app_client, running_gateway

# A shared install: tenant admins keep everything but draining the nodes every tenant uses;
# operators may do only that.
SHARED = {
    "tenant_admin": ["scaimind:view", "scaimind:manage", "scaimind:evaluate"],
    "operator": ["scaimind:view", "scaimind:cluster_admin"],
}


async def _drain(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    r = await client.post(f"{PREFIX}/cluster/nodes/node-a/drain", headers=headers)
    return r.status_code


async def test_by_default_a_tenant_admin_may_drain_nodes(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    _, port = scripted
    async with running_gateway(gateway_settings(tmp_path, port)) as client:
        # No DrainNode script: UNIMPLEMENTED (501) means the permission check let it through.
        assert await _drain(client, auth()) == 501


async def test_role_permissions_take_cluster_admin_away_from_tenant_admins(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    servicer, port = scripted
    app = create_app(gateway_settings(tmp_path, port, role_permissions=SHARED))
    async with app_client(app) as client:
        r = await client.post(f"{PREFIX}/cluster/nodes/node-a/drain", headers=auth())
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "AUTHZ_PERMISSION_DENIED"
        assert "scaimind:cluster_admin" in r.json()["error"]["message"]
        # Everything else of a tenant admin still works.
        assert (await client.get(f"{PREFIX}/jobs", headers=auth())).status_code == 200
        # A role the defaults do not know gets what the setting grants.
        assert await _drain(client, auth(role="operator")) == 501
        assert (
            await client.get(f"{PREFIX}/jobs", headers=auth(role="operator"))
        ).status_code == 200
        r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=auth(role="operator"))
        assert r.status_code == 403
        # Roles the setting does not name keep their defaults; scopes still add keys.
        assert await _drain(client, auth(role="super_admin")) == 501
        assert await _drain(client, auth(scope="scaimind:cluster_admin")) == 501
        # API keys are granted from the same table.
        store = app.state.scaimind.api_keys
        assert isinstance(store, ApiKeyStore)
        _, key = await store.create("tenant-a", "ci", role="tenant_admin")
        assert await _drain(client, {"Authorization": f"Bearer {key}"}) == 403
    assert [c.rpc for c in servicer.calls].count("ListJobs") == 2


@pytest.mark.parametrize(
    ("host", "warned"),
    [("192.0.2.10", True), ("coordinator.internal", True), ("127.0.0.1", False), ("::1", False)],
)
async def test_a_plaintext_coordinator_off_this_machine_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, warned: bool
) -> None:
    app = create_app(settings_for(tmp_path, grpc_host=host, grpc_port=50051))
    with caplog.at_level(logging.WARNING, logger="scaimind.gateway.app"):
        async with lifespan(app):
            pass
    events = [getattr(r, "event", None) for r in caplog.records]
    assert ("scaimind_coordinator_plaintext" in events) is warned
