"""`scaimind data validate`: check data sources before training on them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from scaimind.cli.base import ExitCode, note
from scaimind.cli.common import DEFAULT_URL, JsonOption, TokenOption, UrlOption, connect, print_json


def source_path(value: str) -> str:
    """A URI as given; a local path made absolute (the server does not share our directory)."""
    if "://" in value:
        return value
    return str(Path(value).expanduser().absolute())


def validate(
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="SOURCE...", help="files (made absolute here) or URIs (scaidrive://…, file://…)"
        ),
    ],
    training_type: Annotated[
        str,
        typer.Option(
            help="decides the fields a row needs: SFT, LORA, QLORA, DPO, RLHF, "
            "CONTINUED_PRETRAIN, FULL_FINETUNE"
        ),
    ] = "SFT",
    format: Annotated[
        str | None,
        typer.Option(help="JSONL, JSON, CSV, PARQUET or TEXT", show_default="from the file name"),
    ] = None,
    sample_size: Annotated[int, typer.Option(help="rows checked in depth per source", min=1)] = 100,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Read data sources on the server and report rows, columns and per-row problems.

    Exits 4 when a source is invalid, so scripts can stop before submitting a job.
    """
    body: dict[str, Any] = {
        "sources": [
            {"path": source_path(s), **({"format": format.upper()} if format else {})}
            for s in sources
        ],
        "training_type": training_type.upper(),
        "sample_size": sample_size,
    }
    with connect(url, token) as api:
        data = api.post("/data/validate", body)
    if as_json:
        print_json(data)
    else:
        show(data)
    if not data.get("valid"):
        raise typer.Exit(ExitCode.UNSUCCESSFUL)


def show(data: dict[str, Any]) -> None:
    """One row per source, then every problem with its row number."""
    from scaimind.cli.render import console, human_bytes, table

    results = data.get("results") or []
    out = console()
    columns = ["path", "valid", "format", "rows", "size", "columns", "errors", "warnings"]
    rows = [
        [
            r.get("path"),
            "yes" if r.get("valid") else "NO",
            r.get("format"),
            r.get("num_rows"),
            human_bytes(r.get("size_bytes") or 0),
            r.get("columns"),
            len(r.get("errors") or []),
            len(r.get("warnings") or []),
        ]
        for r in results
    ]
    out.print(table(columns, rows))
    for r in results:
        for e in r.get("errors") or []:
            where = f" row {e.get('row')}" if e.get("row") else ""
            out.print(f"{r.get('path')}{where}: {e.get('message')}", markup=False, highlight=False)
        for w in r.get("warnings") or []:
            out.print(f"{r.get('path')}: warning: {w}", markup=False, highlight=False)
    note("the data is valid" if data.get("valid") else "the data is NOT valid")


def build() -> typer.Typer:
    """The `data` command group."""
    app = typer.Typer(help="Check training data.", no_args_is_help=True)
    app.command("validate")(validate)
    return app
