"""The `scaimind` command line: serve, coordinator, migrate, token, apikey and operator commands."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from scaimind import __version__
from scaimind.settings import Settings, SettingsError, load_settings

Handler = Callable[[argparse.Namespace], int]


def settings_from_args(args: argparse.Namespace, **overrides: object) -> Settings:
    """Settings from the environment, with --data-dir and the given non-None overrides."""
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway (with the embedded reference coordinator unless GRPC_HOST is set)."""
    import uvicorn

    from scaimind.app import API_PREFIX, create_app
    from scaimind.private_files import private_dir

    settings = settings_from_args(args)
    private_dir(settings.data_dir)
    app = create_app(settings)
    print(
        f"scaimind {__version__}: http://{args.host}:{args.port}{API_PREFIX} "
        f"(data dir {settings.data_dir}; coordinator "
        f"{'embedded' if settings.embedded_coordinator else settings.grpc_target})",
        file=sys.stderr,
    )
    # uvicorn turns SIGINT/SIGTERM into a lifespan shutdown, which stops the embedded
    # coordinator cleanly (running jobs checkpoint and are re-queued). Afterwards it re-raises
    # the signal under the handler it found, which by default would end the process with
    # status 143 although the shutdown was clean; this one exits 0 (and also covers a SIGTERM
    # that arrives before uvicorn installed its own handler, when nothing is running yet).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # Thousands of open SSE streams allocate many short-lived objects; with CPython's default
    # thresholds full collections walk them often and stall every request on the loop (the tail
    # of GET latency in bench/streams.py). Start-up objects are frozen out of collection and
    # collections run less often. Only here: a host app mounting the module keeps its own GC.
    gc.freeze()
    gc.set_threshold(50_000, 10, 100)
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level.lower())
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_coordinator(args: argparse.Namespace) -> int:
    """Run the reference coordinator as a standalone gRPC server."""
    from scaimind.coordinator.server import serve_forever

    settings = settings_from_args(args)
    secret = settings.api_secret.get_secret_value() if settings.api_secret else None
    config = settings.coordinator_config(
        data_dir=args.data_dir or settings.data_dir / "coordinator",
        host=args.host,
        port=args.port,
        api_secret=secret,
        allow_unauthenticated=args.allow_unauthenticated,
        inventory_path=args.inventory,
        # SCAIMIND_TOKEN_SIGNING_KEY: the gateway's key for x-scaidrive-token (scaidrive://).
        downstream_token_key=(
            settings.token_signing_key.get_secret_value() if settings.token_signing_key else None
        ),
    )
    code: int = serve_forever(config)
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the cache database to the newest schema."""
    from scaimind.cache.migrate import upgrade

    settings = settings_from_args(args, database_url=args.database_url)
    asyncio.run(upgrade(settings.effective_database_url))
    print(f"cache database is at the newest schema: {settings.effective_database_url}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print a bearer token that `scaimind serve` on the same data dir accepts."""
    from scaimind.auth import EMBEDDED_AUDIENCE, EMBEDDED_ISSUER, hs256_secret, mint_token

    settings = settings_from_args(args)
    if settings.jwt_public_key or settings.jwt_jwks_url:
        # The gateway then verifies RS256/ES256 only; an HS256 token would always be a 401.
        raise SettingsError(
            "SCAIMIND_JWT_PUBLIC_KEY or SCAIMIND_JWT_JWKS_URL is set: the gateway accepts only "
            "tokens from that identity provider, not tokens minted here"
        )
    print(
        mint_token(
            hs256_secret(settings),
            tenant_id=args.tenant,
            user_id=args.user,
            role=args.role,
            scope=args.scope,
            ttl_s=args.ttl,
            audience=settings.jwt_audience or EMBEDDED_AUDIENCE,
            # The gateway checks the issuer whenever one is configured.
            issuer=settings.jwt_issuer or EMBEDDED_ISSUER,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="scaimind", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scaimind {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir", type=Path, default=None, help="data directory (SCAIMIND_DATA_DIR)"
        )

    p = sub.add_parser("serve", help="run the gateway with the embedded coordinator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    data_dir(p)
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("coordinator", help="run the reference coordinator (gRPC)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--inventory", type=Path, default=None, help="JSON node inventory")
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="run without SCAIMIND_API_SECRET (loopback only)",
    )
    data_dir(p)
    p.set_defaults(handler=cmd_coordinator)

    p = sub.add_parser("migrate", help="upgrade the cache database schema")
    p.add_argument("--database-url", default=None, help="overrides SCAIMIND_DATABASE_URL")
    data_dir(p)
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("token", help="mint a bearer token for the embedded mode")
    data_dir(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--role", default="tenant_admin")
    p.add_argument("--scope", default="", help="space-separated extra permission keys")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    p.set_defaults(handler=cmd_token)

    # Operator commands (logs, metrics, ...) and API keys live in their own modules.
    from scaimind import apikey_cli, operator_cli

    operator_cli.register(sub)
    apikey_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scaimind` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except SettingsError as exc:
        print(f"scaimind: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
