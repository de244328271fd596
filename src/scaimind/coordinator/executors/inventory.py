"""Nodes and slots of the reference coordinator, and per-process resource sampling.

The default inventory is this machine: one node `node-local` whose slots are its CPU cores, with
gpu_type `CPU`. An inventory file declares simulated nodes instead (e.g. two nodes of 8×
`A100-80GB`); simulated slots are bookkeeping only — every job still runs as a process on this
machine, whatever node it was placed on.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

CPU = "CPU"


class InventoryError(ValueError):
    """The inventory file is unreadable or malformed."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node as declared in the inventory."""

    node_id: str
    hostname: str
    gpu_type: str
    gpu_count: int
    labels: dict[str, str] = field(default_factory=dict)


def default_inventory() -> list[NodeSpec]:
    """This machine as one CPU node."""
    return [NodeSpec("node-local", socket.gethostname(), CPU, os.cpu_count() or 1, {})]


def load_inventory(path: Path | None) -> list[NodeSpec]:
    """Nodes from a JSON file (`[{node_id, hostname, gpu_type, gpu_count, labels}]` or
    `{"nodes": [...]}`), or the default inventory."""
    if path is None:
        return default_inventory()
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InventoryError(f"cannot read inventory {path}: {e}") from e
    items = raw.get("nodes") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise InventoryError(f"inventory {path}: expected a non-empty list of nodes")
    nodes: list[NodeSpec] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InventoryError(f"inventory {path}: nodes[{i}] is not an object")
        node_id = item.get("node_id")
        gpu_count = item.get("gpu_count")
        labels = item.get("labels") or {}
        if not isinstance(node_id, str) or not node_id:
            raise InventoryError(f"inventory {path}: nodes[{i}].node_id is required")
        if not isinstance(gpu_count, int) or gpu_count < 1:
            raise InventoryError(f"inventory {path}: nodes[{i}].gpu_count must be an integer >= 1")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise InventoryError(f"inventory {path}: nodes[{i}].labels must map strings to strings")
        if any(n.node_id == node_id for n in nodes):
            raise InventoryError(f"inventory {path}: duplicate node_id {node_id!r}")
        nodes.append(
            NodeSpec(
                node_id=node_id,
                hostname=str(item.get("hostname") or node_id),
                gpu_type=str(item.get("gpu_type") or CPU),
                gpu_count=gpu_count,
                labels={str(k): v for k, v in labels.items()},
            )
        )
    return nodes


def slot_memory_bytes(node: NodeSpec) -> int:
    """Memory of one slot: the size in the gpu_type name (A100-80GB), else RAM / slots."""
    match = re.search(r"(\d+)\s*GB", node.gpu_type, re.IGNORECASE)
    if match:
        return int(match.group(1)) * 1024**3
    return _mem_total_bytes() // max(node.gpu_count, 1)


def _mem_total_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_start_marker(pid: int) -> str:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), '' when gone.

    Stored with the pid so a restarted coordinator never signals an unrelated process that
    reused the pid.
    """
    stat = _read_stat(pid)
    return stat[19] if stat else ""


def _read_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; the fields after it are fixed.
    return data[data.rfind(")") + 2 :].split()


class ProcessSampler:
    """CPU% and RSS of processes from /proc, as deltas between successive samples."""

    def __init__(self) -> None:
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._last: dict[int, tuple[float, int]] = {}
        self._cached: dict[int, tuple[float, float, int]] = {}

    def sample(self, pid: int) -> tuple[float, int]:
        """(cpu_percent since the previous sample, rss bytes); (0, 0) for a gone process."""
        now = time.monotonic()
        cached = self._cached.get(pid)
        # Reading /proc is cheap, but many callers (GetJob, node listings) may ask at once.
        if cached and now - cached[0] < 0.5:
            return cached[1], cached[2]
        stat = _read_stat(pid)
        if stat is None:
            self._last.pop(pid, None)
            self._cached.pop(pid, None)
            return 0.0, 0
        cpu_ticks = int(stat[11]) + int(stat[12])
        rss = int(stat[21]) * self._page
        prev = self._last.get(pid)
        self._last[pid] = (now, cpu_ticks)
        percent = 0.0
        if prev and now > prev[0]:
            percent = 100.0 * (cpu_ticks - prev[1]) / self._ticks / (now - prev[0])
        elif cached:
            percent = cached[1]
        self._cached[pid] = (now, percent, rss)
        return percent, rss

    def forget(self, pid: int) -> None:
        """Drop the history of an exited process."""
        self._last.pop(pid, None)
        self._cached.pop(pid, None)
