"""Request validation, authentication, tenancy, idempotency, listing and paging."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import pytest

from scaimind.v1 import common_pb2, coordinator_pb2

from .conftest import ONE_SLOT, Client, Env, S

Req = coordinator_pb2.SubmitJobRequest


async def expect_error(call: object, code: grpc.StatusCode, *fragments: str) -> str:
    """Await a call that must fail with `code`; return its detail after checking fragments."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == code, err.value.details()
    detail = err.value.details() or ""
    for fragment in fragments:
        assert fragment in detail, detail
    return detail


def _mutations(env: Env) -> list[tuple[Callable[[Req], None], tuple[str, ...]]]:
    def clear_sources(r: Req) -> None:
        del r.data_config.sources[:]

    def custom_without_script(r: Req) -> None:
        r.training_config.framework.type = common_pb2.FRAMEWORK_TYPE_CUSTOM

    return [
        (lambda r: setattr(r, "name", ""), ("name",)),
        (lambda r: setattr(r, "name", "x" * 257), ("name", "256")),
        (
            lambda r: r.training_config.ClearField("training_type"),
            ("training_config.training_type",),
        ),
        (
            lambda r: r.training_config.base_model.ClearField("model_id"),
            ("training_config.base_model.model_id",),
        ),
        (clear_sources, ("data_config.sources: at least one source is required",)),
        (
            lambda r: setattr(r.data_config.sources[0], "path", str(env.tmp / "missing.jsonl")),
            ("data_config.sources[0].path", "does not exist"),
        ),
        (
            lambda r: setattr(
                r.data_config.sources[0], "path", "file://" + str(env.tmp / "nope.jsonl")
            ),
            ("data_config.sources[0].path", "does not exist"),
        ),
        (lambda r: setattr(r.data_config.sources[0], "path", "relative.jsonl"), ("absolute",)),
        (custom_without_script, ("training_config.framework.custom_script_path",)),
        (
            lambda r: setattr(r.training_config, "priority", 11),
            ("training_config.priority", "0 and 10"),
        ),
        (lambda r: setattr(r.training_config, "priority", -1), ("training_config.priority",)),
        (
            lambda r: setattr(r.resource_config, "gpu_type", "H100"),
            ("resource_config.gpu_type", "H100", "A100-80GB"),
        ),
        (
            lambda r: setattr(r.resource_config, "gpu_count", 0),
            ("resource_config.gpu_count", "at least 1"),
        ),
        (lambda r: setattr(r.resource_config, "gpu_count", 9), ("resource_config.gpu_count",)),
        (lambda r: setattr(r.resource_config, "num_nodes", 2), ("resource_config.num_nodes",)),
        (
            lambda r: setattr(r.data_config, "validation_split", 1.5),
            ("data_config.validation_split",),
        ),
        (
            lambda r: r.scheduling_config.node_affinity.append("node-z"),
            ("scheduling_config.node_affinity", "node-z"),
        ),
        (lambda r: setattr(r.training_config, "max_retries", -1), ("training_config.max_retries",)),
        (
            lambda r: setattr(r.training_config, "resume_from_checkpoint", "ckpt-x"),
            ("resume_from_checkpoint",),
        ),
        (lambda r: r.resource_config.node_selector.update({"zone": "mars"}), ("resource_config",)),
    ]


async def test_submit_validation_names_the_field(env: Env) -> None:
    client = await env.start(nodes=ONE_SLOT)
    for mutate, fragments in _mutations(env):
        req = env.builtin()
        mutate(req)
        await expect_error(
            client.jobs.SubmitJob(req, metadata=client.md()),
            grpc.StatusCode.INVALID_ARGUMENT,
            *fragments,
        )
    listed = await client.jobs.ListJobs(coordinator_pb2.ListJobsRequest(), metadata=client.md())
    assert listed.total_count == 0


async def test_cpu_inventory_accepts_gpu_count_zero(env: Env, client: Client) -> None:
    job_id = await client.submit(
        env.custom("cpu", env={"TOTAL_STEPS": "2", "STEP_SECONDS": "0"}, gpu_count=0)
    )
    job = await client.wait(job_id, S.JOB_STATUS_COMPLETED)
    assert job.resource_config.gpu_count == 0


async def test_authentication_and_tenant_isolation(env: Env, client: Client) -> None:
    job_id = await client.submit(env.custom("mine", start_after=time.time() + 3600))
    get = coordinator_pb2.GetJobRequest(job_id=job_id)
    wrong = Client(env.channel, secret="wrong")  # type: ignore[arg-type]
    await expect_error(
        wrong.jobs.GetJob(get, metadata=wrong.md()), grpc.StatusCode.UNAUTHENTICATED, "x-api-secret"
    )
    await expect_error(
        client.jobs.GetJob(get, metadata=[("x-api-secret", "coordinator-test-secret")]),
        grpc.StatusCode.UNAUTHENTICATED,
        "x-tenant-id",
    )
    other = env.tenant("tenant-b")
    detail = await expect_error(
        other.jobs.GetJob(get, metadata=other.md()), grpc.StatusCode.NOT_FOUND
    )
    missing = await expect_error(
        other.jobs.GetJob(
            coordinator_pb2.GetJobRequest(job_id="job_doesnotexist"), metadata=other.md()
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert detail.replace(job_id, "X") == missing.replace("job_doesnotexist", "X")
    for call in (
        other.jobs.CancelJob(coordinator_pb2.CancelJobRequest(job_id=job_id), metadata=other.md()),
        other.jobs.PauseJob(coordinator_pb2.PauseJobRequest(job_id=job_id), metadata=other.md()),
        other.jobs.RetryJob(coordinator_pb2.RetryJobRequest(job_id=job_id), metadata=other.md()),
        other.jobs.GetJobMetrics(
            coordinator_pb2.GetJobMetricsRequest(job_id=job_id), metadata=other.md()
        ),
        other.logs(job_id),
    ):
        await expect_error(call, grpc.StatusCode.NOT_FOUND)
    assert (
        await other.jobs.ListJobs(coordinator_pb2.ListJobsRequest(), metadata=other.md())
    ).total_count == 0
    job = await client.get(job_id)
    assert job.tenant_id == "tenant-a"
    assert job.user_id == "user-1"
    assert job.status == S.JOB_STATUS_QUEUED


async def test_unauthenticated_mode_only_on_loopback(env: Env) -> None:
    from pydantic import ValidationError

    from scaimind.coordinator.config import CoordinatorConfig

    with pytest.raises(ValidationError, match="api_secret"):
        CoordinatorConfig(data_dir=env.data_dir)
    with pytest.raises(ValidationError, match="loopback"):
        CoordinatorConfig(data_dir=env.data_dir, host="0.0.0.0", allow_unauthenticated=True)
    cfg = CoordinatorConfig(data_dir=env.data_dir, allow_unauthenticated=True)
    assert cfg.api_secret is None


async def test_idempotent_submit_under_concurrency(env: Env, client: Client) -> None:
    req = env.custom("idem", start_after=time.time() + 3600)
    responses = await asyncio.gather(
        *(
            client.jobs.SubmitJob(req, metadata=client.md(x_idempotency_key="key-1"))
            for _ in range(20)
        )
    )
    assert len({r.job_id for r in responses}) == 1
    listed = await client.jobs.ListJobs(coordinator_pb2.ListJobsRequest(), metadata=client.md())
    assert listed.total_count == 1
    # The key is per tenant: another tenant gets its own job.
    other = env.tenant("tenant-b")
    again = await other.jobs.SubmitJob(req, metadata=other.md(x_idempotency_key="key-1"))
    assert again.job_id != responses[0].job_id
    fresh = await client.jobs.SubmitJob(req, metadata=client.md(x_idempotency_key="key-2"))
    assert fresh.job_id != responses[0].job_id


async def test_list_filters_and_paging(env: Env, client: Client) -> None:
    later = time.time() + 3600
    ids = []
    for i in range(25):
        labels = {"team": "red" if i % 2 else "blue", "idx": str(i)}
        ids.append(
            await client.submit(env.custom(f"job-{i:02d}", labels=labels, start_after=later))
        )
    for job_id in ids[:5]:
        await client.jobs.CancelJob(
            coordinator_pb2.CancelJobRequest(job_id=job_id), metadata=client.md()
        )

    seen: list[str] = []
    token = ""
    while True:
        page = await client.jobs.ListJobs(
            coordinator_pb2.ListJobsRequest(page_size=7, page_token=token), metadata=client.md()
        )
        assert page.total_count == 25
        seen.extend(j.job_id for j in page.jobs)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))  # newest first, no gap, no duplicate

    cancelled = await client.jobs.ListJobs(
        coordinator_pb2.ListJobsRequest(status_filter=[S.JOB_STATUS_CANCELLED]),
        metadata=client.md(),
    )
    assert sorted(j.job_id for j in cancelled.jobs) == sorted(ids[:5])
    red = await client.jobs.ListJobs(
        coordinator_pb2.ListJobsRequest(label_filter={"team": "red"}, page_size=100),
        metadata=client.md(),
    )
    assert red.total_count == 12
    assert all(j.labels["team"] == "red" for j in red.jobs)
    both = await client.jobs.ListJobs(
        coordinator_pb2.ListJobsRequest(
            label_filter={"team": "red", "idx": "3"}, status_filter=[S.JOB_STATUS_CANCELLED]
        ),
        metadata=client.md(),
    )
    assert [j.job_id for j in both.jobs] == [ids[3]]
    by_name = await client.jobs.ListJobs(
        coordinator_pb2.ListJobsRequest(order_by="name asc", page_size=3), metadata=client.md()
    )
    assert [j.name for j in by_name.jobs] == ["job-00", "job-01", "job-02"]
    nxt = await client.jobs.ListJobs(
        coordinator_pb2.ListJobsRequest(
            order_by="name asc", page_size=3, page_token=by_name.next_page_token
        ),
        metadata=client.md(),
    )
    assert [j.name for j in nxt.jobs] == ["job-03", "job-04", "job-05"]
    await expect_error(
        client.jobs.ListJobs(
            coordinator_pb2.ListJobsRequest(order_by="cost desc"), metadata=client.md()
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "order_by",
    )
    await expect_error(
        client.jobs.ListJobs(coordinator_pb2.ListJobsRequest(page_size=101), metadata=client.md()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size",
    )
    await expect_error(
        client.jobs.ListJobs(
            coordinator_pb2.ListJobsRequest(page_token="garbage!"), metadata=client.md()
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )


async def test_updated_at_moves_on_every_state_change(env: Env, client: Client) -> None:
    job_id = await client.submit(env.custom("t", start_after=time.time() + 3600))
    before = (await client.get(job_id)).updated_at.ToNanoseconds()
    await client.jobs.CancelJob(
        coordinator_pb2.CancelJobRequest(job_id=job_id), metadata=client.md()
    )
    after = (await client.get(job_id)).updated_at.ToNanoseconds()
    assert after > before


async def test_tenant_quota_is_resource_exhausted_with_retry_after(env: Env) -> None:
    client = await env.start(tenant_queue_quota=2)
    later = time.time() + 3600
    first = await client.submit(env.custom("a", start_after=later))
    await client.submit(env.custom("b", start_after=later))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.SubmitJob(env.custom("c", start_after=later), metadata=client.md())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "quota 2" in (err.value.details() or "")
    assert ("retry-after", "30") in list(err.value.trailing_metadata() or ())
    other = env.tenant("tenant-b")
    assert await other.submit(env.custom("d", start_after=later))
    await client.jobs.CancelJob(
        coordinator_pb2.CancelJobRequest(job_id=first), metadata=client.md()
    )
    assert await client.submit(env.custom("c", start_after=later))
