"""`scaimind token` mints tokens a gateway on the same data dir accepts with no jwt secret set."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import jwt
import pytest

from scaimind.cli.main import main
from scaimind.gateway.security.auth import embedded_secret, mint_token
from scaimind.settings import Settings, SettingsError
from tests.conftest import API_SECRET
from tests.gateway.conftest import PREFIX, ScriptedCoordinator, running_gateway
from tests.gateway.test_metadata import MINIMAL_SUBMIT


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the subprocess nor Settings() may pick up an outer SCAIMIND_JWT_SECRET."""
    for name in list(os.environ):
        if name.startswith("SCAIMIND_"):
            monkeypatch.delenv(name)


def scaimind_token(data_dir: Path, *args: str) -> str:
    """Run the real console script and return the printed token."""
    script = Path(sys.executable).parent / "scaimind"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scaimind.cli"]
    proc = subprocess.run(
        [*command, "token", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return lines[0]


async def test_token_is_accepted_by_a_gateway_on_the_same_data_dir(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    servicer, port = scripted
    data_dir = tmp_path / "data"
    viewer = scaimind_token(
        data_dir,
        *("--tenant", "acme", "--user", "ada", "--role", "tenant_viewer"),
        *("--scope", "scaimind:manage", "--ttl", "900"),
    )
    secret_file = data_dir / "jwt-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    before = (secret_file.stat().st_ino, secret_file.stat().st_mtime_ns)

    user = scaimind_token(data_dir, "--tenant", "acme", "--user", "bob", "--role", "tenant_user")
    assert (secret_file.stat().st_ino, secret_file.stat().st_mtime_ns) == before
    assert secret_file.read_text().strip() == secret
    for token in (viewer, user):
        jwt.decode(token, secret, algorithms=["HS256"], audience="scaimind")

    claims = jwt.decode(viewer, secret, algorithms=["HS256"], audience="scaimind")
    assert (claims["tenant_id"], claims["sub"], claims["role"]) == ("acme", "ada", "tenant_viewer")
    assert claims["scope"] == "scaimind:manage"
    assert claims["exp"] - claims["iat"] == 900

    # No jwt_secret: the gateway falls back to the data dir's embedded secret.
    settings = Settings(
        data_dir=data_dir, grpc_host="127.0.0.1", grpc_port=port, api_secret=API_SECRET
    )
    assert settings.jwt_secret is None
    async with running_gateway(settings) as client:
        r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {viewer}"})
        assert r.status_code == 200, r.text
        md = servicer.last("ListJobs").metadata
        assert (md["x-tenant-id"], md["x-user-id"]) == ("acme", "ada")
        # tenant_viewer + scope scaimind:manage may submit.
        r = await client.post(
            f"{PREFIX}/jobs", json=MINIMAL_SUBMIT, headers={"Authorization": f"Bearer {viewer}"}
        )
        assert r.status_code == 201, r.text
        # tenant_user without scope is authenticated but has no permission.
        r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {user}"})
        assert r.status_code == 403
    assert [c.rpc for c in servicer.calls] == ["ListJobs", "SubmitJob"]


def token_in_process(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> str:
    """The same command through `scaimind.cli.main`, without a process start."""
    assert main(["token", "--data-dir", str(data_dir), *args]) == 0
    return capsys.readouterr().out.strip()


async def test_token_from_another_data_dir_is_rejected(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, port = scripted
    foreign = token_in_process(capsys, tmp_path / "other", "--tenant", "acme", "--user", "ada")
    settings = Settings(
        data_dir=tmp_path / "data", grpc_host="127.0.0.1", grpc_port=port, api_secret=API_SECRET
    )
    async with running_gateway(settings) as client:
        r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {foreign}"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "AUTH_TOKEN_INVALID"
    assert servicer.calls == []


async def test_expired_cli_token_is_rejected(
    scripted: tuple[ScriptedCoordinator, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, port = scripted
    data_dir = tmp_path / "data"
    # The CLI no longer mints an already-expired token (ttl must be 1 s .. 30 days)...
    code = main(
        ["token", "--data-dir", str(data_dir), "--tenant", "a", "--user", "u", "--ttl", "-3600"]
    )
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--ttl must be" in captured.err
    # ...so the expired token is signed the same way through the library.
    token = mint_token(embedded_secret(data_dir), tenant_id="a", user_id="u", ttl_s=-3600)
    settings = Settings(
        data_dir=data_dir, grpc_host="127.0.0.1", grpc_port=port, api_secret=API_SECRET
    )
    async with running_gateway(settings) as client:
        r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_embedded_secret_is_created_once_under_concurrency(tmp_path: Path) -> None:
    # Concurrent first runs (serve and token started together) must agree on one secret.
    for attempt in range(20):
        data_dir = tmp_path / f"d{attempt}"
        barrier = threading.Barrier(4)
        seen: list[str] = []

        def first_run(
            dir_: Path = data_dir, barrier_: threading.Barrier = barrier, out: list[str] = seen
        ) -> None:
            barrier_.wait()
            out.append(embedded_secret(dir_))

        threads = [threading.Thread(target=first_run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(seen) == 4
        assert len(set(seen)) == 1
        assert seen[0]
        assert stat.S_IMODE((data_dir / "jwt-secret").stat().st_mode) == 0o600
        assert sorted(p.name for p in data_dir.iterdir()) == ["jwt-secret"]


@pytest.mark.parametrize("content", ["", "\n", "short"], ids=["empty", "newline", "short"])
async def test_unusable_secret_file_is_refused(
    scripted: tuple[ScriptedCoordinator, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
) -> None:
    # An empty HS256 key would accept tokens anyone can forge: refuse to start instead.
    _, port = scripted
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "jwt-secret").write_text(content)
    assert main(["token", "--data-dir", str(data_dir), "--tenant", "t", "--user", "u"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "jwt-secret" in captured.err
    settings = Settings(
        data_dir=data_dir, grpc_host="127.0.0.1", grpc_port=port, api_secret=API_SECRET
    )
    with pytest.raises(SettingsError, match="jwt-secret"):
        async with running_gateway(settings):
            pass


async def test_token_honours_a_configured_issuer(
    scripted: tuple[ScriptedCoordinator, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servicer, port = scripted
    data_dir = tmp_path / "data"
    monkeypatch.setenv("SCAIMIND_JWT_ISSUER", "https://id.example")
    token = token_in_process(capsys, data_dir, "--tenant", "acme", "--user", "ada")
    settings = Settings(
        data_dir=data_dir, grpc_host="127.0.0.1", grpc_port=port, api_secret=API_SECRET
    )
    assert settings.jwt_issuer == "https://id.example"
    async with running_gateway(settings) as client:
        r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert servicer.last("ListJobs").metadata["x-tenant-id"] == "acme"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SCAIMIND_JWT_JWKS_URL", "https://id.example/jwks.json"),
        ("SCAIMIND_JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----"),
    ],
)
def test_token_refuses_when_the_gateway_verifies_asymmetric_tokens(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    code = main(["token", "--data-dir", str(tmp_path / "d"), "--tenant", "t", "--user", "u"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert variable in captured.err


async def test_token_puts_the_claims_where_the_server_reads_them(
    scripted: tuple[ScriptedCoordinator, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servicer, port = scripted
    monkeypatch.setenv("SCAIMIND_JWT_TENANT_CLAIM", "https://scaigrid.example/tenant")
    monkeypatch.setenv("SCAIMIND_JWT_ROLE_CLAIM", "realm_access.roles")
    data_dir = tmp_path / "data"
    token = token_in_process(
        capsys, data_dir, "--tenant", "acme", "--user", "ada", "--scope", "scaimind:evaluate"
    )
    claims = jwt.decode(token, embedded_secret(data_dir), algorithms=["HS256"], audience="scaimind")
    assert claims["https://scaigrid.example/tenant"] == "acme"
    assert claims["realm_access"] == {"roles": "tenant_admin"}
    assert claims["scope"] == "scaimind:evaluate"
    assert "tenant_id" not in claims
    assert "role" not in claims
    settings = Settings(
        data_dir=data_dir, grpc_host="127.0.0.1", grpc_port=port, api_secret=API_SECRET
    )
    async with running_gateway(settings) as client:
        r = await client.get(f"{PREFIX}/jobs", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert servicer.last("ListJobs").metadata["x-tenant-id"] == "acme"
