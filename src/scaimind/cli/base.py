"""What every command module shares and that needs nothing else: exit codes, CliError, note().

Kept apart from `common` (options, `connect`) so the HTTP client can use it without a cycle.
"""

from __future__ import annotations

import sys
from enum import IntEnum
from typing import Final

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


def note(text: str) -> None:
    """A status message on stderr, so stdout stays data only."""
    print(f"scaimind: {text}", file=sys.stderr, flush=True)
