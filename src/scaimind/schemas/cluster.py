"""Request schemas of the cluster endpoints (API.md §5.3)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scaimind.schemas.jobs import Strict


class DrainBody(Strict):
    """POST /cluster/nodes/{node_id}/drain (the body is optional)."""

    # True preempts the node's running jobs; False lets them finish first.
    force: bool = False
    reason: Annotated[str, Field(max_length=1024)] = ""
