"""`scaidrive://<tenant>/<path>` sources: a configured storage root, guarded by downstream tokens.

`scaidrive://acme/datasets/train.jsonl` maps onto `<storage_root>/acme/datasets/train.jsonl`
(`storage_root` defaults to `<data_dir>/storage`). Every access needs the caller's
`x-scaidrive-token`: an HS256 downstream token (docs/API.md, "What the coordinator
receives") signed with the key the coordinator shares with the gateway (`downstream_token_key`),
for audience `scaidrive` and the caller's tenant. A missing, expired, foreign-audience or
other-tenant token, a path of another tenant, or a coordinator without a key all answer
PERMISSION_DENIED. Tokens are never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import grpc
import jwt

from scaimind.contract.downstream_tokens import (
    METADATA_KEYS,
    SCAIDRIVE,
    DownstreamTokenRejected,
    verify_downstream_token,
)
from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.status import PathRefused, StatusError, invalid

SCHEME = "scaidrive"
AUDIENCE = SCAIDRIVE
TOKEN_METADATA = METADATA_KEYS[SCAIDRIVE]


def denied(message: str) -> StatusError:
    """PERMISSION_DENIED."""
    return StatusError(grpc.StatusCode.PERMISSION_DENIED, message)


def storage_root(config: CoordinatorConfig) -> Path:
    """Where scaidrive:// paths live on this machine (on the shared root by default)."""
    return config.storage_root or config.shared / "storage"


def is_scaidrive(raw: str) -> bool:
    """True for a scaidrive:// URI."""
    return raw.strip().lower().startswith(SCHEME + "://")


@dataclass(frozen=True, slots=True)
class DriveAccess:
    """One caller's access to ScaiDrive: resolves its URIs after checking the token."""

    root: Path
    key: str | None
    tenant_id: str
    token: str

    def resolve(self, uri: str, field: str) -> Path:
        """The local path of a scaidrive:// URI; PERMISSION_DENIED or INVALID_ARGUMENT."""
        parsed = urlparse(uri.strip())
        tenant = unquote(parsed.netloc)
        rel = PurePosixPath(unquote(parsed.path).lstrip("/"))
        if not tenant or not rel.parts:
            raise invalid(f"{field}: {uri} must have the form scaidrive://<tenant>/<path>")
        if ".." in rel.parts or ".." in PurePosixPath(tenant).parts:
            raise PathRefused(f"{field}: {uri} must not contain '..'")
        if tenant != self.tenant_id:
            raise denied(
                f"{field}: {uri} belongs to another tenant; the caller's scaidrive token only "
                f"grants access to scaidrive://{self.tenant_id}/"
            )
        self.check_token(field)
        base = (self.root / tenant).resolve()
        path = (base / rel).resolve()
        # A symlink inside the tenant's directory must not lead into another tenant's files.
        if not path.is_relative_to(base):
            raise denied(f"{field}: {uri} leads outside the tenant's storage")
        return path

    def check_token(self, field: str) -> None:
        """PERMISSION_DENIED unless the caller's token is valid for ScaiDrive and its tenant."""
        if not self.key:
            raise denied(
                f"{field}: scaidrive:// access is not configured on this coordinator "
                "(no downstream token key; set SCAIMIND_TOKEN_SIGNING_KEY)"
            )
        try:
            verify_downstream_token(
                self.token or None, key=self.key, audience=AUDIENCE, tenant_id=self.tenant_id
            )
        except DownstreamTokenRejected as e:
            raise denied(f"{field}: scaidrive access denied: {e}") from None


def drive_access(config: CoordinatorConfig, tenant_id: str, token: str) -> DriveAccess:
    """A caller's ScaiDrive access under this coordinator's configuration."""
    return DriveAccess(storage_root(config), config.downstream_token_key, tenant_id, token)


def token_expiry(token: str) -> float:
    """The `exp` claim of a token without verifying it (0 when unreadable); for housekeeping."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        return float(claims.get("exp", 0))
    except (jwt.PyJWTError, TypeError, ValueError):
        return 0.0
