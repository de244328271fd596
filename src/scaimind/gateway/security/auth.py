"""Bearer-token authentication, permissions and tenancy (docs/API.md, "Authentication").

The module depends on exactly one user dependency, `get_current_user`. Standalone it verifies
JWTs and `sgk_` API keys; a host app (ScaiGrid) replaces it via `dependency_overrides` with its
own user lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from scaimind.contract.private_files import private_dir, private_file
from scaimind.gateway.errors import AuthTokenInvalid
from scaimind.gateway.security.claims import (
    ClaimError,
    ClaimNames,
    put_claim,
    roles_of,
    scope_of,
    tenant_of,
)
from scaimind.settings import Settings, SettingsError

logger = logging.getLogger("scaimind.gateway.security.auth")

VIEW: Final = "scaimind:view"
MANAGE: Final = "scaimind:manage"
CLUSTER_ADMIN: Final = "scaimind:cluster_admin"
EVALUATE: Final = "scaimind:evaluate"
ALL_PERMISSIONS: Final = (VIEW, MANAGE, CLUSTER_ADMIN, EVALUATE)

ROLE_PERMISSIONS: Final[Mapping[str, frozenset[str]]] = {
    "super_admin": frozenset(ALL_PERMISSIONS),
    "partner_admin": frozenset(ALL_PERMISSIONS),
    "tenant_admin": frozenset(ALL_PERMISSIONS),
    "tenant_viewer": frozenset({VIEW}),
    "tenant_user": frozenset(),
}

# Bearer tokens with this prefix are API keys (scaimind.gateway.security.apikeys), not JWTs.
API_KEY_PREFIX: Final = "sgk_"
EMBEDDED_ISSUER: Final = "scaimind-embedded"
EMBEDDED_AUDIENCE: Final = "scaimind"
_SECRET_FILE: Final = "jwt-secret"
_MIN_SECRET_CHARS: Final = 32


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """The authenticated caller. Hosts construct it from their own user model."""

    user_id: str
    tenant_id: str
    role: str = ""
    permissions: frozenset[str] = field(default_factory=frozenset)
    # The caller's raw bearer token, for downstream token exchange; never logged.
    token: str | None = field(default=None, repr=False)

    def has(self, permission: str) -> bool:
        """Whether the caller holds a permission."""
        return permission in self.permissions


RoleGrants = Mapping[str, frozenset[str]]


def role_grants(settings: Settings) -> RoleGrants:
    """The grants of each role: the defaults, with SCAIMIND_ROLE_PERMISSIONS replacing the roles
    it names (a shared install takes scaimind:cluster_admin away from tenant admins there)."""
    overrides = settings.role_permissions or {}
    return {**ROLE_PERMISSIONS, **{role: frozenset(keys) for role, keys in overrides.items()}}


def claim_names(settings: Settings) -> ClaimNames:
    """The claims tenant, role and scope are read from (SCAIMIND_JWT_*_CLAIM)."""
    return ClaimNames(
        tenant=settings.jwt_tenant_claim,
        role=settings.jwt_role_claim,
        scope=settings.jwt_scope_claim,
    )


def permissions_for(
    role: str, scope: str | Iterable[str] | None, grants: RoleGrants = ROLE_PERMISSIONS
) -> frozenset[str]:
    """The role's grants ∪ the keys listed in `scope`."""
    extra = scope.split() if isinstance(scope, str) else list(scope or ())
    return grants.get(role, frozenset()) | frozenset(extra)


def secret_file(data_dir: Path, name: str) -> str:
    """A random secret kept in `data_dir/name`, generated once with mode 0600."""
    private_dir(data_dir)
    path = data_dir / name
    if not path.exists():
        # Write a private temp file, then link it into place. The link is atomic, so concurrent
        # first runs agree on one secret and none reads a created-but-still-empty file.
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    private_file(path)  # fixed at every start, should it have been widened
    secret = path.read_text().strip()
    if len(secret) < _MIN_SECRET_CHARS:
        # An empty key (left by an interrupted first run) would verify tokens anyone can forge.
        raise SettingsError(
            f"{path} holds no usable secret (empty or too short); delete it to generate one"
        )
    return secret


def embedded_secret(data_dir: Path) -> str:
    """The HS256 secret of a data dir (`jwt-secret`)."""
    return secret_file(data_dir, _SECRET_FILE)


def hs256_secret(settings: Settings) -> str:
    """The HS256 key bearer tokens are verified with: `jwt_secret`, else the data dir's."""
    secret = settings.jwt_secret
    return secret.get_secret_value() if secret else embedded_secret(settings.data_dir)


def mint_token(
    secret: str,
    *,
    tenant_id: str,
    user_id: str,
    role: str = "tenant_admin",
    scope: str = "",
    ttl_s: int = 3600,
    audience: str = EMBEDDED_AUDIENCE,
    issuer: str = EMBEDDED_ISSUER,
    extra_claims: Mapping[str, Any] | None = None,
    names: ClaimNames = ClaimNames(),
) -> str:
    """An HS256 token that the embedded-mode verifier accepts (plus `extra_claims`), with the
    tenant, role and scope where a verifier configured with `names` reads them."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "iat": now,
        "exp": now + ttl_s,
        "iss": issuer,
        "aud": audience,
    }
    put_claim(claims, names.tenant, tenant_id)
    put_claim(claims, names.role, role)
    if scope:
        put_claim(claims, names.scope, scope)
    claims.update(extra_claims or {})
    return jwt.encode(claims, secret, algorithm="HS256")


def _public_key(pem: str) -> tuple[RSAPublicKey | EllipticCurvePublicKey, list[str]]:
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError:
        key = None
    if isinstance(key, RSAPublicKey):
        return key, ["RS256"]
    if isinstance(key, EllipticCurvePublicKey):
        return key, ["ES256"]
    raise SettingsError("SCAIMIND_JWT_PUBLIC_KEY: not an RSA or EC public key in PEM form")


# Signing keys remembered by kid (an identity provider publishes a handful).
_JWKS_KEYS_KEPT: Final = 64
# Verified tokens remembered by digest (bounded LRU): a signature check and claim parsing cost
# more than the rest of a small request. An entry lasts until the token's exp, and never longer
# than _VERIFIED_MAX_S, so a signing key withdrawn from a JWKS stops working within minutes.
VERIFIED_KEPT: Final = 10_000
_VERIFIED_MAX_S: Final = 300.0


class TokenVerifier:
    """Verifies bearer JWTs with the configured key material."""

    def __init__(
        self,
        settings: Settings,
        *,
        kept: int = VERIFIED_KEPT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._kept = kept
        self._clock = clock
        # sha256(token) -> (the caller, epoch seconds until which the entry may be used).
        self._verified: OrderedDict[bytes, tuple[CurrentUser, float]] = OrderedDict()
        # What each role may do (API keys are granted from the same table).
        self.grants = role_grants(settings)
        self.claim_names = claim_names(settings)
        self._jwks: jwt.PyJWKClient | None = None
        self._jwks_keys: dict[str, jwt.PyJWK] = {}
        self._key: Any = None
        self._algorithms: list[str]
        if settings.jwt_jwks_url:
            # PyJWKClient's default timeout is 30 s; a hung identity provider must not hold
            # every request (and a worker thread) that long.
            self._jwks = jwt.PyJWKClient(
                settings.jwt_jwks_url,
                cache_keys=True,
                lifespan=300,
                timeout=settings.jwt_jwks_timeout_s,
            )
            self._algorithms = ["RS256", "ES256"]
        elif settings.jwt_public_key:
            pem = settings.jwt_public_key
            if not pem.lstrip().startswith("-----BEGIN"):
                pem = Path(pem).read_text()
            # Parsed once, not by jwt.decode on every request; the key's type fixes the one
            # algorithm a token may claim (a mismatch is then an ordinary invalid token).
            self._key, self._algorithms = _public_key(pem)
        else:
            self._key = hs256_secret(settings)
            self._algorithms = ["HS256"]

    async def _jwks_key(self, token: str) -> jwt.PyJWK:
        assert self._jwks is not None
        kid = jwt.get_unverified_header(token).get("kid")
        found = self._jwks_keys.get(kid) if isinstance(kid, str) else None
        if found is None:
            # PyJWKClient fetches over blocking urllib; keep it off the event loop. Keys found
            # are kept by kid, so known keys cost no thread hop per request.
            found = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            if isinstance(kid, str):
                if len(self._jwks_keys) >= _JWKS_KEYS_KEPT:
                    self._jwks_keys.clear()
                self._jwks_keys[kid] = found
        return found

    async def verify(self, token: str) -> CurrentUser:
        """Decode and check a token; raise AuthTokenInvalid with a reason.

        A token verified before is answered from memory until its exp (failures are not
        remembered: an invalid, expired or not-yet-valid token is checked in full every time).
        """
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        hit = self._verified.get(digest)
        if hit is not None:
            if now < hit[1]:
                self._verified.move_to_end(digest)
                return hit[0]
            del self._verified[digest]
        user, exp = await self._verify(token)
        until = min(exp, now + _VERIFIED_MAX_S)
        if until > now:
            self._verified[digest] = (user, until)
            if len(self._verified) > self._kept:
                self._verified.popitem(last=False)
        return user

    @property
    def remembered(self) -> int:
        """How many verified tokens are remembered."""
        return len(self._verified)

    async def _verify(self, token: str) -> tuple[CurrentUser, float]:
        """The caller of a token and its exp, by a full check."""
        key, algorithms = self._key, self._algorithms
        if self._jwks is not None:
            try:
                signing_key = await self._jwks_key(token)
            except jwt.PyJWKClientConnectionError as exc:
                # The reason names internal hosts and errors: log it, tell the caller less.
                logger.warning(
                    "JWKS fetch failed: %s", exc, extra={"event": "scaimind_jwks_fetch_failed"}
                )
                raise AuthTokenInvalid("the token signing keys could not be fetched") from None
            except jwt.PyJWTError as exc:
                raise AuthTokenInvalid(f"invalid bearer token: {exc}") from None
            # The published key decides the algorithm; a token claiming another is invalid.
            key, algorithms = signing_key.key, [signing_key.algorithm_name]
        s = self._settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway_s,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": s.jwt_audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthTokenInvalid("bearer token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthTokenInvalid("bearer token has the wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthTokenInvalid("bearer token has the wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise AuthTokenInvalid("bearer token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AuthTokenInvalid(f"invalid bearer token: {exc}") from None
        try:
            tenant = tenant_of(claims, self.claim_names)
            roles = roles_of(claims, self.claim_names)
            scope = scope_of(claims, self.claim_names)
        except ClaimError as exc:
            raise AuthTokenInvalid(str(exc)) from None
        # A list of roles (Keycloak's realm_access.roles) grants what each known role grants;
        # the caller's role is the first one the grant table knows.
        role = next((r for r in roles if r in self.grants), roles[0] if roles else "")
        permissions = frozenset(scope).union(*(self.grants.get(r, frozenset()) for r in roles))
        user = CurrentUser(
            user_id=str(claims["sub"]),
            tenant_id=tenant,
            role=role,
            permissions=permissions,
            token=token,
        )
        # jwt.decode required exp and checked it is a number.
        return user, float(claims["exp"])
