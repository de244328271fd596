"""The LRU dataset cache that PREPARING copies a job's sources into.

Layout: `<data_dir>/dataset-cache/<node_id>/<digest>/<file name>`; the entries (dataset_uri,
node_id, size, rows, status, times, hits) live in `ops.db`, so the cache survives restarts.

Choices (documented for operators):
- Entries are per tenant (a tenant's cached copy is never served to another tenant, and
  GetDataCache lists only the caller's entries); `total_size_bytes` and `capacity_bytes` are
  those of the whole cache so operators can see how full it is.
- The capacity (`dataset_cache_capacity_bytes`) covers the whole cache directory: simulated
  nodes share one local disk. A job's data is cached for its first node (where its process runs).
- A hit is an entry whose source still has the size and mtime recorded when it was copied;
  otherwise the source is copied again (a miss). hit_rate = hits / (hits + misses) per tenant.
- Before each copy, least recently used entries are evicted until the cache has room for it;
  a source larger than the whole capacity is refused before anything is copied. An entry used
  by a job whose process is still running is never evicted (so while such jobs run the cache
  may stay above its capacity).
- Sources are opened once, with the path policy re-checked on the open file (paths.py), and
  copied from that open file; copies are mode 0600 in 0700 directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from scaimind.coordinator.data.paths import TenantFiles
from scaimind.coordinator.data.sources import LocalSource
from scaimind.coordinator.messages import set_time
from scaimind.coordinator.persistence.ops_store import OpsStore
from scaimind.coordinator.persistence.records import CacheEntry
from scaimind.coordinator.status import not_found
from scaimind.v1 import coordinator_pb2

log = logging.getLogger(__name__)

C = coordinator_pb2.CacheEntryStatus
_COPY_CHUNK = 1024 * 1024


class DatasetCache:
    """Copies sources into the cache, serves hits, evicts LRU entries, lists entries."""

    def __init__(
        self,
        ops: OpsStore,
        root: Path,
        capacity_bytes: int,
        is_active: Callable[[str], bool],
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.ops = ops
        self.root = root
        self.capacity = capacity_bytes
        # Owner of the cached files (the sandbox's user when jobs run as another user).
        self.owner = owner
        self._is_active = is_active
        # (tenant, uri, node) -> jobs that read the entry; in memory because after a restart no
        # process is running, so nothing is in use.
        self._users: dict[tuple[str, str, str], set[str]] = {}
        # Copies run in a thread so the event loop keeps serving; one fetch at a time, since two
        # jobs missing the same entry would otherwise copy into the same file.
        self._fetching = asyncio.Lock()
        self._recover()

    def _recover(self) -> None:
        # A copy interrupted by a crash is incomplete; an entry whose file is gone is useless.
        for row in self.ops.cache_entries():
            if row.status != C.CACHE_ENTRY_STATUS_READY or not Path(row.path).is_file():
                self._remove(row)

    async def fetch(
        self,
        tenant_id: str,
        node_id: str,
        job_id: str,
        sources: Iterable[LocalSource],
        files: TenantFiles,
    ) -> list[LocalSource]:
        """PREPARING: the cached copy of each source (copied now on a miss)."""
        async with self._fetching:
            return [
                await self._fetch_one(tenant_id, node_id, job_id, src, files) for src in sources
            ]

    async def _fetch_one(
        self, tenant_id: str, node_id: str, job_id: str, src: LocalSource, files: TenantFiles
    ) -> LocalSource:
        uri = src.uri or str(src.path)
        # Opened (and re-checked against the path policy) once; size, copy and rows all come
        # from this one open file, so a swapped symlink cannot change what is cached.
        opened = await asyncio.to_thread(_open_source, files, src)
        fd, st = opened
        try:
            key = (tenant_id, uri, node_id)
            self._users.setdefault(key, set()).add(job_id)
            now = time.time()
            row = self.ops.cache_entry(*key)
            if (
                row is not None
                and row.status == C.CACHE_ENTRY_STATUS_READY
                and row.source_size == st.st_size
                and row.source_mtime_ns == st.st_mtime_ns
                and _size_of(Path(row.path)) == row.size_bytes
            ):
                self.ops.touch_cache_entry(*key, now)
                self.ops.count_access(tenant_id, hit=True)
                return LocalSource(Path(row.path), src.format, list(src.columns), uri)
            if st.st_size > self.capacity:
                raise OSError(
                    f"data source {uri} ({st.st_size} bytes) is larger than the dataset cache "
                    f"({self.capacity} bytes); the operator can raise its capacity"
                )
            # Room first, then the copy: the cache never grows past its capacity by a copy
            # (only entries that running jobs still read can keep it above for a while).
            self.evict(reserve=st.st_size)
            digest = hashlib.sha256(f"{tenant_id}\0{uri}".encode()).hexdigest()[:24]
            dest = self.root / node_id / digest / (src.path.name or "data")
            entry = {
                "tenant_id": tenant_id,
                "dataset_uri": uri,
                "node_id": node_id,
                "path": str(dest),
                "size_bytes": 0,
                "num_rows": 0,
                "status": C.CACHE_ENTRY_STATUS_LOADING,
                "source_size": st.st_size,
                "source_mtime_ns": st.st_mtime_ns,
                "cached_at": now,
                "last_accessed_at": now,
                "hit_count": 0,
            }
            self.ops.put_cache_entry(entry)
            self.ops.count_access(tenant_id, hit=False)
            try:
                size, rows = await asyncio.to_thread(
                    _copy_in, fd, dest, src.format, self.root, self.owner
                )
            except OSError as e:
                self.ops.put_cache_entry({**entry, "status": C.CACHE_ENTRY_STATUS_FAILED})
                raise OSError(
                    f"cannot copy data source {uri} into the dataset cache ({e.strerror or e})"
                ) from e
            self.ops.put_cache_entry(
                {
                    **entry,
                    "size_bytes": size,
                    "num_rows": rows,
                    "status": C.CACHE_ENTRY_STATUS_READY,
                }
            )
            return LocalSource(dest, src.format, list(src.columns), uri)
        finally:
            os.close(fd)

    def in_use(self, key: tuple[str, str, str]) -> bool:
        """True while a job that reads the entry has a running process."""
        users = self._users.get(key)
        if not users:
            return False
        users.intersection_update({j for j in users if self._is_active(j)})
        return bool(users)

    def evict(self, reserve: int = 0) -> list[str]:
        """Drop least recently used entries until the cache (plus `reserve` bytes about to be
        copied) fits; returns the evicted URIs."""
        rows = self.ops.cache_entries()
        total = sum(int(r.size_bytes) for r in rows) + reserve
        evicted: list[str] = []
        for row in rows:
            if total <= self.capacity:
                break
            key = (row.tenant_id, row.dataset_uri, row.node_id)
            if row.status == C.CACHE_ENTRY_STATUS_LOADING or self.in_use(key):
                continue
            self._remove(row)
            total -= int(row.size_bytes)
            evicted.append(row.dataset_uri)
            log.info("dataset cache: evicted %s on %s", row.dataset_uri, row.node_id)
        return evicted

    def _remove(self, row: CacheEntry) -> None:
        path = Path(row.path)
        self.ops.delete_cache_entry(row.tenant_id, row.dataset_uri, row.node_id)
        # Only the entry's own directory under the cache root is removed.
        if path.parent.parent.parent == self.root:
            shutil.rmtree(path.parent, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()

    def listing(
        self, tenant_id: str, node_id: str, known_nodes: Iterable[str]
    ) -> coordinator_pb2.GetDataCacheResponse:
        """GetDataCache: the tenant's entries (one node or all) and the cache's totals."""
        if node_id and node_id not in set(known_nodes):
            raise not_found(f"node {node_id} not found")
        scope = node_id or None
        resp = coordinator_pb2.GetDataCacheResponse(capacity_bytes=self.capacity)
        for row in reversed(self.ops.cache_entries(tenant_id, scope)):
            entry = resp.entries.add(
                dataset_uri=row.dataset_uri,
                node_id=row.node_id,
                size_bytes=row.size_bytes,
                num_rows=row.num_rows,
                status=row.status,
                hit_count=row.hit_count,
            )
            set_time(entry.cached_at, row.cached_at)
            set_time(entry.last_accessed_at, row.last_accessed_at)
        resp.total_size_bytes = sum(int(r.size_bytes) for r in self.ops.cache_entries(None, scope))
        hits, misses = self.ops.cache_stats(tenant_id)
        resp.hit_rate = hits / (hits + misses) if hits + misses else 0.0
        return resp


def _open_source(files: TenantFiles, src: LocalSource) -> tuple[int, os.stat_result]:
    """The source opened read-only and re-checked, with its fstat (runs in a thread)."""
    with files.open_file(src.path, src.field, src.uri) as fd:
        # The context closes its fd; the copy needs one that outlives it.
        dup = os.dup(fd)
    return dup, os.fstat(dup)


def _copy_in(
    fd: int, dest: Path, fmt: str, root: Path, owner: tuple[int, int] | None
) -> tuple[int, int]:
    """Copy the open source to `dest` atomically (mode 0600); its size and rows (a thread)."""
    for directory in (root, dest.parent.parent, dest.parent):
        directory.mkdir(mode=0o700, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(out, "wb") as fout:
        os.lseek(fd, 0, os.SEEK_SET)
        while chunk := os.read(fd, _COPY_CHUNK):
            fout.write(chunk)
    os.chmod(tmp, 0o600)
    if owner is not None:
        # The sandbox's user reads it through a read-only bind; nobody else can.
        os.chown(tmp, *owner)
    tmp.replace(dest)
    return dest.stat().st_size, count_rows(dest, fmt)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def count_rows(path: Path, fmt: str) -> int:
    """Records in a cached file (cheap: lines, CSV rows or JSON array items; 0 when unknown)."""
    try:
        if fmt in ("jsonl", "text", ""):
            with path.open("rb") as f:
                return sum(1 for line in f if line.strip())
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8", errors="replace") as f:
                return max(sum(1 for row in csv.reader(f) if row) - 1, 0)
        if fmt == "json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return len(data) if isinstance(data, list) else 1
    except (OSError, ValueError, csv.Error):
        return 0
    return 0
