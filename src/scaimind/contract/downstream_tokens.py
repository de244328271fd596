"""The downstream-token contract: the gateway signs, the coordinator checks.

In the embedded mode the gateway signs short-lived HS256 tokens for ScaiDrive and ScaiAtlas
(`scaimind.gateway.security.token_exchange`); the reference coordinator verifies the
ScaiDrive one before it maps a scaidrive:// source. Both sides import this module, so the
coordinator needs no gateway code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import jwt

SCAIDRIVE: Final = "scaidrive"
SCAIATLAS: Final = "scaiatlas"
# Audience → the gRPC metadata key that carries its token.
METADATA_KEYS: Final[Mapping[str, str]] = {
    SCAIDRIVE: "x-scaidrive-token",
    SCAIATLAS: "x-scaiatlas-token",
}
ISSUER: Final = "scaimind"
MAX_TTL_S: Final = 15 * 60


class DownstreamTokenRejected(Exception):
    """A downstream token is missing, expired, for another audience or another tenant.

    The coordinator answers PERMISSION_DENIED with this message.
    """


def sign_downstream_token(
    key: str,
    *,
    subject: str,
    tenant_id: str,
    audience: str,
    ttl_s: int = MAX_TTL_S,
    now: float | None = None,
) -> str:
    """An HS256 downstream token (the embedded mode's substitute for a token exchange)."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be in (0, {MAX_TTL_S}]")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": subject,
        "tenant_id": tenant_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl_s,
        # RFC 8693 §4.1: ScaiMind acts on behalf of the subject.
        "act": {"sub": ISSUER},
    }
    return jwt.encode(claims, key, algorithm="HS256")


def verify_downstream_token(
    token: str | None,
    *,
    key: str,
    audience: str,
    tenant_id: str,
    leeway_s: float = 0.0,
) -> dict[str, Any]:
    """Check a locally signed downstream token; raise DownstreamTokenRejected if unusable."""
    if not token:
        raise DownstreamTokenRejected(f"missing {audience} token")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            audience=audience,
            leeway=leeway_s,
            options={"require": ["exp", "iat", "sub", "aud", "tenant_id"]},
        )
    except jwt.ExpiredSignatureError:
        raise DownstreamTokenRejected(f"the {audience} token has expired") from None
    except jwt.InvalidAudienceError:
        raise DownstreamTokenRejected(f"the token is not valid for {audience}") from None
    except jwt.PyJWTError:
        raise DownstreamTokenRejected(f"invalid {audience} token") from None
    if claims["tenant_id"] != tenant_id:
        raise DownstreamTokenRejected(f"the {audience} token belongs to another tenant")
    if float(claims["exp"]) - float(claims["iat"]) > MAX_TTL_S:
        raise DownstreamTokenRejected(f"the {audience} token lives longer than allowed")
    return claims
