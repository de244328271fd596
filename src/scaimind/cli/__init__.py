"""The `scaimind` command line (Typer + Rich). `main` is the console script's entry point.

Importing this package loads nothing else, so the helpers in it (e.g. `scaimind.cli.sse`)
stay cheap to import; `main` builds the app on first use.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run `scaimind ARGV` (sys.argv by default); returns the exit status."""
    from scaimind.cli.main import main as run

    return run(argv)
