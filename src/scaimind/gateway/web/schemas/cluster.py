"""Request schemas of the cluster endpoints (docs/API.md, "Cluster")."""

from __future__ import annotations

from pydantic import Field

from scaimind.gateway.web.schemas.common import Reason, Strict


class DrainBody(Strict):
    """POST /cluster/nodes/{node_id}/drain (the body is optional)."""

    force: bool = Field(
        False,
        description="Preempt the node's running jobs (they checkpoint and become PREEMPTED); "
        "false lets them finish first.",
    )
    reason: Reason = Field("", description="Why; shown as the node's drain_reason.")
