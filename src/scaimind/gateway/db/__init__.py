"""Job cache (`mod_scaimind_jobs`), idempotency ledger and their migrations."""

from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.db.idempotency import (
    Claimed,
    IdempotencyStore,
    InProgress,
    Mismatch,
    Outcome,
    Replay,
    fingerprint,
)
from scaimind.gateway.db.jobs import JobCache
from scaimind.gateway.db.repository import CachedJob, InvalidCursorError, JobRepository, Page

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
