"""The scheduler: which queued job starts where, preemption, wait estimates, node states."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import Counter

from scaimind.coordinator.executors.base import (
    Inventory,
)
from scaimind.coordinator.executors.inventory import NodeSpec
from scaimind.coordinator.jobs.core import JobCore
from scaimind.coordinator.jobs.rules import (
    eligible_nodes,
)
from scaimind.coordinator.jobs.runtime import (
    PREEMPT,
    JobRuntime,
    L,
)
from scaimind.coordinator.messages import (
    S,
)
from scaimind.coordinator.persistence.records import JobRecord
from scaimind.v1 import cluster_pb2

log = logging.getLogger(__name__)

# Assumed duration of a job when nothing has completed yet (for wait estimates only).
_DEFAULT_JOB_SECONDS = 60.0


class Scheduling(JobCore):
    """Placement of queued jobs on free slots."""

    def apply_inventory(self, inventory: Inventory) -> None:
        """New nodes get slots; a node that is gone takes no new work (OFFLINE while its jobs'
        runs end on their own) and leaves the list once it holds no job."""
        current = {n.node_id for n in inventory.nodes}
        for node in inventory.nodes:
            if node.node_id not in self._node_by_id:
                self.nodes.append(node)
                self._node_by_id[node.node_id] = node
                self._slots[node.node_id] = [None] * node.gpu_count
                log.info("node %s joined (%d× %s)", node.node_id, node.gpu_count, node.gpu_type)
        for node_id in set(self._node_by_id) - current:
            if all(j is None for j in self._slots[node_id]):
                self.nodes.remove(self._node_by_id.pop(node_id))
                del self._slots[node_id]
        self._offline = set(self._node_by_id) - current
        self._busy = set(inventory.busy) & set(self._node_by_id)

    # ---- scheduler --------------------------------------------------------------------------

    def node_status(self, node_id: str) -> int:
        """ONLINE, DRAINING (drained, still running work), DRAINED or OFFLINE (gone)."""
        if node_id in self._offline:
            return cluster_pb2.NODE_STATUS_OFFLINE
        if node_id not in self._drained:
            return cluster_pb2.NODE_STATUS_ONLINE
        busy = any(j is not None for j in self._slots[node_id])
        return cluster_pb2.NODE_STATUS_DRAINING if busy else cluster_pb2.NODE_STATUS_DRAINED

    def slots_of(self, node_id: str) -> list[str | None]:
        """Job id per slot of a node (None when free)."""
        return list(self._slots[node_id])

    def drain_reason(self, node_id: str) -> str:
        """Why a node is drained ('' when online)."""
        return self._drained.get(node_id, "")

    def schedule(self) -> None:
        """One scheduler pass: expire, place, preempt, estimate. Synchronous and cheap."""
        if self._closing or self._in_pass:
            return
        self._in_pass = True
        try:
            self._schedule_pass()
        finally:
            self._in_pass = False

    def _free_slots(self) -> dict[str, list[int]]:
        return {
            nid: [i for i, j in enumerate(slots) if j is None]
            for nid, slots in self._slots.items()
            if nid not in self._drained and nid not in self._offline and nid not in self._busy
        }

    def _schedule_pass(self) -> None:
        now = time.time()
        free = self._free_slots()
        blocked: set[tuple[str, str]] = set()
        queued = self.store.jobs_in_status([S.JOB_STATUS_QUEUED])
        waiting: list[tuple[JobRecord, list[NodeSpec]]] = []
        for row in queued:
            job_id = row.job_id
            if row.max_queue_wait > 0 and now - row.queued_at > row.max_queue_wait:
                why = f"not started within max_queue_wait_seconds={int(row.max_queue_wait)}"
                self._fail_queued(job_id, "QUEUE_TIMEOUT", why)
                continue
            req = self.request_of(row)
            candidates = eligible_nodes(req.resource_config, req.scheduling_config, self.nodes)
            if len(candidates) < row.num_nodes:
                # Only after an inventory change (submit validates this): it can never start.
                why = "no longer fits the inventory (gpu_type, node_selector, node_affinity)"
                self._fail_queued(job_id, "UNSCHEDULABLE", why)
                continue
            due = row.start_after <= now
            if not (due and self._try_start(row, candidates, free, blocked)):
                waiting.append((row, candidates))
        self._estimate(waiting)

    def _fail_queued(self, job_id: str, code: str, why: str) -> None:
        """A queued job that can never start (or waited too long) → FAILED with `code`."""
        self._transition(
            job_id,
            [S.JOB_STATUS_QUEUED],
            S.JOB_STATUS_FAILED,
            {"error_code": code, "error_message": why},
            why,
            L.LOG_LEVEL_ERROR,
        )

    def _try_start(
        self,
        row: JobRecord,
        candidates: list[NodeSpec],
        free: dict[str, list[int]],
        blocked: set[tuple[str, str]],
    ) -> bool:
        """Start a due job if it fits now; else it may block its queue and preempt for itself."""
        key = (row.queue_name, row.gpu_type)
        if key in blocked:
            return False
        placement = self._place(row, candidates, free)
        if placement is not None:
            self._start(row, placement)
            return True
        closed = self._drained.keys() | self._offline | self._busy
        online = [n for n in candidates if n.node_id not in closed]
        if len(online) >= row.num_nodes:
            # It could run here once slots free up: keep its place (no backfill behind it).
            blocked.add(key)
            self._maybe_preempt(row, online, free)
        return False

    def _place(
        self, row: JobRecord, candidates: list[NodeSpec], free: dict[str, list[int]]
    ) -> list[tuple[str, int]] | None:
        need = max(int(row.gpu_count), 1)
        fits = [n for n in candidates if len(free.get(n.node_id, [])) >= need]
        if len(fits) < row.num_nodes:
            return None
        # Best fit: the fullest nodes first keeps big holes for big jobs.
        fits.sort(key=lambda n: (len(free[n.node_id]), n.node_id))
        chosen: list[tuple[str, int]] = []
        for node in fits[: row.num_nodes]:
            take = free[node.node_id][:need]
            del free[node.node_id][:need]
            chosen.extend((node.node_id, i) for i in take)
        return chosen

    def _maybe_preempt(
        self, row: JobRecord, online: list[NodeSpec], free: dict[str, list[int]]
    ) -> None:
        need = max(int(row.gpu_count), 1)
        ids = {n.node_id for n in online}
        # Slots of jobs already stopping count as free: they are about to be released.
        projected = {nid: len(free.get(nid, [])) for nid in ids}
        victims: list[tuple[int, float, JobRuntime]] = []
        for rt in self._runtimes.values():
            on_nodes = [(nid, i) for nid, i in rt.slots if nid in ids]
            if not on_nodes:
                continue
            if rt.stop_reason is not None:
                for nid, _ in on_nodes:
                    projected[nid] += 1
                continue
            vrow = self.store.get_job(rt.job_id)
            if vrow is None or not vrow.preemptible or vrow.priority >= row.priority:
                continue
            victims.append((int(vrow.priority), -rt.started_mono, rt))

        def fits() -> bool:
            return sum(1 for nid in ids if projected[nid] >= need) >= int(row.num_nodes)

        if fits():
            return
        chosen: list[JobRuntime] = []
        for _, _, rt in sorted(victims, key=lambda v: (v[0], v[1])):
            chosen.append(rt)
            for nid, _ in rt.slots:
                if nid in ids:
                    projected[nid] += 1
            if fits():
                break
        else:
            return
        for rt in chosen:
            self.log(
                rt.job_id,
                f"preempted by job {row.job_id} (priority {row.priority}); checkpointing",
                L.LOG_LEVEL_WARNING,
            )
            self._request_stop(rt, PREEMPT, graceful=True)

    def _estimate(self, waiting: list[tuple[JobRecord, list[NodeSpec]]]) -> None:
        """Seconds until each waiting job (with its eligible nodes) likely starts, by simulating
        the queue on the slots."""
        runtimes = self.store.recent_runtimes(S.JOB_STATUS_COMPLETED)
        typical = statistics.median(runtimes) if runtimes else _DEFAULT_JOB_SECONDS
        free_at: dict[str, list[float]] = {}
        for nid, slots in self._slots.items():
            if nid in self._drained or nid in self._offline:
                continue
            times = []
            for job_id in slots:
                rt = self._runtimes.get(job_id) if job_id else None
                times.append(rt.remaining_seconds(typical) if rt else 0.0)
            free_at[nid] = times
        now = time.time()
        estimates: dict[str, int] = {}
        view: dict[str, list[str]] = {}
        for row, candidates in waiting:
            view.setdefault(row.queue_name, []).append(row.job_id)
            need = max(int(row.gpu_count), 1)
            nodes = [n.node_id for n in candidates if n.node_id in free_at]
            options = []
            for nid in nodes:
                times = sorted(free_at[nid])
                if len(times) >= need:
                    options.append((times[need - 1], nid))
            options.sort()
            if len(options) < row.num_nodes:
                estimates[row.job_id] = 0
                continue
            chosen = options[: row.num_nodes]
            start = max(max(t for t, _ in chosen), row.start_after - now, 0.0)
            for _, nid in chosen:
                times = sorted(free_at[nid])
                times[:need] = [start + typical] * need
                free_at[nid] = times
            estimates[row.job_id] = math.ceil(start)
        self._estimates = estimates
        self._queue_view = view

    def queue_view(self) -> dict[str, list[str]]:
        """Queue name → waiting job ids in order, from the last scheduler pass."""
        return self._queue_view

    def estimate(self, job_id: str) -> int:
        """Estimated seconds until a queued job starts."""
        return self._estimates.get(job_id, 0)

    def running_in_queue(self, tenant_id: str | None = None) -> dict[str, int]:
        """Queue name → number of placed jobs (of one tenant, when given)."""
        return dict(
            Counter(
                rt.queue_name
                for rt in self._runtimes.values()
                if tenant_id is None or rt.tenant_id == tenant_id
            )
        )
