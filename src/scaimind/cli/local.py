"""Commands that act on this machine: serve, coordinator, migrate, token (and its minting)."""

from __future__ import annotations

import errno
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from scaimind import __version__
from scaimind.cli.base import DATA_DIR_CLAIM, CliError, ExitCode, note
from scaimind.cli.common import DatabaseUrlOption, DataDirOption
from scaimind.cli.process import load, quiet_grpc_fork, tune_gc

if TYPE_CHECKING:
    pass

# A token outliving a month is a credential to manage, not a development convenience: use an
# API key (`scaimind apikey create`) for that.
MAX_TOKEN_TTL_S: Final = 30 * 86_400


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", min=0, max=65535)] = 8080,
    data_dir: DataDirOption = None,
    workers: Annotated[
        int,
        typer.Option(
            help="gateway worker processes (the embedded coordinator runs once, shared)",
            min=1,
            max=64,
        ),
    ] = 1,
) -> None:
    """Run the gateway, with the embedded reference coordinator unless SCAIMIND_GRPC_HOST is set."""
    quiet_grpc_fork()
    import uvicorn

    from scaimind.contract.private_files import private_dir
    from scaimind.gateway.app import API_PREFIX, create_app

    settings = load(data_dir)
    # Bound before anything starts: a busy port is one line, not a started coordinator, a
    # banner that claims to serve and then uvicorn's bind error.
    sock = listen(host, port)
    port = sock.getsockname()[1]
    private_dir(settings.data_dir)
    coordinator = "embedded" if settings.embedded_coordinator else settings.grpc_target
    print(
        f"scaimind {__version__}: http://{host}:{port}{API_PREFIX} "
        f"(data dir {settings.data_dir}; coordinator {coordinator})",
        file=sys.stderr,
    )
    if workers > 1:
        from scaimind.cli.workers import serve_workers

        signal.signal(signal.SIGTERM, _exit_cleanly)
        serve_workers(settings, sock, host, port, workers)
        return
    app = create_app(settings)
    # uvicorn turns SIGINT/SIGTERM into a lifespan shutdown, which stops the embedded
    # coordinator cleanly (running jobs checkpoint and are re-queued). Afterwards it re-raises
    # the signal under the handler it found, which by default would end the process with
    # status 143 although the shutdown was clean; this one exits 0 (and also covers a SIGTERM
    # that arrives before uvicorn installed its own handler, when nothing is running yet).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    tune_gc()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    uvicorn.Server(config).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (uvicorn listens on it), or CliError naming the cause."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " — is another `scaimind serve` running there? Stop it or choose another --port"
        raise CliError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}", ExitCode.USAGE
        ) from None
    return sock


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def coordinator(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="gRPC port", min=0, max=65535)] = 50051,
    inventory: Annotated[
        Path | None,
        typer.Option(help="JSON node inventory", show_default="one node with this machine's CPUs"),
    ] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated", help="run without SCAIMIND_API_SECRET (loopback only)"
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="coordinator state", show_default="$SCAIMIND_DATA_DIR/coordinator"),
    ] = None,
) -> None:
    """Run the reference coordinator as a standalone gRPC server."""
    quiet_grpc_fork()
    from pydantic import ValidationError

    from scaimind.coordinator.server import serve_forever

    settings = load(data_dir)
    secret = settings.api_secret.get_secret_value() if settings.api_secret else None
    try:
        config = settings.coordinator_config(
            data_dir=data_dir or settings.data_dir / "coordinator",
            host=host,
            port=port,
            api_secret=secret,
            allow_unauthenticated=allow_unauthenticated,
            inventory_path=inventory,
            # SCAIMIND_TOKEN_SIGNING_KEY: the gateway's key for x-scaidrive-token (scaidrive://).
            downstream_token_key=(
                settings.token_signing_key.get_secret_value()
                if settings.token_signing_key
                else None
            ),
        )
    except ValidationError as exc:
        # A combination the coordinator refuses (no secret, an inventory file with Ray…).
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise CliError(reasons, ExitCode.USAGE) from None
    code: int = serve_forever(config)
    if code:
        raise typer.Exit(code)


def migrate(database_url: DatabaseUrlOption = None, data_dir: DataDirOption = None) -> None:
    """Upgrade the cache database to the newest schema."""
    import asyncio

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from scaimind.gateway.db.migrate import upgrade

    url = load(data_dir, database_url=database_url).effective_database_url
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError as exc:
        raise CliError(f"not a database URL: {exc}", ExitCode.USAGE) from None
    try:
        asyncio.run(upgrade(url))
    except (SQLAlchemyError, OSError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        raise CliError(
            f"cannot migrate {shown}: {type(exc).__name__}: {reason} — check --database-url "
            "(or SCAIMIND_DATABASE_URL), that the database server runs and that the database exists"
        ) from None
    print(f"cache database is at the newest schema: {shown}")


RoleOption = Annotated[
    str,
    typer.Option(help="super_admin, partner_admin, tenant_admin, tenant_viewer or tenant_user"),
]
ScopeOption = Annotated[
    str,
    typer.Option(
        help="extra permission keys, space-separated: scaimind:view, scaimind:manage, "
        "scaimind:cluster_admin, scaimind:evaluate"
    ),
]
TtlOption = Annotated[int, typer.Option(help="lifetime in seconds (at most 30 days)")]


def token(
    tenant: Annotated[str, typer.Option(help="tenant id (claim tenant_id)")],
    user: Annotated[str, typer.Option(help="user id (claim sub)")],
    role: RoleOption = "tenant_admin",
    scope: ScopeOption = "",
    ttl: TtlOption = 3600,
    data_dir: DataDirOption = None,
) -> None:
    """Print a bearer token for a `scaimind serve` on the SAME data dir.

    The token is signed with the data dir's secret (DATA_DIR/jwt-secret, or SCAIMIND_JWT_SECRET
    when set), so a server started with another --data-dir rejects it ("signature does not
    verify"): pass the server's --data-dir here. Remote commands name the data dir a rejected
    token was minted for.
    """
    print(mint_local_token(tenant, user, role, scope, ttl, data_dir))


def mint_local_token(
    tenant: str, user: str, role: str, scope: str, ttl: int, data_dir: Path | None
) -> str:
    """A token as `scaimind token` mints it (validated; a note on stderr says who signed it)."""
    from scaimind.contract.identity import validate_identity
    from scaimind.gateway.security.auth import (
        ALL_PERMISSIONS,
        EMBEDDED_AUDIENCE,
        EMBEDDED_ISSUER,
        ROLE_PERMISSIONS,
        claim_names,
        hs256_secret,
        mint_token,
    )
    from scaimind.settings import SettingsError

    try:
        validate_identity(tenant, "--tenant")
        validate_identity(user, "--user")
    except ValueError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    if role not in ROLE_PERMISSIONS:
        raise CliError(
            f"--role {role!r} is not a role; known: {', '.join(ROLE_PERMISSIONS)}", ExitCode.USAGE
        )
    unknown = [key for key in scope.split() if key not in ALL_PERMISSIONS]
    if unknown:
        raise CliError(
            f"--scope: unknown permission key(s) {', '.join(unknown)}; known: "
            f"{', '.join(ALL_PERMISSIONS)}",
            ExitCode.USAGE,
        )
    if not 0 < ttl <= MAX_TOKEN_TTL_S:
        raise CliError(
            f"--ttl must be 1-{MAX_TOKEN_TTL_S} seconds (30 days), not {ttl}; "
            "use `scaimind apikey create` for a longer-lived credential",
            ExitCode.USAGE,
        )
    settings = load(data_dir)
    if settings.jwt_public_key or settings.jwt_jwks_url:
        # The gateway then verifies RS256/ES256 only; an HS256 token would always be a 401.
        raise SettingsError(
            "SCAIMIND_JWT_PUBLIC_KEY or SCAIMIND_JWT_JWKS_URL is set: the gateway accepts only "
            "tokens from that identity provider, not tokens minted here"
        )
    signed_with_data_dir = settings.jwt_secret is None
    data_dir_path = settings.data_dir.resolve()
    minted = mint_token(
        hs256_secret(settings),
        tenant_id=tenant,
        user_id=user,
        role=role,
        scope=" ".join(scope.split()),
        ttl_s=ttl,
        audience=settings.jwt_audience or EMBEDDED_AUDIENCE,
        # The gateway checks the issuer whenever one is configured.
        issuer=settings.jwt_issuer or EMBEDDED_ISSUER,
        extra_claims={DATA_DIR_CLAIM: str(data_dir_path)} if signed_with_data_dir else None,
        # Where this server reads them (SCAIMIND_JWT_*_CLAIM).
        names=claim_names(settings),
    )
    signer = f"data dir {data_dir_path}" if signed_with_data_dir else "SCAIMIND_JWT_SECRET"
    note(
        f"token for tenant {tenant}, user {user} ({role}), valid {ttl} s; signed with the secret "
        f"of {signer}: only a server using that secret accepts it"
    )
    return minted
