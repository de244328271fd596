"""`scaimind apikey create|list|revoke` as a real subprocess, against the gateway's database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.security.apikeys import ApiKeyStore
from tests.cache.cache_support import DatabaseFactory
from tests.conftest import settings_for
from tests.gateway.conftest import PREFIX, ScriptedCoordinator, running_gateway


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the subprocess nor Settings() may pick up an outer SCAIMIND_DATABASE_URL."""
    for name in list(os.environ):
        if name.startswith("SCAIMIND_"):
            monkeypatch.delenv(name)


def scaimind(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real console script."""
    script = Path(sys.executable).parent / "scaimind"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scaimind.cli"]
    return subprocess.run(
        [*command, "apikey", *args], capture_output=True, text=True, timeout=60, check=False
    )


def create(*args: str) -> tuple[str, str]:
    """`apikey create …` → (key_id, key)."""
    proc = scaimind("create", *args)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    key = lines[0]
    assert key.startswith("sgk_")
    found = re.search(r"created API key ([0-9a-f]+) ", proc.stderr)
    assert found, proc.stderr
    return found.group(1), key


async def test_cli_key_is_accepted_by_a_gateway_on_the_same_data_dir_until_revoked(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    servicer, port = scripted
    data_dir = tmp_path / "data"
    key_id, key = create(
        *("--tenant", "acme", "--user", "ada", "--role", "tenant_viewer"),
        *("--name", "nightly eval", "--ttl", "600", "--data-dir", str(data_dir)),
    )
    settings = settings_for(tmp_path, data_dir=data_dir, grpc_host="127.0.0.1", grpc_port=port)
    headers = {"Authorization": f"Bearer {key}"}
    async with running_gateway(settings) as client:
        r = await client.get(f"{PREFIX}/jobs", headers=headers)
        assert r.status_code == 200, r.text
        assert servicer.last("ListJobs").metadata["x-tenant-id"] == "acme"
        assert servicer.last("ListJobs").metadata["x-user-id"] == "ada"

        # The CLI runs off the event loop: the gateway in this process must go on serving (and
        # finish its background cache writes) while the operator's command runs, as it would in
        # production; a blocked loop would hold SQLite's write lock for the whole subprocess.
        listing = await asyncio.to_thread(
            scaimind, "list", "--tenant", "acme", "--json", "--data-dir", str(data_dir)
        )
        assert listing.returncode == 0, listing.stderr
        (entry,) = json.loads(listing.stdout)
        assert entry["key_id"] == key_id
        assert entry["status"] == "active"
        assert entry["name"] == "nightly eval"
        assert entry["expires_at"]
        assert entry["last_used_at"]
        assert key not in listing.stdout
        revoked = await asyncio.to_thread(scaimind, "revoke", key_id, "--data-dir", str(data_dir))
        assert revoked.returncode == 0, revoked.stderr
        r = await client.get(f"{PREFIX}/jobs", headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "AUTH_TOKEN_INVALID"

    unknown = scaimind("revoke", "0123456789abcdef", "--data-dir", str(data_dir))
    assert unknown.returncode == 1
    assert "no API key 0123456789abcdef" in unknown.stderr


@pytest.mark.parametrize("database_url", ["postgresql", "mariadb"], indirect=True)
async def test_cli_on_a_server_database(database_url: str, tmp_path: Path) -> None:
    # --database-url points at the session's migrated server database; the data dir is unused.
    key_id, key = create(
        *("--tenant", "acme", "--user", "ada", "--scope", "scaimind:manage"),
        *("--database-url", database_url, "--data-dir", str(tmp_path)),
    )
    engine = create_engine(database_url)
    try:
        store = ApiKeyStore(engine)
        user = await store.verify(key)
        assert user is not None
        assert (user.tenant_id, user.user_id, user.role) == ("acme", "ada", "tenant_admin")
        table = scaimind("list", "--tenant", "acme", "--database-url", database_url)
        assert table.returncode == 0, table.stderr
        (row,) = [line for line in table.stdout.splitlines() if line.startswith(key_id)]
        assert row.split()[1:6] == ["active", "ada", "tenant_admin", "scaimind:manage", "-"]
        assert key not in table.stdout
        assert scaimind("revoke", key_id, "--database-url", database_url).returncode == 0
        assert await store.verify(key) is None
    finally:
        await engine.dispose()
    assert not (tmp_path / "scaimind.db").exists()


def test_cli_refuses_an_unknown_role_and_prints_no_key(tmp_path: Path) -> None:
    refused = scaimind(
        *("create", "--tenant", "acme", "--user", "ada", "--role", "root"),
        *("--data-dir", str(tmp_path)),
    )
    assert refused.returncode == 1
    assert "unknown role 'root'" in refused.stderr
    assert refused.stdout == ""


def test_cli_on_an_unmigrated_server_database_names_the_cause_and_the_fix(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    empty = database_factory.create("postgresql")
    listed = scaimind("list", "--tenant", "acme", "--database-url", empty)
    assert listed.returncode == 1
    assert "does not exist" in listed.stderr
    assert "(run `scaimind migrate`?)" in listed.stderr
    # The driver's words only: SQLAlchemy's rendering would echo the statement and its
    # parameters (for `create`, the key's hash).
    assert "SELECT" not in listed.stderr
    assert "[SQL:" not in listed.stderr
