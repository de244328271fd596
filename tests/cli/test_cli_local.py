"""Local commands (token, migrate), help and what the CLI imports; no server needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from scaimind.cli.main import main
from scaimind.contract.identity import validate_identity
from scaimind.gateway.security.auth import ALL_PERMISSIONS, ROLE_PERMISSIONS, embedded_secret
from tests.cli.conftest import scaimind
from tests.conftest import closed_port

HEAVY = ("fastapi", "grpc", "numpy", "sqlalchemy", "uvicorn", "scaimind.settings")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs must not pick up an outer SCAIMIND_* setting."""
    for name in [n for n in os.environ if n.startswith("SCAIMIND_")]:
        monkeypatch.delenv(name)


def token(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    """`scaimind token --data-dir D ARGS` in process: (status, stdout, stderr)."""
    code = main(["token", "--data-dir", str(data_dir), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--role", "admin"), "--role 'admin' is not a role; known: super_admin, partner_admin"),
        (("--role", ""), "--role '' is not a role"),
        (("--scope", "scaimind:view scaimind:bogus"), "unknown permission key(s) scaimind:bogus"),
        (("--ttl", "0"), "--ttl must be 1-2592000 seconds"),
        (("--ttl", "-5"), "--ttl must be 1-2592000 seconds"),
        (("--ttl", "2592001"), "--ttl must be 1-2592000 seconds"),
        (("--tenant", " acme"), "--tenant must not start or end with whitespace"),
        (("--tenant", ""), "--tenant must not be empty"),
        (("--user", "ada\n"), "--user must not start or end with whitespace"),
        (("--user", "a\x00b"), "--user must not contain control characters"),
        (("--user", "x" * 129), "--user must be at most 128 characters"),
    ],
)
def test_token_refuses_what_would_be_useless_or_unsafe(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    defaults = {"--tenant": "acme", "--user": "ada"}
    for flag in args[::2]:
        defaults.pop(flag, None)
    rest = [item for pair in defaults.items() for item in pair]
    code, out, err = token(capsys, tmp_path / "data", *rest, *args)
    assert code == 2
    assert out == ""
    assert message in err
    assert len(err.splitlines()) == 1


def test_token_accepts_the_limits_and_names_its_data_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    scope = " ".join(ALL_PERMISSIONS)
    code, out, err = token(
        capsys, data_dir, "--tenant", "x" * 128, "--user", "Ada Lovelace", "--role", "tenant_user",
        "--scope", scope, "--ttl", "2592000",
    )  # fmt: skip
    assert code == 0, err
    claims = jwt.decode(
        out.strip(), embedded_secret(data_dir), algorithms=["HS256"], audience="scaimind"
    )
    assert (claims["tenant_id"], claims["sub"], claims["role"]) == (
        "x" * 128,
        "Ada Lovelace",
        "tenant_user",
    )
    assert claims["exp"] - claims["iat"] == 2_592_000
    assert claims["scaimind_data_dir"] == str(data_dir)
    assert f"signed with the secret of data dir {data_dir}" in err


def test_token_help_explains_the_data_dir_and_lists_every_role_and_permission() -> None:
    shown = scaimind("token", "--help")
    assert shown.code == 0
    text = " ".join(shown.out.split())
    assert "SAME data dir" in text
    assert "signature does not verify" in text
    for name in [*ROLE_PERMISSIONS, *ALL_PERMISSIONS]:
        assert name in text
    assert "[default: tenant_admin]" in text
    assert "[default: 3600]" in text


def test_validate_identity() -> None:
    assert validate_identity("tenant-a", "tenant") == "tenant-a"
    assert validate_identity("Zoë & Co", "tenant") == "Zoë & Co"
    for bad in ["", " a", "a ", "a\tb", "a\u0085b", "x" * 129]:
        with pytest.raises(ValueError, match=r"^user "):
            validate_identity(bad, "user")


def test_help_lists_every_command_and_shows_defaults() -> None:
    shown = scaimind("--help")
    assert shown.code == 0
    commands = ["serve", "coordinator", "migrate", "token", "apikey", "jobs", "logs", "metrics"]
    commands += ["eval", "data", "nodes", "queue", "console"]
    for name in commands:
        assert f"  {name} " in shown.out, name
    jobs = scaimind("jobs", "--help").out
    for name in ["submit", "list", "get", "cancel", "pause", "resume", "retry", "wait"]:
        assert f"  {name} " in jobs, name
    listing = " ".join(scaimind("jobs", "list", "--help").out.split())
    assert "[default: 20; 1<=x<=100]" in listing
    assert "[env var: SCAIMIND_URL; default: http://127.0.0.1:8080]" in listing
    assert "[env var: SCAIMIND_TOKEN]" in listing
    assert scaimind("--version").out.startswith("scaimind ")
    bare = scaimind()  # no command: the help, as a usage error
    assert bare.code == 2
    assert "Usage: scaimind [OPTIONS] COMMAND [ARGS]..." in bare.out + bare.err


def imported_after(*args: str) -> list[str]:
    """Heavy top-level modules imported by `scaimind ARGS`, run in a fresh interpreter."""
    probe = (
        "import sys\n"
        "from scaimind.cli.main import main\n"
        f"code = main({list(args)!r})\n"
        f"heavy = {HEAVY!r}\n"
        "top = {m if m in heavy else m.split('.')[0] for m in sys.modules}\n"
        "heavy = sorted(top & set(heavy))\n"
        "print(code, ' '.join(heavy), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    code, _, heavy = proc.stderr.splitlines()[-1].partition(" ")
    assert code in ("0", "3"), proc.stderr
    return heavy.split()


def test_help_and_remote_commands_import_no_server_code() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert imported_after("--help") == []
    assert imported_after("jobs", "list", "--help") == []
    assert imported_after("jobs", "list", "--url", url) == []
    assert imported_after("logs", "job_x", "--url", url) == []


def test_migrate_failure_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://postgres:s3cret@127.0.0.1:5432/scaimind_cli_missing_db"
    result = scaimind("migrate", "--database-url", url, "--data-dir", str(tmp_path))
    assert result.code == 1
    assert "s3cret" not in result.err
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith(
        "scaimind: cannot migrate postgresql+asyncpg://postgres:***@127.0.0.1:5432/"
    )
    assert 'database "scaimind_cli_missing_db" does not exist' in result.err
    unreachable = f"postgresql+asyncpg://u:pw@127.0.0.1:{closed_port()}/db"
    refused = scaimind("migrate", "--database-url", unreachable)
    assert refused.code == 1
    assert "Connect call failed" in refused.err
    assert "pw@" not in refused.err
    done = scaimind("migrate", "--database-url", f"sqlite+aiosqlite:///{tmp_path}/c.db")
    assert done.code == 0, done.err
    assert (
        done.out == f"cache database is at the newest schema: sqlite+aiosqlite:///{tmp_path}/c.db\n"
    )
