"""The `scaimind` command line (Typer + Rich); the console script runs `scaimind.cli.main:main`.

Importing this package loads nothing else, so the helpers in it (e.g. `scaimind.cli.sse`)
stay cheap to import.
"""
