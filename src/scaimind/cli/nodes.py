"""`scaimind nodes list|get|drain|enable`: the cluster's nodes."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from scaimind.cli.base import note
from scaimind.cli.common import DEFAULT_URL, JsonOption, TokenOption, UrlOption, connect, print_json

NodeArgument = Annotated[str, typer.Argument(metavar="NODE_ID", help="node id")]


def node_row(node: dict[str, Any]) -> list[Any]:
    """A row of `nodes list`."""
    gpus = node.get("gpus") or []
    used = sum(float(g.get("utilization_percent") or 0) for g in gpus) / len(gpus) if gpus else 0.0
    return [
        node.get("node_id"),
        node.get("hostname"),
        node.get("status"),
        node.get("gpu_type"),
        f"{node.get('gpus_available', 0)}/{node.get('gpu_count', 0)}",
        f"{used:.0f}%",
        node.get("running_job_ids"),
        node.get("labels"),
        node.get("drain_reason"),
    ]


COLUMNS = [
    "node_id",
    "hostname",
    "status",
    "gpu_type",
    "free",
    "util",
    "jobs",
    "labels",
    "drain_reason",
]


def list_nodes(
    status: Annotated[
        str, typer.Option(help="only nodes in this status, e.g. ONLINE, DRAINED")
    ] = "",
    page_size: Annotated[int, typer.Option(help="nodes per page", min=1, max=100)] = 100,
    page_token: Annotated[str, typer.Option(help="the page to show (from the previous one)")] = "",
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List the cluster's nodes with free slots, utilisation and running jobs."""
    params = {"status_filter": status.upper(), "page_size": page_size, "page_token": page_token}
    with connect(url, token) as api:
        page = api.get("/cluster/nodes", params)
    if as_json:
        print_json(page)
        return
    from scaimind.cli.render import console, table

    console().print(table(COLUMNS, [node_row(n) for n in page.get("nodes") or []]))
    if page.get("next_page_token"):
        note(f"more nodes: --page-token {page['next_page_token']}")


def _show(node: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(node)
        return
    from scaimind.cli.render import console, table

    console().print(table(COLUMNS, [node_row(node)]))


def get(
    node_id: NodeArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show one node."""
    with connect(url, token) as api:
        _show(api.get(f"/cluster/nodes/{node_id}"), as_json)


def drain(
    node_id: NodeArgument,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="checkpoint and preempt its running jobs instead of letting them finish"
        ),
    ] = False,
    reason: Annotated[str, typer.Option(help="why (shown in `nodes list`)")] = "",
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Stop placing jobs on a node (DRAINING, then DRAINED when empty)."""
    with connect(url, token) as api:
        _show(
            api.post(f"/cluster/nodes/{node_id}/drain", {"force": force, "reason": reason}), as_json
        )


def enable(
    node_id: NodeArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Re-open a drained node; queued jobs start on it."""
    with connect(url, token) as api:
        _show(api.post(f"/cluster/nodes/{node_id}/enable"), as_json)


def build() -> typer.Typer:
    """The `nodes` command group."""
    app = typer.Typer(help="List, drain and enable cluster nodes.", no_args_is_help=True)
    app.command("list")(list_nodes)
    app.command("get")(get)
    app.command("drain")(drain)
    app.command("enable")(enable)
    return app
