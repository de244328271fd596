"""Settings from SCAIMIND_ variables: invalid values fail at start-up naming the variable (§7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from scaimind.settings import Settings, SettingsError, load_settings
from scaimind.v1 import coordinator_pb2_grpc
from tests.conftest import auth, settings_for
from tests.gateway.conftest import PREFIX, ScriptedCoordinator, running_gateway


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SCAIMIND_ variable of the outer environment leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("SCAIMIND_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SCAIMIND_DATA_DIR", str(tmp_path / "data"))


BAD_ENV: dict[str, tuple[dict[str, str], str]] = {
    "port_not_int": ({"SCAIMIND_GRPC_PORT": "abc"}, "SCAIMIND_GRPC_PORT"),
    "port_too_big": ({"SCAIMIND_GRPC_PORT": "70000"}, "SCAIMIND_GRPC_PORT"),
    "port_zero": ({"SCAIMIND_GRPC_PORT": "0"}, "SCAIMIND_GRPC_PORT"),
    "timeout_negative": ({"SCAIMIND_GRPC_TIMEOUT_S": "-1"}, "SCAIMIND_GRPC_TIMEOUT_S"),
    "timeout_zero": ({"SCAIMIND_GRPC_TIMEOUT_S": "0"}, "SCAIMIND_GRPC_TIMEOUT_S"),
    "timeout_text": ({"SCAIMIND_GRPC_TIMEOUT_S": "ten"}, "SCAIMIND_GRPC_TIMEOUT_S"),
    "tls_flag": ({"SCAIMIND_TLS_ENABLED": "maybe"}, "SCAIMIND_TLS_ENABLED"),
    "tls_ca_missing": (
        {"SCAIMIND_TLS_ENABLED": "true", "SCAIMIND_TLS_CA_PATH": "/nonexistent/ca.pem"},
        "SCAIMIND_TLS_CA_PATH",
    ),
    "tls_cert_without_key": (
        {"SCAIMIND_TLS_ENABLED": "1", "SCAIMIND_TLS_CERT_PATH": "{existing}"},
        "SCAIMIND_TLS_KEY_PATH",
    ),
    "grpc_host": ({"SCAIMIND_GRPC_HOST": "http://coordinator:50051"}, "SCAIMIND_GRPC_HOST"),
    "jwt_public_key": (
        {"SCAIMIND_JWT_PUBLIC_KEY": "/nonexistent/key.pem"},
        "SCAIMIND_JWT_PUBLIC_KEY",
    ),
    "jwks_url": ({"SCAIMIND_JWT_JWKS_URL": "id.example/jwks"}, "SCAIMIND_JWT_JWKS_URL"),
    "leeway": ({"SCAIMIND_JWT_LEEWAY_S": "-5"}, "SCAIMIND_JWT_LEEWAY_S"),
    "tenant_claim_empty": ({"SCAIMIND_JWT_TENANT_CLAIM": ""}, "SCAIMIND_JWT_TENANT_CLAIM"),
    "role_claim_empty_part": (
        {"SCAIMIND_JWT_ROLE_CLAIM": "realm_access..roles"},
        "SCAIMIND_JWT_ROLE_CLAIM",
    ),
    "scope_claim_space": ({"SCAIMIND_JWT_SCOPE_CLAIM": "my scope"}, "SCAIMIND_JWT_SCOPE_CLAIM"),
    "heartbeat": ({"SCAIMIND_SSE_HEARTBEAT_S": "0"}, "SCAIMIND_SSE_HEARTBEAT_S"),
    "stream_cap": ({"SCAIMIND_STREAM_CAP_PER_TENANT": "0"}, "SCAIMIND_STREAM_CAP_PER_TENANT"),
    "log_level": ({"SCAIMIND_LOG_LEVEL": "LOUD"}, "SCAIMIND_LOG_LEVEL"),
    "max_body": ({"SCAIMIND_MAX_BODY_BYTES": "10"}, "SCAIMIND_MAX_BODY_BYTES"),
    "max_body_over_grpc": ({"SCAIMIND_MAX_BODY_BYTES": "8388608"}, "SCAIMIND_MAX_BODY_BYTES"),
    "role_unknown_key": (
        {"SCAIMIND_ROLE_PERMISSIONS": '{"tenant_admin": ["scaimind:viw"]}'},
        "SCAIMIND_ROLE_PERMISSIONS",
    ),
    "role_not_json": ({"SCAIMIND_ROLE_PERMISSIONS": "{tenant_admin"}, "SCAIMIND_ROLE_PERMISSIONS"),
    "role_not_a_list": (
        {"SCAIMIND_ROLE_PERMISSIONS": '{"tenant_admin": "scaimind:view"}'},
        "SCAIMIND_ROLE_PERMISSIONS",
    ),
}


def _resolve(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    existing = tmp_path / "exists.pem"
    existing.write_text("x")
    return {k: v.replace("{existing}", str(existing)) for k, v in env.items()}


@pytest.mark.parametrize(("env", "variable"), BAD_ENV.values(), ids=BAD_ENV.keys())
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    for name, value in _resolve(env, tmp_path).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_every_problem_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAIMIND_GRPC_PORT", "abc")
    monkeypatch.setenv("SCAIMIND_GRPC_TIMEOUT_S", "-1")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "SCAIMIND_GRPC_PORT" in str(info.value)
    assert "SCAIMIND_GRPC_TIMEOUT_S" in str(info.value)


def test_secrets_are_not_in_the_error_or_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAIMIND_API_SECRET", "s3cr3t-value")
    monkeypatch.setenv("SCAIMIND_JWT_SECRET", "jwt-s3cr3t-value")
    settings = load_settings()
    assert "s3cr3t" not in repr(settings)
    monkeypatch.setenv("SCAIMIND_GRPC_PORT", "abc")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "s3cr3t" not in str(info.value)


def test_valid_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("SCAIMIND_GRPC_HOST", "coordinator.internal")
    monkeypatch.setenv("SCAIMIND_GRPC_PORT", "6000")
    monkeypatch.setenv("SCAIMIND_GRPC_TIMEOUT_S", "2.5")
    monkeypatch.setenv("SCAIMIND_TLS_ENABLED", "true")
    monkeypatch.setenv("SCAIMIND_TLS_CA_PATH", str(ca))
    monkeypatch.setenv("SCAIMIND_API_SECRET", "shared")
    monkeypatch.setenv("SCAIMIND_LOG_LEVEL", "debug")
    s = load_settings()
    assert s.grpc_target == "coordinator.internal:6000"
    assert s.grpc_timeout_s == 2.5
    assert s.tls_enabled
    assert s.tls_ca_path == ca
    assert s.api_secret is not None
    assert s.api_secret.get_secret_value() == "shared"
    assert s.log_level == "DEBUG"
    assert not s.embedded_coordinator


def test_defaults(tmp_path: Path) -> None:
    s = load_settings()
    assert s.data_dir == tmp_path / "data"
    assert s.grpc_timeout_s == 10.0
    assert s.sse_heartbeat_s == 15.0
    assert s.stream_cap_per_tenant == 1000
    assert s.embedded_coordinator
    assert s.effective_database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'scaimind.db'}"
    assert isinstance(s, Settings)


def _scaimind_command() -> list[str]:
    script = Path(sys.executable).parent / "scaimind"
    return [str(script)] if script.exists() else [sys.executable, "-m", "scaimind.cli"]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SCAIMIND_GRPC_PORT": "abc"}, "SCAIMIND_GRPC_PORT"),
        (
            {"SCAIMIND_TLS_ENABLED": "true", "SCAIMIND_TLS_CA_PATH": "/nonexistent/ca.pem"},
            "SCAIMIND_TLS_CA_PATH",
        ),
    ],
    ids=["port", "tls_ca"],
)
def test_serve_exits_nonzero_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCAIMIND_")}
    proc = subprocess.run(
        [*_scaimind_command(), "serve", "--port", "0", "--data-dir", str(tmp_path / "d")],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert variable in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists()  # it failed before touching anything


def test_ipv6_target_is_bracketed() -> None:
    assert load_settings(grpc_host="::1", grpc_port=6000).grpc_target == "[::1]:6000"
    assert load_settings(grpc_host="10.0.0.5", grpc_port=6000).grpc_target == "10.0.0.5:6000"
    assert load_settings(grpc_port=6000).grpc_target == "127.0.0.1:6000"


async def test_gateway_reaches_a_coordinator_on_ipv6_loopback(tmp_path: Path) -> None:
    servicer = ScriptedCoordinator()  # type: ignore[abstract]
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("[::1]:0")
    await server.start()
    try:
        settings = settings_for(tmp_path, grpc_host="::1", grpc_port=port, grpc_timeout_s=2.0)
        async with running_gateway(settings) as client:
            r = await client.get(f"{PREFIX}/jobs", headers=auth())
        assert r.status_code == 200, r.text
        assert [c.rpc for c in servicer.calls] == ["ListJobs"]
    finally:
        await server.stop(None)
