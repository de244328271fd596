"""Evaluation endpoints (docs/API.md, "Evaluations")."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Response

from scaimind.contract import limits
from scaimind.gateway.backend.convert import message_to_dict
from scaimind.gateway.security.auth import EVALUATE, VIEW
from scaimind.gateway.web.deps import (
    Caller,
    ClientDep,
    Evaluator,
    IdempotencyDep,
    caller,
)
from scaimind.gateway.web.openapi import MODULE, errors
from scaimind.gateway.web.params import PageToken, page_size
from scaimind.gateway.web.responses import data_response
from scaimind.gateway.web.schemas.evaluations import SubmitEvaluationBody
from scaimind.gateway.web.schemas.examples import SUBMIT_EVALUATION_EXAMPLES
from scaimind.gateway.web.schemas.ops_views import Evaluation, EvaluationList, EvaluationSubmitted
from scaimind.gateway.web.schemas.views import Data

router = APIRouter(prefix="/evaluations", tags=["evaluations"], responses=errors(*MODULE))

# Evaluations are readable with `evaluate` alone, so evaluators need not see every job.
Reader = Annotated[Caller, Depends(caller(VIEW, EVALUATE))]
EvaluationId = Annotated[
    str,
    Path(min_length=1, max_length=limits.ID_CHARS, description="The evaluation's id (eval_…)."),
]


@router.get("", response_model=Data[EvaluationList])
async def list_evaluations(
    who: Reader,
    client: ClientDep,
    job_id: Annotated[
        str,
        Query(
            max_length=limits.ID_CHARS,
            description="Only evaluations of this job; empty = all of the tenant's.",
        ),
    ] = "",
    page_size: Annotated[int, page_size("evaluations")] = 20,
    page_token: PageToken = "",
) -> Response:
    """List the tenant's evaluations with their scores, newest first."""
    evaluations = await client.list_evaluations(
        who.ctx, job_id=job_id, page_size=page_size, page_token=page_token
    )
    return data_response(evaluations)


@router.post(
    "", status_code=201, response_model=Data[EvaluationSubmitted], responses=errors(413, 502)
)
async def submit_evaluation(
    who: Evaluator,
    client: ClientDep,
    body: Annotated[SubmitEvaluationBody, Body(openapi_examples=SUBMIT_EVALUATION_EXAMPLES)],
    idempotency: IdempotencyDep,
) -> dict[str, Any]:
    """Evaluate a trained model (or one of its checkpoints) on benchmarks."""
    payload = body.model_dump(mode="json")

    async def submit() -> dict[str, Any]:
        submitted = await client.submit_evaluation(
            payload, who.ctx, idempotency_key=idempotency.key
        )
        return {"data": message_to_dict(submitted)}

    return await idempotency.run(
        who.ctx.tenant_id, "POST /evaluations", payload, submit, status_code=201
    )


@router.get("/{evaluation_id}", response_model=Data[Evaluation])
async def get_evaluation(evaluation_id: EvaluationId, who: Reader, client: ClientDep) -> Response:
    """One evaluation with its benchmark results."""
    return data_response(await client.get_evaluation(evaluation_id, who.ctx))
