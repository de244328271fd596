"""`scaimind queue`: queue depth, waits and the position of every waiting job."""

from __future__ import annotations

from typing import Annotated

import typer

from scaimind.cli.common import DEFAULT_URL, JsonOption, TokenOption, UrlOption, connect, print_json


def queue(
    name: Annotated[str, typer.Option("--queue", help="only this queue", show_default="all")] = "",
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show the queues: depth, running jobs, waits, and each waiting job's estimated start."""
    with connect(url, token) as api:
        data = api.get("/queue", {"queue_name": name})
    if as_json:
        print_json(data)
        return
    from scaimind.cli.render import console, human_duration, table

    out = console()
    queues = data.get("queues") or []
    out.print(
        table(
            ["queue", "waiting", "running", "oldest_wait", "wait_if_submitted_now"],
            [
                [
                    q.get("queue_name"),
                    q.get("depth", 0),
                    q.get("running", 0),
                    human_duration(q.get("oldest_wait_seconds") or 0),
                    human_duration(q.get("estimated_wait_seconds") or 0),
                ]
                for q in queues
            ],
        )
    )
    waiting = [(q.get("queue_name"), j) for q in queues for j in q.get("jobs") or []]
    if waiting:
        out.print()
        out.print(
            table(
                ["queue", "position", "job_id", "name", "priority", "slots", "waited", "starts_in"],
                [
                    [
                        queue_name,
                        j.get("position"),
                        j.get("job_id"),
                        j.get("name"),
                        j.get("priority"),
                        f"{j.get('gpu_count', 0)} {j.get('gpu_type') or ''}".strip(),
                        human_duration(j.get("wait_seconds") or 0),
                        human_duration(j.get("estimated_start_seconds") or 0),
                    ]
                    for queue_name, j in waiting
                ],
            )
        )
