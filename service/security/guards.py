"""Authentication and role guards for the HTTP API.

Every endpoint except health declares the role it needs with `guards=[requires("decide")]`. The key comes
in `Authorization: Bearer <key>` or `X-API-Key`. Resolved keys are cached per process for a few seconds
so a decision does not pay a database round trip; a revoked key stops working within that window.
"""

from __future__ import annotations

import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.errors import ServiceError
from service.security.keys import ROLES, Principal, find_principal

CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, Principal | None]] = {}


class Unauthorized(ServiceError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            detail, (), 401, "Unauthorized", {"WWW-Authenticate": 'Bearer realm="retail-policy"'}
        )


class RoleMissing(ServiceError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail, (), 403, "Forbidden")


def _presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return connection.headers.get("x-api-key")


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    cached = connection.scope.get("principal")
    if isinstance(cached, Principal):
        return cached
    key = _presented_key(connection)
    if not key:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        principal = hit[1]
    else:
        services = connection.app.state.services
        async with services.sessions() as session:
            principal = await find_principal(session, key)
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[key] = (now + CACHE_SECONDS, principal)
    if principal is None:
        raise Unauthorized("the API key is unknown or revoked")
    connection.scope["principal"] = principal  # type: ignore[typeddict-unknown-key]
    return principal


def requires(*roles: str) -> Any:
    """A guard admitting callers whose key carries one of `roles` (or `admin`)."""
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown role(s) {unknown!r}")
    wanted = " or ".join(f"'{role}'" for role in roles)

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        principal = await authenticate(connection)
        if not any(principal.has(role) for role in roles):
            raise RoleMissing(
                f"this operation needs the role {wanted}; the key '{principal.name}' has {sorted(principal.roles)}"
            )

    guard.__name__ = "requires_" + "_or_".join(roles)
    return guard


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller of a guarded handler (the guard has already authenticated it)."""
    principal = connection.scope.get("principal")
    if not isinstance(principal, Principal):
        raise Unauthorized("an API key is required")
    return principal


def clear_cache() -> None:
    _cache.clear()
