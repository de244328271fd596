"""The gRPC metadata keys a gateway sends and a coordinator reads on every call (COORDINATOR
protocol, "Call metadata"). The downstream-token keys are in `downstream_tokens`."""

from typing import Final

API_SECRET: Final = "x-api-secret"
TENANT_ID: Final = "x-tenant-id"
USER_ID: Final = "x-user-id"
REQUEST_ID: Final = "x-request-id"
IDEMPOTENCY_KEY: Final = "x-idempotency-key"
