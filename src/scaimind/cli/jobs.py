"""`scaimind jobs …`: submit, list, inspect, control and wait for training jobs."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from scaimind.cli.base import CliError, ExitCode, note
from scaimind.cli.common import (
    DEFAULT_URL,
    IdempotencyKeyOption,
    JsonOption,
    TokenOption,
    UrlOption,
    connect,
    print_json,
)

JobArgument = Annotated[str, typer.Argument(metavar="JOB_ID", help="job id")]


def read_json_object(source: str) -> dict[str, Any]:
    """A JSON object from a file, or from stdin when `source` is `-`."""
    name = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {source}: {exc}", ExitCode.USAGE) from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{name} is not valid JSON: {exc}", ExitCode.USAGE) from None
    if not isinstance(body, dict):
        raise CliError(f"{name} must hold a JSON object (the POST /jobs body)", ExitCode.USAGE)
    return body


def submit(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE|-", help="JSON job spec (the POST /jobs body), or - for stdin"
        ),
    ],
    idempotency_key: IdempotencyKeyOption = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Submit a training job; prints its id (so `JOB=$(scaimind jobs submit job.json)` works)."""
    body = read_json_object(file)
    # One key per run: a submit retried after a dropped connection creates one job.
    key = idempotency_key or uuid.uuid4().hex
    with connect(url, token) as api:
        data = api.post("/jobs", body, idempotency_key=key)
    if as_json:
        print_json(data)
        return
    print(data["job_id"])
    note(f"submitted {data['job_id']}: {data.get('status')} — {data.get('message', '')}")


def progress_cell(job: dict[str, Any]) -> str:
    """'120/3000 4%' (or '-' before the first step)."""
    progress = job.get("progress") or {}
    step, total = progress.get("current_step") or 0, progress.get("total_steps") or 0
    if not total:
        return str(step) if step else "-"
    return f"{step}/{total} {progress.get('percent', 0):.0f}%"


def list_jobs(
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="only jobs in this status, e.g. TRAINING (repeatable)",
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label", metavar="KEY=VALUE", help="only jobs with this label, key=value (repeatable)"
        ),
    ] = None,
    page_size: Annotated[int, typer.Option(help="jobs per page", min=1, max=100)] = 20,
    page_token: Annotated[str, typer.Option(help="the page to show (from the previous one)")] = "",
    order_by: Annotated[str, typer.Option(help="sort order the coordinator understands")] = "",
    all_pages: Annotated[bool, typer.Option("--all", help="walk every page")] = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List the tenant's jobs (newest first)."""
    labels = label or []
    for item in labels:
        if "=" not in item:
            raise CliError(f"--label must be key=value, not {item!r}", ExitCode.USAGE)
    params: dict[str, Any] = {"page_size": page_size}
    if status:
        params["status"] = [s.upper() for s in status]
    if labels:
        params["label"] = labels
    if order_by:
        params["order_by"] = order_by
    jobs: list[dict[str, Any]] = []
    with connect(url, token) as api:
        while True:
            page = api.get("/jobs", {**params, "page_token": page_token})
            jobs.extend(page.get("jobs") or [])
            page_token = page.get("next_page_token") or ""
            if not (all_pages and page_token):
                break
    if as_json:
        print_json({**page, "jobs": jobs})
        return
    from scaimind.cli.render import console, table

    columns = ["job_id", "name", "status", "progress", "created_at", "labels"]
    rows = [
        [
            j.get("job_id"),
            j.get("name"),
            j.get("status"),
            progress_cell(j),
            j.get("created_at"),
            j.get("labels"),
        ]
        for j in jobs
    ]
    console().print(table(columns, rows))
    if page_token:
        note(f"more jobs: --page-token {page_token} (or --all)")


def job_fields(job: dict[str, Any]) -> list[tuple[str, Any]]:
    """The rows of `jobs get`: what a person wants to know first."""
    from scaimind.cli.render import human_number, progress_text

    progress = job.get("progress") or {}
    status = str(job.get("status", ""))
    if job.get("status_message"):
        status += f" ({job['status_message']})"
    error = job.get("error") or {}
    # The summary fields are in every view (a list's BASIC one has no checkpoint list).
    checkpoint = job.get("latest_checkpoint") or {}
    checkpoint_count = job.get("checkpoint_count") or 0
    latest = job.get("latest_metrics") or {}
    rows: list[tuple[str, Any]] = [
        ("job_id", job.get("job_id")),
        ("name", job.get("name")),
        ("status", status),
        (
            "progress",
            progress_text(
                progress.get("current_step") or 0,
                progress.get("total_steps") or 0,
                None,
                running=False,  # a snapshot has no rate to estimate from
            ),
        ),
        ("metrics", "  ".join(f"{k} {human_number(v)}" for k, v in sorted(latest.items()))),
        ("error", f"{error.get('code')}: {error.get('message')}" if error else ""),
        ("created_at", job.get("created_at")),
        ("started_at", job.get("started_at")),
        ("completed_at", job.get("completed_at")),
        ("queue", job.get("queue_name")),
        ("nodes", job.get("assigned_nodes")),
        ("labels", job.get("labels")),
        ("parent_job_id", job.get("parent_job_id")),
        ("retry_count", job.get("retry_count")),
        (
            "checkpoints",
            f"{checkpoint_count}, latest {checkpoint.get('checkpoint_id')} "
            f"(step {checkpoint.get('step')})"
            if checkpoint
            else "",
        ),
        ("final_model_uri", job.get("final_model_uri")),
    ]
    if status.startswith("QUEUED"):
        rows.insert(4, ("queue_position", job.get("queue_position")))
        rows.insert(5, ("estimated_wait", f"{job.get('estimated_wait_seconds', 0)} s"))
    return rows


def get(
    job_id: JobArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show one job (--json: the full record, with its configuration and checkpoints)."""
    with connect(url, token) as api:
        job = api.get(f"/jobs/{job_id}")
    if as_json:
        print_json(job)
        return
    from scaimind.cli.render import console, table

    view = table(["field", "value"], job_fields(job))
    view.show_header = False
    console().print(view)


def _act(
    url: str,
    token: str | None,
    as_json: bool,
    job_id: str,
    verb: str,
    body: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> None:
    with connect(url, token) as api:
        data = api.post(f"/jobs/{job_id}/{verb}", body, idempotency_key=idempotency_key)
    if as_json:
        print_json(data)
        return
    print(f"job {data.get('job_id', job_id)}: {data.get('status')} — {data.get('message', '')}")


def cancel(
    job_id: JobArgument,
    reason: Annotated[str, typer.Option(help="why (kept in the job's log)")] = "",
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Cancel a job that has not ended."""
    _act(url, token, as_json, job_id, "cancel", {"reason": reason})


def pause(
    job_id: JobArgument,
    checkpoint: Annotated[
        bool, typer.Option(help="write a checkpoint first, so resume continues from here")
    ] = True,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Pause a running job (its slots are freed; `jobs resume` continues it)."""
    _act(url, token, as_json, job_id, "pause", {"save_checkpoint": checkpoint})


CheckpointOption = Annotated[
    str,
    typer.Option("--checkpoint", help="checkpoint id to continue from", show_default="the latest"),
]


def resume(
    job_id: JobArgument,
    checkpoint: CheckpointOption = "",
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Resume a paused job."""
    _act(url, token, as_json, job_id, "resume", {"checkpoint_id": checkpoint})


def retry(
    job_id: JobArgument,
    checkpoint: CheckpointOption = "",
    idempotency_key: IdempotencyKeyOption = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Retry a FAILED or PREEMPTED job as a new child job."""
    key = idempotency_key or uuid.uuid4().hex
    _act(url, token, as_json, job_id, "retry", {"checkpoint_id": checkpoint}, key)


def wait(
    job_id: JobArgument,
    interval: Annotated[float, typer.Option(help="seconds between polls", min=0.2, max=60)] = 1.0,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Follow a job until it ends, with step/total, percent and ETA.

    Exits 0 when it COMPLETED and 4 when it FAILED or was CANCELLED (a PREEMPTED job whose
    retries are used up counts as failed). --json prints the final job record.
    """
    from scaimind.cli.waiting import follow_job

    with connect(url, token) as api:
        job = follow_job(api, job_id, interval)
    if as_json:
        print_json(job)
    if job.get("status") != "COMPLETED":
        raise typer.Exit(ExitCode.UNSUCCESSFUL)


def build() -> typer.Typer:
    """The `jobs` command group."""
    app = typer.Typer(
        help="Submit, list, inspect, control and wait for training jobs.", no_args_is_help=True
    )
    app.command("submit")(submit)
    app.command("list")(list_jobs)
    app.command("get")(get)
    app.command("cancel")(cancel)
    app.command("pause")(pause)
    app.command("resume")(resume)
    app.command("retry")(retry)
    app.command("wait")(wait)
    return app
