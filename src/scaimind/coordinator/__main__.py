"""`python -m scaimind.coordinator --data-dir DIR [--port P] [--inventory FILE]`.

The shared secret comes from SCAIMIND_API_SECRET. The settings are read here, at the entry point,
so the coordinator's own modules never import the gateway's settings.
"""

import os
import sys

# Job processes never use gRPC: no fork handlers (and no "skipping fork() handlers" log line).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import argparse
from pathlib import Path

from pydantic import ValidationError

from scaimind.coordinator import server
from scaimind.coordinator.server import serve_forever
from scaimind.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    """The standalone coordinator, configured by the same SCAIMIND_* settings as the gateway."""
    parser = argparse.ArgumentParser(
        prog="python -m scaimind.coordinator",
        description=server.__doc__.splitlines()[0] if server.__doc__ else None,
    )
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--inventory", type=Path, default=None)
    parser.add_argument("--allow-unauthenticated", action="store_true")
    args = parser.parse_args(argv)
    try:
        # The same SCAIMIND_* settings as `scaimind coordinator` (roots, sandbox, limits).
        settings = load_settings()
        config = settings.coordinator_config(
            data_dir=args.data_dir,
            host=args.host,
            port=args.port,
            api_secret=settings.api_secret.get_secret_value() if settings.api_secret else None,
            allow_unauthenticated=args.allow_unauthenticated,
            inventory_path=args.inventory,
            downstream_token_key=(
                settings.token_signing_key.get_secret_value()
                if settings.token_signing_key
                else None
            ),
        )
    except SettingsError as e:
        print(f"scaimind coordinator: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        for error in e.errors():
            print(
                f"scaimind coordinator: {error['msg'].removeprefix('Value error, ')}",
                file=sys.stderr,
            )
        return 2
    return serve_forever(config)


if __name__ == "__main__":
    sys.exit(main())
