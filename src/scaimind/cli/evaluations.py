"""`scaimind eval submit|list|get`: evaluations of trained models on benchmarks."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer

from scaimind.cli.base import note
from scaimind.cli.common import (
    DEFAULT_URL,
    IdempotencyKeyOption,
    JsonOption,
    TokenOption,
    UrlOption,
    connect,
    print_json,
)

EvaluationArgument = Annotated[
    str, typer.Argument(metavar="EVALUATION_ID", help="evaluation id (eval_…)")
]


def submit(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="the trained job")],
    benchmark: Annotated[
        list[str],
        typer.Option(
            "--benchmark",
            "-b",
            metavar="NAME",
            help="benchmark to run: perplexity, loss, token_accuracy (repeatable)",
        ),
    ],
    dataset: Annotated[
        str,
        typer.Option(help="dataset of every benchmark", show_default="the job's validation split"),
    ] = "",
    num_samples: Annotated[int, typer.Option(help="samples per benchmark (0: all)", min=0)] = 0,
    checkpoint: Annotated[
        str,
        typer.Option("--checkpoint", help="checkpoint id to score", show_default="the final model"),
    ] = "",
    model_uri: Annotated[
        str, typer.Option(help="model to score", show_default="the job's model")
    ] = "",
    idempotency_key: IdempotencyKeyOption = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Evaluate a job's model (or one of its checkpoints); prints the evaluation id."""
    body: dict[str, Any] = {
        "job_id": job_id,
        "benchmarks": [
            {"name": name, "dataset": dataset, "num_samples": num_samples} for name in benchmark
        ],
        "checkpoint_id": checkpoint,
    }
    if model_uri:
        body["model_uri"] = model_uri
    key = idempotency_key or uuid.uuid4().hex
    with connect(url, token) as api:
        data = api.post("/evaluations", body, idempotency_key=key)
    if as_json:
        print_json(data)
        return
    print(data["evaluation_id"])
    note(f"submitted {data['evaluation_id']}: {data.get('status')} — {data.get('message', '')}")


def scores(record: dict[str, Any]) -> str:
    """'perplexity=1.0001 loss=1.3e-05' from an evaluation's benchmark results."""
    from scaimind.cli.render import human_number

    parts = []
    for result in record.get("benchmarks") or []:
        done = result.get("status", "COMPLETED") == "COMPLETED"
        value = human_number(result.get("score")) if done else result.get("status")
        parts.append(f"{result.get('name')}={value}")
    return " ".join(parts)


def list_evaluations(
    job: Annotated[
        str, typer.Option("--job", metavar="JOB_ID", help="only evaluations of this job")
    ] = "",
    page_size: Annotated[int, typer.Option(help="evaluations per page", min=1, max=100)] = 20,
    page_token: Annotated[str, typer.Option(help="the page to show (from the previous one)")] = "",
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List the tenant's evaluations with their scores, newest first."""
    params: dict[str, Any] = {"page_size": page_size, "page_token": page_token}
    if job:
        params["job_id"] = job
    with connect(url, token) as api:
        page = api.get("/evaluations", params)
    if as_json:
        print_json(page)
        return
    from scaimind.cli.render import console, table

    rows = [
        [r.get("evaluation_id"), r.get("job_id"), r.get("status"), scores(r), r.get("created_at")]
        for r in page.get("evaluations") or []
    ]
    console().print(table(["evaluation_id", "job_id", "status", "scores", "created_at"], rows))
    if page.get("next_page_token"):
        note(f"more evaluations: --page-token {page['next_page_token']}")


def get(
    evaluation_id: EvaluationArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show one evaluation with the score of every benchmark."""
    with connect(url, token) as api:
        record = api.get(f"/evaluations/{evaluation_id}")
    if as_json:
        print_json(record)
        return
    from scaimind.cli.render import console, human_number, table

    out = console()
    summary = table(
        ["field", "value"],
        [
            ("evaluation_id", record.get("evaluation_id")),
            ("job_id", record.get("job_id")),
            ("status", record.get("status")),
            ("model", record.get("model_uri")),
            ("checkpoint_id", record.get("checkpoint_id")),
            ("message", record.get("status_message")),
            ("created_at", record.get("created_at")),
            ("completed_at", record.get("completed_at")),
        ],
    )
    summary.show_header = False
    out.print(summary)
    out.print()
    rows = [
        [
            b.get("name"),
            b.get("status"),
            human_number(b.get("score")),
            b.get("dataset"),
            b.get("error"),
        ]
        for b in record.get("benchmarks") or []
    ]
    out.print(table(["benchmark", "status", "score", "dataset", "error"], rows))


def build() -> typer.Typer:
    """The `eval` command group."""
    app = typer.Typer(help="Evaluate trained models on benchmarks.", no_args_is_help=True)
    app.command("submit")(submit)
    app.command("list")(list_evaluations)
    app.command("get")(get)
    return app
