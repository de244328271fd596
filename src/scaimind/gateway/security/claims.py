"""Where the caller's tenant, role and scope are in a JWT: configurable claim names.

ScaiGrid's tokens carry `tenant_id`, `role` and `scope` at the top level; identity providers
put them elsewhere (Keycloak: roles in `realm_access.roles`, a list; Auth0: namespaced claims
such as `https://scaigrid.example/tenant_id`). `SCAIMIND_JWT_TENANT_CLAIM`, `…_ROLE_CLAIM` and
`…_SCOPE_CLAIM` name them: a top-level claim of exactly that name wins (so names with dots, like
Auth0's URLs, work), else the name is a dotted path into nested objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ClaimNames:
    """The claims the tenant, the role(s) and the scope are read from."""

    tenant: str = "tenant_id"
    role: str = "role"
    scope: str = "scope"


class ClaimError(ValueError):
    """A claim is missing or has a shape that cannot be used; the message names it."""


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """Claim `name`: a top-level claim of that exact name, else a dotted path; None if absent."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def put_claim(claims: dict[str, Any], name: str, value: Any) -> None:
    """Set claim `name` where `claim` reads it: a dotted path makes nested objects, a URL
    (an Auth0-style namespaced claim) stays one top-level claim."""
    if "://" in name:
        claims[name] = value
        return
    *parents, last = name.split(".")
    target = claims
    for part in parents:
        nested = target.get(part)
        if not isinstance(nested, dict):
            nested = target[part] = {}
        target = nested
    target[last] = value


def _strings(value: Any, name: str, *, split: bool) -> list[str]:
    """A string claim (split on whitespace when `split`) or a list of strings; [] when absent."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split() if split else ([value] if value else [])
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [part for item in value for part in (item.split() if split else [item]) if part]
    raise ClaimError(f"bearer token claim {name!r} must be a string or a list of strings")


def tenant_of(claims: Mapping[str, Any], names: ClaimNames) -> str:
    """The one tenant the token names (a string, or a list holding exactly one)."""
    values = _strings(claim(claims, names.tenant), names.tenant, split=False)
    if not values:
        raise ClaimError(f"bearer token has no {names.tenant} claim (the tenant)")
    if len(values) > 1:
        raise ClaimError(f"bearer token claim {names.tenant!r} names {len(values)} tenants")
    return values[0]


def roles_of(claims: Mapping[str, Any], names: ClaimNames) -> list[str]:
    """Every role the token names, in its order (a string, or a list such as Keycloak's)."""
    return _strings(claim(claims, names.role), names.role, split=False)


def scope_of(claims: Mapping[str, Any], names: ClaimNames) -> list[str]:
    """The scope's keys: a space-separated string (OAuth 2) or a list of strings."""
    return _strings(claim(claims, names.scope), names.scope, split=True)
