"""ClusterService: nodes, drain/enable and queues."""

from __future__ import annotations

import time
from collections import Counter

import grpc

from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.executors.inventory import slot_memory_bytes
from scaimind.coordinator.jobs.manager import JobManager
from scaimind.coordinator.messages import (
    RUNNING,
    node_status_name,
    status_name,
    timestamp,
)
from scaimind.coordinator.rpc.auth import Auth, Ctx, unary
from scaimind.coordinator.rpc.paging import page_size
from scaimind.coordinator.status import StatusError, invalid
from scaimind.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
)

COORDINATOR_VERSION = "scaimind-reference-coordinator/0.1.0"
_OTHER_TENANT = "(another tenant)"


class ClusterServicer(cluster_pb2_grpc.ClusterServiceServicer):
    """Nodes, drain/enable and queues."""

    def __init__(self, manager: JobManager, config: CoordinatorConfig) -> None:
        self.m = manager
        self.auth = Auth(config)
        self.cluster_name = config.cluster_name

    def _node(self, node_id: str, tenant_id: str) -> cluster_pb2.Node:
        spec = next((n for n in self.m.nodes if n.node_id == node_id), None)
        if spec is None:
            raise StatusError(grpc.StatusCode.NOT_FOUND, f"node {node_id} not found")
        slots = self.m.slots_of(node_id)
        node = cluster_pb2.Node(
            node_id=spec.node_id,
            hostname=spec.hostname,
            status=self.m.node_status(node_id),  # type: ignore[arg-type]
            gpu_type=spec.gpu_type,
            gpu_count=spec.gpu_count,
            gpus_available=sum(1 for j in slots if j is None),
            labels=spec.labels,
            drain_reason=self.m.drain_reason(node_id),
        )
        node.last_heartbeat.CopyFrom(timestamp(time.time()))
        memory = slot_memory_bytes(spec)
        # Once per job on the node (in slot order), not once per slot.
        share = Counter(j for j in slots if j is not None)
        stats = {job_id: self.m.process_stats(job_id) for job_id in share}
        mine = {j for j in share if self.m.reads.get_job(j, tenant_id) is not None}
        for index, job_id in enumerate(slots):
            gpu = node.gpus.add(index=index, memory_total_bytes=memory)
            if job_id is None:
                continue
            job_stats, slots_of_job = stats[job_id], share[job_id]
            gpu.utilization_percent = min(100.0, job_stats.get("cpu_percent", 0.0) / slots_of_job)
            gpu.memory_used_bytes = int(job_stats.get("memory_used_bytes", 0.0) / slots_of_job)
            # Job ids of other tenants are not shown; the slot is still visibly in use.
            gpu.job_id = job_id if job_id in mine else _OTHER_TENANT
        node.running_job_ids.extend(j for j in share if j in mine)
        return node

    def _measured_percent(self) -> float:
        """Sum over all slots of their measured utilisation percent."""
        busy = 0.0
        for spec in self.m.nodes:
            slots = self.m.slots_of(spec.node_id)
            for job_id in {j for j in slots if j is not None}:
                share = sum(1 for j in slots if j == job_id)
                cpu = self.m.process_stats(job_id).get("cpu_percent", 0.0)
                busy += min(100.0 * share, cpu)
        return busy

    @unary
    async def GetClusterStatus(
        self, request: cluster_pb2.GetClusterStatusRequest, context: Ctx
    ) -> cluster_pb2.ClusterStatus:
        self.auth.caller(context)
        status = cluster_pb2.ClusterStatus(
            cluster_name=self.cluster_name,
            total_nodes=len(self.m.nodes),
            coordinator_version=COORDINATOR_VERSION,
        )
        by_type: dict[str, list[int]] = {}
        total = available = allocated = 0
        for spec in self.m.nodes:
            node_status = self.m.node_status(spec.node_id)
            name = node_status_name(node_status)
            status.nodes_by_status[name] = status.nodes_by_status[name] + 1
            slots = self.m.slots_of(spec.node_id)
            free = sum(1 for j in slots if j is None)
            total += len(slots)
            allocated += len(slots) - free
            # Free slots on a drained node cannot take work, so they are not available.
            usable = free if node_status == cluster_pb2.NODE_STATUS_ONLINE else 0
            available += usable
            t = by_type.setdefault(spec.gpu_type, [0, 0])
            t[0] += len(slots)
            t[1] += usable
        status.total_gpus, status.available_gpus, status.allocated_gpus = (
            total,
            available,
            allocated,
        )
        for gpu_type, (t_total, t_avail) in sorted(by_type.items()):
            status.gpu_types.add(gpu_type=gpu_type, total=t_total, available=t_avail)
        counts = self.m.reads.count_by_status()
        for number, count in counts.items():
            status.jobs_by_status[status_name(number)] = count
        status.running_jobs = sum(v for k, v in counts.items() if k in RUNNING)
        status.queued_jobs = counts.get(common_pb2.JOB_STATUS_QUEUED, 0) + counts.get(
            common_pb2.JOB_STATUS_PENDING, 0
        )
        # Measured, not allocated: the mean over every slot of its job process's CPU share
        # (the same figure as each node's gpus[].utilization_percent; free slots count as 0).
        status.utilization.gpu_percent = self._measured_percent() / total if total else 0.0
        status.updated_at.CopyFrom(timestamp(time.time()))
        return status

    @unary
    async def ListNodes(
        self, request: cluster_pb2.ListNodesRequest, context: Ctx
    ) -> cluster_pb2.ListNodesResponse:
        caller = self.auth.caller(context)
        size = page_size(request.page_size)
        wanted = request.status_filter.strip().upper().removeprefix("NODE_STATUS_")
        if wanted and "NODE_STATUS_" + wanted not in cluster_pb2.NodeStatus.keys():  # noqa: SIM118
            raise invalid(f"status_filter: unknown node status {request.status_filter!r}")
        ids = [
            n.node_id
            for n in self.m.nodes
            if not wanted or node_status_name(self.m.node_status(n.node_id)) == wanted
        ]
        try:
            start = int(request.page_token or "0")
        except ValueError as e:
            raise invalid("page_token: invalid") from e
        if start < 0:
            raise invalid("page_token: invalid")
        resp = cluster_pb2.ListNodesResponse(total_count=len(ids))
        resp.nodes.extend(self._node(i, caller.tenant_id) for i in ids[start : start + size])
        if start + size < len(ids):
            resp.next_page_token = str(start + size)
        return resp

    @unary
    async def GetNode(self, request: cluster_pb2.GetNodeRequest, context: Ctx) -> cluster_pb2.Node:
        caller = self.auth.caller(context)
        return self._node(request.node_id, caller.tenant_id)

    @unary
    async def DrainNode(
        self, request: cluster_pb2.DrainNodeRequest, context: Ctx
    ) -> cluster_pb2.Node:
        caller = self.auth.caller(context)
        self.m.drain(request.node_id, request.force, request.reason or "drained by an operator")
        return self._node(request.node_id, caller.tenant_id)

    @unary
    async def EnableNode(
        self, request: cluster_pb2.EnableNodeRequest, context: Ctx
    ) -> cluster_pb2.Node:
        caller = self.auth.caller(context)
        self.m.enable(request.node_id)
        return self._node(request.node_id, caller.tenant_id)

    @unary
    async def GetQueueStatus(
        self, request: cluster_pb2.GetQueueStatusRequest, context: Ctx
    ) -> cluster_pb2.GetQueueStatusResponse:
        caller = self.auth.caller(context)
        self.m.schedule()
        view = self.m.queue_view()
        running = self.m.running_in_queue()
        # Only queues the caller has work in (and the default) are listed: another tenant's
        # queue names are theirs; its load shows only as the numbers of a shared queue.
        mine = set(self.m.running_in_queue(caller.tenant_id))
        mine |= {
            name
            for name, ids in view.items()
            if any(self.m.reads.get_job(j, caller.tenant_id) is not None for j in ids)
        }
        names = sorted(mine | {"default"})
        if request.queue_name:
            names = [request.queue_name]
        resp = cluster_pb2.GetQueueStatusResponse()
        now = time.time()
        for name in names:
            ids = view.get(name, [])
            q = resp.queues.add(queue_name=name, depth=len(ids), running=running.get(name, 0))
            oldest = 0.0
            for position, job_id in enumerate(ids, start=1):
                row = self.m.reads.get_job(job_id)
                if row is None:
                    continue
                waited = now - row.queued_at
                oldest = max(oldest, waited)
                if row.tenant_id != caller.tenant_id:
                    continue
                q.jobs.add(
                    job_id=job_id,
                    name=row.name,
                    position=position,
                    priority=row.priority,
                    gpu_count=row.gpu_count,
                    gpu_type=row.gpu_type,
                    wait_seconds=int(waited),
                    estimated_start_seconds=self.m.estimate(job_id),
                )
            q.oldest_wait_seconds = int(oldest)
            q.estimated_wait_seconds = self.m.estimate(ids[-1]) if ids else 0
            resp.total_depth += q.depth
        return resp
