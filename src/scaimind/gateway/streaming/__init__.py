"""Server-Sent Events of the monitoring endpoints.

limiter (per-tenant cap), framing (events as bytes), feeds (shared upstream log calls), fanout
(direct writes to followers), response (the SSE response), metrics, resources (the lifespan).
"""
