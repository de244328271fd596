"""`scaimind logs` and `scaimind metrics`: a job's log and metrics, once or followed live."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from scaimind.cli.base import ExitCode, note
from scaimind.cli.common import DEFAULT_URL, JsonOption, TokenOption, UrlOption, connect, print_json

if TYPE_CHECKING:
    from scaimind.cli.sse import SSEEvent

# Statuses in which a followed job counts as failed (the command exits 4).
UNSUCCESSFUL: Final = frozenset({"FAILED", "CANCELLED"})
_LEVEL_STYLES: Final = {"DEBUG": "dim", "INFO": "green", "WARNING": "yellow", "ERROR": "bold red"}


class Level(StrEnum):
    """Minimum log level shown (ERROR always passes)."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"


JobArgument = Annotated[str, typer.Argument(metavar="JOB_ID", help="job id")]
MaxRetriesOption = Annotated[
    int,
    typer.Option(
        help="reconnect attempts in a row before giving up", min=0, rich_help_panel="Connection"
    ),
]


def ended(end: dict[str, Any], *, followed: bool) -> None:
    """Report how the job ended; exit 4 when it FAILED or was CANCELLED."""
    status = str(end.get("status", ""))
    note(f"job {end.get('job_id')} {'ended:' if followed else 'is'} {status}")
    if status in UNSUCCESSFUL:
        raise typer.Exit(ExitCode.UNSUCCESSFUL)


def logs(
    job_id: JobArgument,
    follow: Annotated[
        bool, typer.Option(help="keep following until the job ends, or print the tail and exit")
    ] = True,
    level: Annotated[Level, typer.Option(case_sensitive=False, help="minimum level")] = Level.INFO,
    tail: Annotated[int, typer.Option(help="lines of history first", min=0, max=10_000)] = 100,
    max_retries: MaxRetriesOption = 10,
    as_json: Annotated[
        bool, typer.Option("--json", help="print each log entry as one JSON object per line")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Print a job's log and follow it until the job ends (exit 4 if it FAILED or was CANCELLED).

    Lines are `time LEVEL message` (the level coloured on a terminal). A dropped connection is
    resumed with Last-Event-ID, so no line is lost or printed twice.
    """
    from rich.text import Text

    from scaimind.cli.render import colour, console

    out = console()
    coloured = colour(out)

    def show(event: SSEEvent) -> None:
        if event.event != "log":
            return
        if as_json:
            sys.stdout.write(event.data + "\n")
            sys.stdout.flush()
            return
        entry = event.json()
        name = str(entry.get("level") or "INFO")
        stamp, message = entry.get("timestamp") or "", str(entry.get("message", ""))
        if coloured:
            line = Text(f"{stamp} ")
            line.append(f"{name:<7}", style=_LEVEL_STYLES.get(name, ""))
            line.append(f" {message}")
            out.print(line, soft_wrap=True)
        else:
            sys.stdout.write(f"{stamp} {name:<7} {message}\n")
            sys.stdout.flush()

    params = {"follow": str(follow).lower(), "level": level.value, "tail": tail}
    with connect(url, token) as api:
        end = api.follow(f"/jobs/{job_id}/logs", params, show, max_retries=max_retries)
    ended(end, followed=follow)


def metrics(
    job_id: JobArgument,
    watch: Annotated[
        bool, typer.Option("--watch", help="follow the live metrics until the job ends")
    ] = False,
    interval: Annotated[
        int, typer.Option(help="seconds between live snapshots", min=1, max=60)
    ] = 5,
    max_retries: MaxRetriesOption = 10,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show a job's latest metrics, or follow them with --watch (exit 4 if the job fails).

    --watch shows step/total, percent and the estimated time left; --json prints the API's
    payload (with --watch one JSON snapshot per line).
    """
    with connect(url, token) as api:
        data = api.get(f"/jobs/{job_id}/metrics", {"max_points": 40})
        if not watch:
            if as_json:
                print_json(data)
            else:
                from scaimind.cli.metrics_view import show_metrics

                show_metrics(data)
            return
        from scaimind.cli.metrics_view import Watcher

        def total_steps() -> int:
            # Trainers report their total with their first steps: ask until it is known.
            return int(
                api.get(f"/jobs/{job_id}/metrics", {"max_points": 1}).get("total_steps") or 0
            )

        watcher = (
            None if as_json else Watcher(job_id, int(data.get("total_steps") or 0), total_steps)
        )

        def show(event: SSEEvent) -> None:
            if event.event != "metrics":
                return
            if watcher is None:
                sys.stdout.write(event.data + "\n")
                sys.stdout.flush()
            else:
                watcher.show(event.json())

        try:
            end = api.follow(
                f"/jobs/{job_id}/metrics/stream",
                {"interval": interval},
                show,
                max_retries=max_retries,
            )
        finally:
            if watcher is not None:
                watcher.close()
    ended(end, followed=True)
