"""The one class around the MindCoordinator stubs.

Every call gets the per-call metadata and a deadline; every failure is translated to a
`CoordinatorError` here, so nothing above this module sees `grpc` types. Idempotent reads are
retried on UNAVAILABLE with backoff inside their deadline; mutations are never retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from scaimind.contract import metadata
from scaimind.gateway.backend.convert import dict_to_message
from scaimind.gateway.backend.status import translate_rpc_error
from scaimind.settings import Settings
from scaimind.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
)

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

_BACKOFF_START_S: Final = 0.05
_BACKOFF_MAX_S: Final = 1.0


class DownstreamTokenSource(Protocol):
    """Mints the caller's downstream tokens when a call needs them (security.token_exchange)."""

    async def metadata(self) -> Mapping[str, str]:
        """e.g. {"x-scaidrive-token": …, "x-scaiatlas-token": …}; never logged."""
        ...


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who a call is made for; becomes the call's metadata."""

    tenant_id: str
    request_id: str
    user_id: str | None = None
    # Asked only by the calls that touch data or model artefacts (`_unary(tokens=True)`), so
    # reads never wait for a token exchange.
    downstream: DownstreamTokenSource | None = field(default=None, repr=False, compare=False)


def open_channel(settings: Settings, target: str | None = None) -> grpc.aio.Channel:
    """One long-lived channel per process; call inside the running event loop."""
    target = target or settings.grpc_target
    options = [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        # gRPC's default reconnect backoff grows to 120 s, so after a coordinator restart the
        # gateway could answer 503 for two minutes; cap it so recovery takes seconds.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]
    if not settings.tls_enabled:
        return grpc.aio.insecure_channel(target, options=options)
    creds = grpc.ssl_channel_credentials(
        root_certificates=settings.tls_ca_path.read_bytes() if settings.tls_ca_path else None,
        private_key=settings.tls_key_path.read_bytes() if settings.tls_key_path else None,
        certificate_chain=settings.tls_cert_path.read_bytes() if settings.tls_cert_path else None,
    )
    return grpc.aio.secure_channel(target, creds, options=options)


class CoordinatorClient:
    """Typed, translated access to CoordinatorService and ClusterService."""

    def __init__(self, channel: grpc.aio.Channel, *, api_secret: str, timeout_s: float) -> None:
        self._channel = channel
        self._api_secret = api_secret
        self.timeout_s = timeout_s
        self._jobs = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        self._cluster = cluster_pb2_grpc.ClusterServiceStub(channel)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(None)

    def _metadata(
        self,
        ctx: CallContext,
        idempotency_key: str | None = None,
        downstream: Mapping[str, str] | None = None,
    ) -> tuple[tuple[str, str], ...]:
        md = [
            (metadata.API_SECRET, self._api_secret),
            (metadata.TENANT_ID, ctx.tenant_id),
            (metadata.REQUEST_ID, ctx.request_id),
        ]
        if ctx.user_id:
            md.append((metadata.USER_ID, ctx.user_id))
        if idempotency_key:
            md.append((metadata.IDEMPOTENCY_KEY, idempotency_key))
        if downstream:
            md.extend((k, v) for k, v in downstream.items() if v)
        return tuple(md)

    async def _unary(
        self,
        rpc: str,
        method: Any,
        request: Message,
        ctx: CallContext,
        *,
        idempotent: bool,
        tokens: bool = False,
        idempotency_key: str | None = None,
    ) -> Any:
        downstream = await ctx.downstream.metadata() if tokens and ctx.downstream else None
        deadline = time.monotonic() + self.timeout_s
        delay = _BACKOFF_START_S
        metadata = self._metadata(ctx, idempotency_key, downstream)
        while True:
            remaining = deadline - time.monotonic()
            try:
                return await method(request, timeout=max(remaining, 0.001), metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                retry = (
                    idempotent
                    and exc.code() is grpc.StatusCode.UNAVAILABLE
                    and deadline - time.monotonic() > delay * 2
                )
                if not retry:
                    raise translate_rpc_error(
                        exc,
                        rpc=rpc,
                        request_id=ctx.request_id,
                        tenant_id=ctx.tenant_id,
                        request=request,
                    ) from exc
            # Full jitter keeps many gateways from reconnecting in lockstep.
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _stream(
        self, rpc: str, method: Any, request: Message, ctx: CallContext
    ) -> AsyncIterator[Any]:
        # Streams have no deadline; they end with the job or when the consumer goes away.
        call = method(request, metadata=self._metadata(ctx))
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error(
                exc, rpc=rpc, request_id=ctx.request_id, tenant_id=ctx.tenant_id, request=request
            ) from exc
        finally:
            call.cancel()

    # --- jobs ---------------------------------------------------------------------------------

    async def submit_job(
        self, spec: Mapping[str, Any], ctx: CallContext, *, idempotency_key: str | None = None
    ) -> coordinator_pb2.SubmitJobResponse:
        """SubmitJob from the submission's JSON fields (never retried)."""
        req = dict_to_message(spec, coordinator_pb2.SubmitJobRequest)
        r: coordinator_pb2.SubmitJobResponse = await self._unary(
            "SubmitJob",
            self._jobs.SubmitJob,
            req,
            ctx,
            idempotent=False,
            tokens=True,
            idempotency_key=idempotency_key,
        )
        return r

    async def list_jobs(
        self,
        ctx: CallContext,
        *,
        statuses: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        page_size: int = 20,
        page_token: str = "",
        order_by: str = "",
        view: coordinator_pb2.JobView.ValueType = coordinator_pb2.JOB_VIEW_BASIC,
    ) -> coordinator_pb2.ListJobsResponse:
        """ListJobs (`statuses` by name, e.g. RUNNING)."""
        req = dict_to_message(
            {
                "status_filter": list(statuses),
                "label_filter": dict(labels or {}),
                "page_size": page_size,
                "page_token": page_token,
                "order_by": order_by,
            },
            coordinator_pb2.ListJobsRequest,
        )
        req.view = view
        r: coordinator_pb2.ListJobsResponse = await self._unary(
            "ListJobs", self._jobs.ListJobs, req, ctx, idempotent=True
        )
        return r

    async def get_job(
        self,
        job_id: str,
        ctx: CallContext,
        view: coordinator_pb2.JobView.ValueType = coordinator_pb2.JOB_VIEW_FULL,
    ) -> common_pb2.Job:
        """GetJob (the FULL view unless `view` says BASIC)."""
        req = coordinator_pb2.GetJobRequest(job_id=job_id, view=view)
        r: common_pb2.Job = await self._unary(
            "GetJob", self._jobs.GetJob, req, ctx, idempotent=True
        )
        return r

    async def cancel_job(
        self, job_id: str, ctx: CallContext, *, reason: str = ""
    ) -> coordinator_pb2.JobActionResponse:
        """CancelJob."""
        req = coordinator_pb2.CancelJobRequest(job_id=job_id, reason=reason)
        r: coordinator_pb2.JobActionResponse = await self._unary(
            "CancelJob", self._jobs.CancelJob, req, ctx, idempotent=False
        )
        return r

    async def pause_job(
        self, job_id: str, ctx: CallContext, *, save_checkpoint: bool = True
    ) -> coordinator_pb2.JobActionResponse:
        """PauseJob."""
        req = coordinator_pb2.PauseJobRequest(job_id=job_id, save_checkpoint=save_checkpoint)
        r: coordinator_pb2.JobActionResponse = await self._unary(
            "PauseJob", self._jobs.PauseJob, req, ctx, idempotent=False
        )
        return r

    async def resume_job(
        self, job_id: str, ctx: CallContext, *, checkpoint_id: str = ""
    ) -> coordinator_pb2.JobActionResponse:
        """ResumeJob (the latest checkpoint unless `checkpoint_id` names one)."""
        req = coordinator_pb2.ResumeJobRequest(job_id=job_id, checkpoint_id=checkpoint_id)
        r: coordinator_pb2.JobActionResponse = await self._unary(
            "ResumeJob", self._jobs.ResumeJob, req, ctx, idempotent=False, tokens=True
        )
        return r

    async def retry_job(
        self,
        job_id: str,
        options: Mapping[str, Any],
        ctx: CallContext,
        *,
        idempotency_key: str | None = None,
    ) -> coordinator_pb2.RetryJobResponse:
        """RetryJob with the retry body's JSON fields."""
        req = dict_to_message({"job_id": job_id, **options}, coordinator_pb2.RetryJobRequest)
        r: coordinator_pb2.RetryJobResponse = await self._unary(
            "RetryJob",
            self._jobs.RetryJob,
            req,
            ctx,
            idempotent=False,
            tokens=True,
            idempotency_key=idempotency_key,
        )
        return r

    # --- monitoring ---------------------------------------------------------------------------

    async def get_job_metrics(
        self, job_id: str, ctx: CallContext, *, max_points: int = 0
    ) -> coordinator_pb2.GetJobMetricsResponse:
        """GetJobMetrics (0 points = the coordinator's default)."""
        req = coordinator_pb2.GetJobMetricsRequest(job_id=job_id, max_points=max_points)
        r: coordinator_pb2.GetJobMetricsResponse = await self._unary(
            "GetJobMetrics", self._jobs.GetJobMetrics, req, ctx, idempotent=True
        )
        return r

    def stream_job_logs(
        self, req: coordinator_pb2.StreamJobLogsRequest, ctx: CallContext
    ) -> AsyncIterator[coordinator_pb2.StreamJobLogsResponse]:
        """StreamJobLogs; closing the iterator cancels the call."""
        return self._stream("StreamJobLogs", self._jobs.StreamJobLogs, req, ctx)

    def stream_job_metrics(
        self, req: coordinator_pb2.StreamJobMetricsRequest, ctx: CallContext
    ) -> AsyncIterator[coordinator_pb2.StreamJobMetricsResponse]:
        """StreamJobMetrics; closing the iterator cancels the call."""
        return self._stream("StreamJobMetrics", self._jobs.StreamJobMetrics, req, ctx)

    # --- evaluations and data -----------------------------------------------------------------

    async def submit_evaluation(
        self, spec: Mapping[str, Any], ctx: CallContext, *, idempotency_key: str | None = None
    ) -> coordinator_pb2.SubmitEvaluationResponse:
        """SubmitEvaluation from the request's JSON fields (never retried)."""
        req = dict_to_message(spec, coordinator_pb2.SubmitEvaluationRequest)
        r: coordinator_pb2.SubmitEvaluationResponse = await self._unary(
            "SubmitEvaluation",
            self._jobs.SubmitEvaluation,
            req,
            ctx,
            idempotent=False,
            tokens=True,
            idempotency_key=idempotency_key,
        )
        return r

    async def get_evaluation(
        self, evaluation_id: str, ctx: CallContext
    ) -> coordinator_pb2.Evaluation:
        """GetEvaluation."""
        req = coordinator_pb2.GetEvaluationRequest(evaluation_id=evaluation_id)
        r: coordinator_pb2.Evaluation = await self._unary(
            "GetEvaluation", self._jobs.GetEvaluation, req, ctx, idempotent=True
        )
        return r

    async def list_evaluations(
        self, ctx: CallContext, *, job_id: str = "", page_size: int = 20, page_token: str = ""
    ) -> coordinator_pb2.ListEvaluationsResponse:
        """ListEvaluations (of one job when `job_id` is set)."""
        req = coordinator_pb2.ListEvaluationsRequest(
            job_id=job_id, page_size=page_size, page_token=page_token
        )
        r: coordinator_pb2.ListEvaluationsResponse = await self._unary(
            "ListEvaluations", self._jobs.ListEvaluations, req, ctx, idempotent=True
        )
        return r

    async def validate_data(
        self, source: Mapping[str, Any], ctx: CallContext
    ) -> coordinator_pb2.ValidateDataResponse:
        """ValidateData from the request's JSON fields (reads only, so retried)."""
        req = dict_to_message(source, coordinator_pb2.ValidateDataRequest)
        r: coordinator_pb2.ValidateDataResponse = await self._unary(
            "ValidateData", self._jobs.ValidateData, req, ctx, idempotent=True, tokens=True
        )
        return r

    async def get_data_cache(
        self, node_id: str, ctx: CallContext
    ) -> coordinator_pb2.GetDataCacheResponse:
        """GetDataCache."""
        req = coordinator_pb2.GetDataCacheRequest(node_id=node_id)
        r: coordinator_pb2.GetDataCacheResponse = await self._unary(
            "GetDataCache", self._jobs.GetDataCache, req, ctx, idempotent=True, tokens=True
        )
        return r

    # --- cluster ------------------------------------------------------------------------------

    async def get_cluster_status(self, ctx: CallContext) -> cluster_pb2.ClusterStatus:
        """GetClusterStatus."""
        req = cluster_pb2.GetClusterStatusRequest()
        r: cluster_pb2.ClusterStatus = await self._unary(
            "GetClusterStatus", self._cluster.GetClusterStatus, req, ctx, idempotent=True
        )
        return r

    async def list_nodes(
        self, ctx: CallContext, *, status: str = "", page_size: int = 20, page_token: str = ""
    ) -> cluster_pb2.ListNodesResponse:
        """ListNodes (`status` by name, e.g. DRAINING; empty = all)."""
        req = dict_to_message(
            {"status_filter": status, "page_size": page_size, "page_token": page_token},
            cluster_pb2.ListNodesRequest,
        )
        r: cluster_pb2.ListNodesResponse = await self._unary(
            "ListNodes", self._cluster.ListNodes, req, ctx, idempotent=True
        )
        return r

    async def get_node(self, node_id: str, ctx: CallContext) -> cluster_pb2.Node:
        """GetNode."""
        req = cluster_pb2.GetNodeRequest(node_id=node_id)
        r: cluster_pb2.Node = await self._unary(
            "GetNode", self._cluster.GetNode, req, ctx, idempotent=True
        )
        return r

    async def drain_node(
        self, node_id: str, options: Mapping[str, Any], ctx: CallContext
    ) -> cluster_pb2.Node:
        """DrainNode with the drain body's JSON fields."""
        req = dict_to_message({"node_id": node_id, **options}, cluster_pb2.DrainNodeRequest)
        r: cluster_pb2.Node = await self._unary(
            "DrainNode", self._cluster.DrainNode, req, ctx, idempotent=False
        )
        return r

    async def enable_node(self, node_id: str, ctx: CallContext) -> cluster_pb2.Node:
        """EnableNode."""
        req = cluster_pb2.EnableNodeRequest(node_id=node_id)
        r: cluster_pb2.Node = await self._unary(
            "EnableNode", self._cluster.EnableNode, req, ctx, idempotent=False
        )
        return r

    async def get_queue_status(
        self, queue_name: str, ctx: CallContext
    ) -> cluster_pb2.GetQueueStatusResponse:
        """GetQueueStatus."""
        req = cluster_pb2.GetQueueStatusRequest(queue_name=queue_name)
        r: cluster_pb2.GetQueueStatusResponse = await self._unary(
            "GetQueueStatus", self._cluster.GetQueueStatus, req, ctx, idempotent=True
        )
        return r
