"""The module mounted in a host app (ScaiGrid) with the host's own user dependency; the manifest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from scaimind.gateway import app as scaimind_app
from scaimind.gateway.manifest import MANIFEST
from scaimind.gateway.security.auth import ALL_PERMISSIONS, CurrentUser
from scaimind.settings import Settings
from tests.conftest import gateway_settings
from tests.gateway.conftest import PREFIX, ScriptedCoordinator
from tests.gateway.test_metadata import MINIMAL_SUBMIT


async def host_user(
    x_host_user: Annotated[str | None, Header(alias="X-Host-User")] = None,
) -> CurrentUser:
    """The host's user lookup: `tenant:user:perm perm…` in a header stands in for its session."""
    if not x_host_user:
        raise HTTPException(401, "host login required")
    tenant, user, perms = x_host_user.split(":", 2)
    return CurrentUser(
        user_id=user, tenant_id=tenant, role="host", permissions=frozenset(perms.split())
    )


def make_host(settings: Settings, prefix: str = PREFIX) -> FastAPI:
    """A host app that mounts the module and enters its lifespan from its own."""

    @asynccontextmanager
    async def host_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with scaimind_app.lifespan(app):
            yield

    host = FastAPI(lifespan=host_lifespan)

    @host.get("/host/ping")
    async def ping() -> dict[str, str]:
        return {"host": "ok"}

    @host.get("/host/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("host bug in /srv/host/views.py")

    scaimind_app.mount_module(host, settings, current_user=host_user, prefix=prefix)
    return host


@asynccontextmanager
async def client_for(host: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=host, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        yield client


@pytest.fixture
def host_settings(scripted: tuple[ScriptedCoordinator, int], tmp_path: Path) -> Settings:
    _, port = scripted
    return gateway_settings(tmp_path, port)


def who(tenant: str, user: str, *perms: str) -> dict[str, str]:
    return {"X-Host-User": f"{tenant}:{user}:{' '.join(perms)}"}


async def test_jobs_through_the_host(
    host_settings: Settings, scripted: tuple[ScriptedCoordinator, int]
) -> None:
    servicer, _ = scripted
    host = make_host(host_settings)
    async with host.router.lifespan_context(host), client_for(host) as client:
        viewer = who("tenant-h", "hana", "scaimind:view")
        r = await client.get(f"{PREFIX}/jobs", headers=viewer)
        assert r.status_code == 200, r.text
        md = servicer.last("ListJobs").metadata
        assert (md["x-tenant-id"], md["x-user-id"]) == ("tenant-h", "hana")
        assert md["x-request-id"] == r.headers["x-request-id"]

        r = await client.get(f"{PREFIX}/jobs/job_4", headers=viewer)
        assert r.json()["data"]["job_id"] == "job_4"

        manager = who("tenant-h", "max", "scaimind:manage")
        r = await client.post(f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers=manager)
        assert r.status_code == 201, r.text
        for action in ("cancel", "pause", "resume", "retry"):
            r = await client.post(f"{PREFIX}/jobs/job_4/{action}", headers=manager)
            assert r.status_code == 200, (action, r.text)

        assert (await client.get("/host/ping")).json() == {"host": "ok"}
    assert [c.rpc for c in servicer.calls] == [
        "ListJobs",
        "GetJob",
        "SubmitJob",
        "CancelJob",
        "PauseJob",
        "ResumeJob",
        "RetryJob",
    ]


async def test_host_user_lacking_permissions(
    host_settings: Settings, scripted: tuple[ScriptedCoordinator, int]
) -> None:
    servicer, _ = scripted
    host = make_host(host_settings)
    async with host.router.lifespan_context(host), client_for(host) as client:
        viewer = who("tenant-h", "hana", "scaimind:view")
        r = await client.post(f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers=viewer)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "AUTHZ_PERMISSION_DENIED"
        assert "scaimind:manage" in r.json()["error"]["message"]
        nobody = who("tenant-h", "nora")
        r = await client.get(f"{PREFIX}/jobs", headers=nobody)
        assert r.status_code == 403
        assert "scaimind:view" in r.json()["error"]["message"]
        # A host identity that cannot travel as gRPC metadata is refused, not a 500.
        zoe = {b"X-Host-User": "tenant-h:zoë:scaimind:view".encode()}
        r = await client.get(f"{PREFIX}/jobs", headers=zoe)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "AUTH_TOKEN_INVALID"
        # The host's own refusal is rendered in the envelope too.
        r = await client.get(f"{PREFIX}/jobs")
        assert r.status_code == 401
        assert r.json()["status"] == "error"
    assert servicer.calls == []


async def test_bearer_tokens_are_not_needed_or_used_when_hosted(
    host_settings: Settings, scripted: tuple[ScriptedCoordinator, int]
) -> None:
    servicer, _ = scripted
    host = make_host(host_settings)
    async with host.router.lifespan_context(host), client_for(host) as client:
        r = await client.get(
            f"{PREFIX}/jobs",
            headers={
                **who("tenant-h", "hana", "scaimind:view"),
                "Authorization": "Bearer garbage",
            },
        )
        assert r.status_code == 200, r.text
    assert servicer.last("ListJobs").metadata["x-tenant-id"] == "tenant-h"


async def test_lifespan_entered_twice_is_safe(
    host_settings: Settings, scripted: tuple[ScriptedCoordinator, int]
) -> None:
    servicer, _ = scripted
    host = make_host(host_settings)
    viewer = who("tenant-h", "hana", "scaimind:view")
    async with host.router.lifespan_context(host), client_for(host) as client:
        state = host.state.scaimind
        async with scaimind_app.lifespan(host):
            assert host.state.scaimind is state  # the nested entry shares the resources
            assert (await client.get(f"{PREFIX}/jobs", headers=viewer)).status_code == 200
        # Leaving the nested entry must not close what the outer one owns.
        assert host.state.scaimind is state
        assert (await client.get(f"{PREFIX}/jobs", headers=viewer)).status_code == 200
    assert not hasattr(host.state, "scaimind")
    # Entering again after a full exit starts fresh resources.
    async with host.router.lifespan_context(host), client_for(host) as client:
        assert host.state.scaimind is not state
        assert (await client.get(f"{PREFIX}/jobs", headers=viewer)).status_code == 200
    assert len(servicer.calls) == 3


async def test_requests_without_the_lifespan_get_an_envelope(host_settings: Settings) -> None:
    host = make_host(host_settings)
    async with client_for(host) as client:
        r = await client.get(f"{PREFIX}/jobs", headers=who("t", "u", "scaimind:view"))
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "BACKEND_UNAVAILABLE"
    assert r.headers["x-request-id"]


async def test_unknown_module_path_and_custom_prefix(
    host_settings: Settings, scripted: tuple[ScriptedCoordinator, int]
) -> None:
    servicer, _ = scripted
    host = make_host(host_settings, prefix="/api/training")
    viewer = who("tenant-h", "hana", "scaimind:view")
    async with host.router.lifespan_context(host), client_for(host) as client:
        assert (await client.get("/api/training/jobs", headers=viewer)).status_code == 200
        r = await client.get("/api/training/nope", headers={"X-Request-ID": "abc"})
        assert r.status_code == 404
        assert r.json() == {
            "status": "error",
            "error": {"code": "NOT_FOUND", "message": r.json()["error"]["message"]},
            "meta": {"request_id": "abc"},
        }
        assert (await client.get(f"{PREFIX}/jobs", headers=viewer)).status_code == 404
    assert len(servicer.calls) == 1


async def test_unexpected_errors_are_enveloped_with_the_request_id(
    host_settings: Settings,
) -> None:
    host = make_host(host_settings)
    async with host.router.lifespan_context(host), client_for(host) as client:
        r = await client.get("/host/boom", headers={"X-Request-ID": "trace-500"})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "trace-500"
    assert r.json() == {
        "status": "error",
        "error": {"code": "INTERNAL_ERROR", "message": r.json()["error"]["message"]},
        "meta": {"request_id": "trace-500"},
    }
    assert "/srv" not in r.text


def test_manifest() -> None:
    assert MANIFEST.module_id == "scaimind"
    assert MANIFEST.api_prefix == PREFIX
    keys = [p.key for p in MANIFEST.permissions]
    assert sorted(keys) == sorted(
        ["scaimind:view", "scaimind:manage", "scaimind:cluster_admin", "scaimind:evaluate"]
    )
    assert set(keys) == set(ALL_PERMISSIONS)
    assert all(p.description for p in MANIFEST.permissions)
    pages = MANIFEST.admin_pages
    assert len(pages) == 5
    assert len({p.id for p in pages}) == 5
    assert len({p.path for p in pages}) == 5
    for page in pages:
        assert page.title
        assert page.path.startswith("/")
        assert page.permission in keys
    # Reading needs view; at least one page is for submitting (manage) and one for evaluations.
    assert {p.permission for p in pages} >= {
        "scaimind:view",
        "scaimind:manage",
        "scaimind:evaluate",
    }
