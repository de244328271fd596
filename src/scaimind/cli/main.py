"""The `scaimind` command: the root app, with every command and group wired here explicitly.

Exit status: 0 success, 1 the server (or database) answered with an error, 2 usage error,
3 the server could not be reached, 4 the job ended FAILED/CANCELLED or the data is invalid,
130 interrupted (see ExitCode).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from scaimind import __version__
from scaimind.cli import apikey, console, data, evaluations, jobs, local, monitor, nodes, queue
from scaimind.cli.base import CliError, ExitCode

RUN = "Run a server (this machine)"
USE = "Use a server (--url, --token)"


def _print_version(value: bool) -> None:
    if value:
        print(f"scaimind {__version__}")
        raise typer.Exit()


def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """ScaiMind: train models on a cluster without touching it.

    Remote commands take --url (SCAIMIND_URL) and --token (SCAIMIND_TOKEN); reads take --json.
    Exit status: 0 ok, 1 API error, 2 usage, 3 cannot reach the server, 4 job FAILED/CANCELLED
    or data invalid.
    """


def build() -> typer.Typer:
    """Every command of `scaimind`."""
    app = typer.Typer(
        name="scaimind",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain Click help: wrapped paragraphs, no Rich import before a command runs.
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root)
    app.command("serve", rich_help_panel=RUN)(local.serve)
    app.command("coordinator", rich_help_panel=RUN)(local.coordinator)
    app.command("migrate", rich_help_panel=RUN)(local.migrate)
    app.command("token", rich_help_panel=RUN)(local.token)
    app.add_typer(apikey.build(), name="apikey", rich_help_panel=RUN)
    app.add_typer(jobs.build(), name="jobs", rich_help_panel=USE)
    app.command("logs", rich_help_panel=USE)(monitor.logs)
    app.command("metrics", rich_help_panel=USE)(monitor.metrics)
    app.add_typer(evaluations.build(), name="eval", rich_help_panel=USE)
    app.add_typer(data.build(), name="data", rich_help_panel=USE)
    app.add_typer(nodes.build(), name="nodes", rich_help_panel=USE)
    app.command("queue", rich_help_panel=USE)(queue.queue)
    app.command("console", rich_help_panel=USE)(console.console)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status instead of exiting."""
    command = typer.main.get_command(build())
    try:
        # Standalone mode: Typer prints usage errors (status 2) and turns Ctrl-C into 130.
        command.main(
            args=list(argv) if argv is not None else None,
            prog_name="scaimind",
            standalone_mode=True,
        )
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return int(ExitCode.API_ERROR)
    except CliError as exc:
        print(f"scaimind: {exc.message}", file=sys.stderr)
        return int(exc.code)
    except Exception as exc:
        # Invalid settings are a usage error. The settings module is not imported for remote
        # commands (it costs ~0.1 s), and if it was never imported it raised nothing.
        settings = sys.modules.get("scaimind.settings")
        if settings is not None and isinstance(exc, settings.SettingsError):
            print(f"scaimind: {exc}", file=sys.stderr)
            return int(ExitCode.USAGE)
        raise
    return 0
