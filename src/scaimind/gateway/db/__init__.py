"""The gateway's own database: job cache, idempotency ledger, API-key table and their migrations."""
