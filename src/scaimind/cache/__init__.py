"""Job cache (`mod_scaimind_jobs`), idempotency ledger and their migrations."""

from scaimind.cache.db import create_engine
from scaimind.cache.idempotency import (
    Claimed,
    IdempotencyStore,
    InProgress,
    Mismatch,
    Outcome,
    Replay,
    fingerprint,
)
from scaimind.cache.jobs import JobCache
from scaimind.cache.repository import CachedJob, InvalidCursorError, JobRepository, Page

__all__ = [
    "CachedJob",
    "Claimed",
    "IdempotencyStore",
    "InProgress",
    "InvalidCursorError",
    "JobCache",
    "JobRepository",
    "Mismatch",
    "Outcome",
    "Page",
    "Replay",
    "create_engine",
    "fingerprint",
]
