"""What every command shares: exit codes, the one error type, the connection options, output.

Kept free of heavy imports: `scaimind --help` and the remote commands load this module, and
neither may pull in FastAPI, gRPC, SQLAlchemy or NumPy. httpx and Rich load inside the
functions that need them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

if TYPE_CHECKING:
    from scaimind.cli.api import ApiClient

DEFAULT_URL: Final = "http://127.0.0.1:8080"
CONNECTION: Final = "Connection"
# --- options ----------------------------------------------------------------------------------

UrlOption = Annotated[
    str,
    typer.Option(
        "--url", envvar="SCAIMIND_URL", help="gateway base URL", rich_help_panel=CONNECTION
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="SCAIMIND_TOKEN",
        help="bearer token (JWT or sgk_ API key)",
        show_default=False,
        rich_help_panel=CONNECTION,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="print the API's `data` payload as JSON instead of a table")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="data directory",
        show_default="$SCAIMIND_DATA_DIR or ~/.scaimind",
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="database URL (postgresql+asyncpg://…, mysql+aiomysql://…, sqlite+aiosqlite://…)",
        show_default="$SCAIMIND_DATABASE_URL or the data dir's SQLite file",
    ),
]
IdempotencyKeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="send this Idempotency-Key, so running the command again creates nothing new",
        show_default="a new random key per run (internal retries reuse it)",
    ),
]


@contextmanager
def connect(url: str, token: str | None) -> Iterator[ApiClient]:
    """The HTTP client of the gateway at `url` (imported only by commands that talk to one)."""
    from scaimind.cli.api import ApiClient

    with ApiClient(url, token) as client:
        yield client


# --- output -----------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    """Machine-readable output: `data` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
