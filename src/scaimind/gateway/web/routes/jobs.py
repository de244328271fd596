"""Jobs endpoints (docs/API.md, "Jobs")."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Path, Query, Response

from scaimind.contract import limits
from scaimind.gateway.backend.convert import message_to_dict
from scaimind.gateway.web.deps import (
    ClientDep,
    IdempotencyDep,
    JobCacheDep,
    Manager,
    Viewer,
)
from scaimind.gateway.web.openapi import MODULE, errors
from scaimind.gateway.web.params import PageToken, page_size
from scaimind.gateway.web.responses import DataResponse, data_response
from scaimind.gateway.web.schemas.examples import SUBMIT_JOB_EXAMPLES
from scaimind.gateway.web.schemas.jobs import (
    CancelBody,
    JobStatus,
    JobView,
    LabelFilter,
    PauseBody,
    ResumeBody,
    RetryBody,
    SubmitJobBody,
)
from scaimind.gateway.web.schemas.views import (
    Data,
    Job,
    JobAction,
    JobList,
    JobRetried,
    JobSubmitted,
)
from scaimind.v1 import coordinator_pb2

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=errors(*MODULE))

JobId = Annotated[
    str, Path(min_length=1, max_length=limits.ID_CHARS, description="The job's id (job_…).")
]


def _job_links(source: str) -> dict[str, Any]:
    # OpenAPI links: what a client (or a stateful fuzzer) can do next with the job id.
    return {
        name: {"operationId": f"scaimind_{operation}", "parameters": {"job_id": source}}
        for name, operation in (
            ("GetJob", "get_job"),
            ("CancelJob", "cancel_job"),
            ("PauseJob", "pause_job"),
            ("ResumeJob", "resume_job"),
            ("RetryJob", "retry_job"),
            ("GetJobMetrics", "get_job_metrics"),
        )
    }


JOB_LINKS: Final = _job_links("$response.body#/data/job_id")


def labels_to_filter(labels: list[str]) -> dict[str, str]:
    """`key=value` strings → a label filter map."""
    return dict(label.split("=", 1) for label in labels)


_VIEW_DOC = (
    "BASIC: every field but the checkpoint list (`checkpoints` empty; `latest_checkpoint` and "
    "`checkpoint_count` say what there is). FULL: every checkpoint too."
)
_VIEWS = {
    JobView.BASIC: coordinator_pb2.JOB_VIEW_BASIC,
    JobView.FULL: coordinator_pb2.JOB_VIEW_FULL,
}


@router.get("", response_model=Data[JobList])
async def list_jobs(
    who: Viewer,
    client: ClientDep,
    cache: JobCacheDep,
    status: Annotated[
        list[JobStatus],
        Query(max_length=limits.STATUS_FILTERS, description="Only these statuses (repeatable)."),
    ] = [],  # noqa: B006 (FastAPI copies defaults)
    page_size: Annotated[int, page_size("jobs")] = 20,
    page_token: PageToken = "",
    order_by: Annotated[
        str,
        Query(
            max_length=limits.ID_CHARS,
            description="`<field> [asc|desc]`: created_at (default, desc), updated_at, name, "
            "priority, status.",
        ),
    ] = "",
    label: Annotated[
        list[LabelFilter],
        Query(max_length=limits.LABELS, description="`key=value` labels that must all match."),
    ] = [],  # noqa: B006
    view: Annotated[JobView, Query(description=f"{_VIEW_DOC} Default BASIC.")] = JobView.BASIC,
) -> Response:
    """List the tenant's jobs, newest first (summaries unless view=FULL)."""
    jobs = await client.list_jobs(
        who.ctx,
        statuses=[s.value for s in status],
        labels=labels_to_filter(label),
        page_size=page_size,
        page_token=page_token,
        order_by=order_by,
        view=_VIEWS[view],
    )
    data = message_to_dict(jobs)
    cache.schedule_sync(who.ctx.tenant_id, data["jobs"], view.value)
    return DataResponse(data)


@router.post(
    "",
    status_code=201,
    response_model=Data[JobSubmitted],
    responses={**errors(413, 502), 201: {"description": "Submitted.", "links": JOB_LINKS}},
)
async def submit_job(
    who: Manager,
    client: ClientDep,
    body: Annotated[SubmitJobBody, Body(openapi_examples=SUBMIT_JOB_EXAMPLES)],
    idempotency: IdempotencyDep,
) -> dict[str, Any]:
    """Submit a training job; it is queued and started when slots are free."""
    payload = body.model_dump(mode="json")

    async def submit() -> dict[str, Any]:
        job = await client.submit_job(payload, who.ctx, idempotency_key=idempotency.key)
        return {"data": message_to_dict(job)}

    return await idempotency.run(who.ctx.tenant_id, "POST /jobs", payload, submit, status_code=201)


@router.get("/{job_id}", response_model=Data[Job])
async def get_job(
    job_id: JobId,
    who: Viewer,
    client: ClientDep,
    cache: JobCacheDep,
    view: Annotated[JobView, Query(description=f"{_VIEW_DOC} Default FULL.")] = JobView.FULL,
) -> Response:
    """One job with its progress, metrics and checkpoints, fresh from the coordinator."""
    job = message_to_dict(await client.get_job(job_id, who.ctx, _VIEWS[view]))
    cache.schedule_sync(who.ctx.tenant_id, [job], view.value)
    return DataResponse(job)


@router.post("/{job_id}/cancel", response_model=Data[JobAction], responses=errors(413))
async def cancel_job(
    job_id: JobId,
    who: Manager,
    client: ClientDep,
    body: Annotated[CancelBody | None, Body()] = None,
) -> Response:
    """Cancel a job that has not ended (409 for a COMPLETED, FAILED or CANCELLED one)."""
    body = body or CancelBody()
    return data_response(await client.cancel_job(job_id, who.ctx, reason=body.reason))


@router.post("/{job_id}/pause", response_model=Data[JobAction], responses=errors(413))
async def pause_job(
    job_id: JobId,
    who: Manager,
    client: ClientDep,
    body: Annotated[PauseBody | None, Body()] = None,
) -> Response:
    """Pause a running job, checkpointing first; its slots are freed."""
    body = body or PauseBody()
    paused = await client.pause_job(job_id, who.ctx, save_checkpoint=body.save_checkpoint)
    return data_response(paused)


@router.post("/{job_id}/resume", response_model=Data[JobAction], responses=errors(413, 502))
async def resume_job(
    job_id: JobId,
    who: Manager,
    client: ClientDep,
    body: Annotated[ResumeBody | None, Body()] = None,
) -> Response:
    """Resume a paused job from its latest (or the named) checkpoint."""
    body = body or ResumeBody()
    resumed = await client.resume_job(job_id, who.ctx, checkpoint_id=body.checkpoint_id)
    return data_response(resumed)


@router.post(
    "/{job_id}/retry",
    response_model=Data[JobRetried],
    responses={
        **errors(413, 502),
        200: {"description": "The child job.", "links": _job_links("$response.body#/data/job_id")},
    },
)
async def retry_job(
    job_id: JobId,
    who: Manager,
    client: ClientDep,
    idempotency: IdempotencyDep,
    body: Annotated[RetryBody | None, Body()] = None,
) -> dict[str, Any]:
    """Retry a failed or preempted job as a child job that resumes from its checkpoint."""
    options = (body or RetryBody()).model_dump(mode="json")
    # The ledger fingerprints the job id with the body: one key, one retried job.
    payload = {"job_id": job_id, **options}

    async def retry() -> dict[str, Any]:
        child = await client.retry_job(job_id, options, who.ctx, idempotency_key=idempotency.key)
        return {"data": message_to_dict(child)}

    return await idempotency.run(
        who.ctx.tenant_id, "POST /jobs/{job_id}/retry", payload, retry, status_code=200
    )
