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
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

if TYPE_CHECKING:
    from scaimind.cli.api import ApiClient

DEFAULT_URL: Final = "http://127.0.0.1:8080"
CONNECTION: Final = "Connection"
# Set by `scaimind token`: lets a rejected token name the data dir it was minted for.
DATA_DIR_CLAIM: Final = "scaimind_data_dir"


class ExitCode(IntEnum):
    """The exit status of every command (documented in the README)."""

    OK = 0
    # The server (or, for local commands, the database) answered with an error.
    API_ERROR = 1
    # Bad options or input: nothing was sent.
    USAGE = 2
    # No answer at all: nothing listens at the URL, the host is unknown, the connection broke.
    CONNECTION = 3
    # The job ended FAILED or CANCELLED (jobs wait, logs, metrics --watch), or the data is
    # invalid (data validate).
    UNSUCCESSFUL = 4
    INTERRUPTED = 130


class CliError(Exception):
    """A failure to report on one line (`scaimind: <message>`) with its exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.API_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


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


def note(text: str) -> None:
    """A status message on stderr, so stdout stays data only."""
    print(f"scaimind: {text}", file=sys.stderr, flush=True)
