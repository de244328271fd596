"""Gateway settings: environment variables with the SCAIMIND_ prefix (README "Configuration")."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scaimind.contract.limits import DEFAULT_MAX_BODY_BYTES

if TYPE_CHECKING:
    from scaimind.coordinator.config import CoordinatorConfig

ENV_PREFIX = "SCAIMIND_"
# The module's permission keys (gateway.security.auth names them; settings cannot import it).
PermissionKey = Literal[
    "scaimind:view", "scaimind:manage", "scaimind:cluster_admin", "scaimind:evaluate"
]


# A claim name or dotted path: no whitespace, no empty parts ("a..b", ".a", "a.").
ClaimName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^.\s]+(\.[^.\s]+)*$")]


class SettingsError(Exception):
    """Settings are invalid; the message names every offending environment variable."""


class Settings(BaseSettings):
    """Everything the gateway (and the embedded coordinator) is configured with."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Where the embedded mode keeps its database, secrets and the coordinator's state.
    data_dir: Path = Path.home() / ".scaimind"

    # Coordinator. An empty host means "run the reference coordinator embedded" (serve only).
    grpc_host: str = ""
    grpc_port: Annotated[int, Field(ge=1, le=65535)] = 50051
    grpc_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    tls_enabled: bool = False
    tls_ca_path: Path | None = None
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    api_secret: SecretStr | None = None

    # Job cache. None: a SQLite file in the data directory.
    database_url: str | None = None
    cache_sync_timeout_s: Annotated[float, Field(gt=0)] = 2.0

    # Bearer token verification. HS256 with jwt_secret (embedded/dev), or RS256/ES256 with a
    # PEM public key (inline or a path) or a JWKS URL.
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    jwt_issuer: str | None = None
    jwt_audience: str | None = "scaimind"
    jwt_leeway_s: Annotated[int, Field(ge=0, le=300)] = 30
    # Where the tenant, role(s) and scope are in a token: a top-level claim of that exact name,
    # else a dotted path (Keycloak: realm_access.roles). See scaimind.gateway.security.claims.
    jwt_tenant_claim: ClaimName = "tenant_id"
    jwt_role_claim: ClaimName = "role"
    jwt_scope_claim: ClaimName = "scope"

    # Downstream token exchange (RFC 8693) or local signing in the embedded mode.
    token_exchange_url: str | None = None
    token_exchange_client_id: str | None = None
    token_exchange_client_secret: SecretStr | None = None
    token_exchange_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    token_signing_key: SecretStr | None = None

    # Server-Sent Events.
    sse_heartbeat_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    # A client whose socket stays full this long (it stopped reading) loses its stream.
    sse_send_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # A stream open this long ends with a retryable error and the client resumes where it was:
    # a bound on what one stream holds when its client's disconnect goes unseen (a pipelined
    # request on the same connection hides it from the app). Kubernetes ends watches likewise.
    sse_max_stream_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3600.0
    stream_cap_per_tenant: Annotated[int, Field(ge=1)] = 1000
    # `scaimind serve`: on SIGTERM, connections still open after this long are closed (streams
    # end at once with a retryable error; this cuts a client that reads nothing).
    shutdown_timeout_s: Annotated[int, Field(ge=1, le=3600)] = 10

    # Job confinement (the reference coordinator, embedded or standalone; see README "Security
    # model"). Local paths a tenant may name: ":"-separated dirs, `{tenant}` = the caller's id.
    local_data_roots: str = ""
    bwrap: str = "bwrap"
    allow_unsandboxed_jobs: bool = False
    sandbox_network: bool = False
    sandbox_uid: Annotated[int, Field(ge=1)] = 65534
    sandbox_gid: Annotated[int, Field(ge=1)] = 65534
    job_memory_mb: Annotated[int, Field(ge=0)] = 4096
    job_cpu_seconds: Annotated[int, Field(ge=0)] = 86_400
    job_file_size_mb: Annotated[int, Field(ge=0)] = 16_384
    job_open_files: Annotated[int, Field(ge=0)] = 1024
    job_processes: Annotated[int, Field(ge=0)] = 256
    job_tmp_mb: Annotated[int, Field(ge=0)] = 1024
    job_max_runtime_s: Annotated[int, Field(ge=0)] = 86_400
    validate_max_bytes: Annotated[int, Field(ge=1)] = 64 * 1024 * 1024

    # Where jobs run (README "Running jobs on Ray"): child processes of the coordinator, or
    # Ray jobs on the cluster whose job server is RAY_ADDRESS. SHARED_ROOT: storage every node
    # sees at the same path (default: the coordinator's data dir).
    executor: Literal["local", "ray"] = "local"
    ray_address: str = ""
    ray_python: str = ""
    ray_auth_token: SecretStr | None = None
    ray_request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    ray_pending_timeout_s: Annotated[float, Field(ge=0)] = 60.0
    shared_root: Path | None = None

    # Role -> permission keys (JSON), replacing the default grants of the roles it names.
    role_permissions: dict[Annotated[str, Field(min_length=1)], list[PermissionKey]] | None = None

    # Request bodies larger than this are refused (413) before they are read. At most 4 MiB:
    # gRPC's default message limit, beyond which a coordinator answers RESOURCE_EXHAUSTED.
    max_body_bytes: Annotated[int, Field(ge=1024, le=4 * 1024 * 1024)] = DEFAULT_MAX_BODY_BYTES

    # uvicorn's names (it fails with a bare KeyError on anything else).
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "TRACE"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Jobs run in their own directories, so a relative data dir would mean another place.
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _check_executor(self) -> Self:
        problems: list[str] = []
        if self.executor == "ray" and not self.ray_address:
            problems.append(
                f"{ENV_PREFIX}RAY_ADDRESS: required with {ENV_PREFIX}EXECUTOR=ray (the Ray job "
                "server, for example http://127.0.0.1:8265)"
            )
        if self.ray_address and not self.ray_address.startswith(("http://", "https://")):
            problems.append(
                f"{ENV_PREFIX}RAY_ADDRESS: not an http(s) URL of the Ray job server: "
                f"{self.ray_address!r}"
            )
        if self.shared_root is not None and not self.shared_root.is_absolute():
            problems.append(f"{ENV_PREFIX}SHARED_ROOT: {self.shared_root} is not an absolute path")
        if self.ray_python and not Path(self.ray_python).is_absolute():
            problems.append(
                f"{ENV_PREFIX}RAY_PYTHON: {self.ray_python!r} is not an absolute path of the "
                "interpreter on the Ray nodes"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _check_tls_and_keys(self) -> Self:
        problems: list[str] = []
        for root in self.data_roots:
            if not root.startswith("/"):
                problems.append(
                    f"{ENV_PREFIX}LOCAL_DATA_ROOTS: {root!r} is not an absolute path "
                    "(entries are separated by ':')"
                )
        if self.tls_enabled:
            for name in ("tls_ca_path", "tls_cert_path", "tls_key_path"):
                path: Path | None = getattr(self, name)
                if path is not None and not path.is_file():
                    problems.append(f"{ENV_PREFIX}{name.upper()}: file not found: {path}")
            if (self.tls_cert_path is None) != (self.tls_key_path is None):
                problems.append(
                    f"{ENV_PREFIX}TLS_CERT_PATH and {ENV_PREFIX}TLS_KEY_PATH must be set together"
                )
        key = self.jwt_public_key
        if key and not key.lstrip().startswith("-----BEGIN") and not Path(key).is_file():
            problems.append(
                f"{ENV_PREFIX}JWT_PUBLIC_KEY: neither a PEM key nor an existing file: {key}"
            )
        jwks = self.jwt_jwks_url
        if jwks and not jwks.startswith(("http://", "https://")):
            # Otherwise every request would fail with 401 and nothing would say why.
            problems.append(f"{ENV_PREFIX}JWT_JWKS_URL: not an http(s) URL: {jwks!r}")
        if self.grpc_host:
            try:
                ipaddress.ip_address(self.grpc_host)
            except ValueError:
                if any(c in self.grpc_host for c in " /:"):
                    problems.append(f"{ENV_PREFIX}GRPC_HOST: not a host name: {self.grpc_host!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def data_roots(self) -> tuple[str, ...]:
        """LOCAL_DATA_ROOTS as a list (empty entries dropped)."""
        return tuple(r.strip() for r in self.local_data_roots.split(":") if r.strip())

    def coordinator_config(self, **fields: Any) -> CoordinatorConfig:
        """The reference coordinator's configuration from these settings plus `fields`
        (data_dir, host, port, api_secret, ...): the one place both `serve` (embedded) and
        `scaimind coordinator` build it, so they read the same SCAIMIND_* variables."""
        from scaimind.coordinator.config import (
            CoordinatorConfig,
            JobLimits,
            RayConfig,
            SandboxConfig,
        )

        limits = JobLimits(
            memory_mb=self.job_memory_mb,
            cpu_seconds=self.job_cpu_seconds,
            file_size_mb=self.job_file_size_mb,
            open_files=self.job_open_files,
            processes=self.job_processes,
        )
        sandbox = SandboxConfig(
            bwrap=self.bwrap,
            allow_unsandboxed=self.allow_unsandboxed_jobs,
            network=self.sandbox_network,
            uid=self.sandbox_uid,
            gid=self.sandbox_gid,
            tmp_mb=self.job_tmp_mb,
            limits=limits,
        )
        ray = None
        if self.executor == "ray":
            ray = RayConfig(
                address=self.ray_address,
                python=self.ray_python,
                auth_token=self.ray_auth_token.get_secret_value() if self.ray_auth_token else "",
                request_timeout_seconds=self.ray_request_timeout_s,
                pending_timeout_seconds=self.ray_pending_timeout_s,
            )
        return CoordinatorConfig(
            local_data_roots=self.data_roots,
            sandbox=sandbox,
            max_runtime_seconds=self.job_max_runtime_s,
            validate_max_bytes=self.validate_max_bytes,
            executor=self.executor,
            ray=ray,
            shared_root=self.shared_root,
            **fields,
        )

    @property
    def embedded_coordinator(self) -> bool:
        """True when serve should start the reference coordinator in-process."""
        return not self.grpc_host

    @property
    def effective_database_url(self) -> str:
        """The cache database URL, defaulting to SQLite in the data directory."""
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'scaimind.db'}"

    @property
    def grpc_target(self) -> str:
        """host:port of the coordinator (an IPv6 address in brackets)."""
        host = self.grpc_host or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.grpc_port}"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            name = f"{ENV_PREFIX}{loc.upper()}" if loc else "settings"
            msg = err["msg"].removeprefix("Value error, ")
            messages.append(msg if not loc else f"{name}: {msg}")
        raise SettingsError("invalid settings: " + "; ".join(messages)) from None
