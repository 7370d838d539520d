"""Authentication and roles for the HTTP API.

Every `/v1` endpoint declares the roles that may call it with `opt=requires("decide")`; one middleware
checks the caller's key against them before the handler runs, and refuses any `/v1` endpoint that
declares none (so a route added without a role is closed, not open). Paths outside `/v1` (health,
metrics, the schema) are public. The key comes in `Authorization: Bearer <key>` or `X-API-Key`. Resolved keys are cached per process for a few seconds
so a decision does not pay a database round trip; a revoked key stops working within that window.
A key is looked up by one query at a time however many requests present it at once (single flight), and a
key in use is looked up again in the background shortly before its entry expires, so a busy key never
makes requests wait on the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError
from service.security.keys import ROLES, Principal, find_principal

CACHE_SECONDS = 5.0
REFRESH_AFTER_SECONDS = 4.0  # a hit after this starts a background lookup, so the entry never lapses in use
# key -> (expires at, refresh due at, principal), monotonic seconds; never served past its expiry
_cache: dict[str, tuple[float, float, Principal | None]] = {}
_inflight: dict[str, asyncio.Task[Principal | None]] = {}
log = logging.getLogger(__name__)


class Unauthorized(ServiceError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            detail, (), 401, "Unauthorized", {"WWW-Authenticate": 'Bearer realm="retail-policy"'}
        )


class RoleMissing(ServiceError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail, (), 403, "Forbidden")


def _presented_key(scope: Scope) -> str | None:
    bearer = api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            bearer = value.decode("latin-1")
        elif name == b"x-api-key":
            api_key = value.decode("latin-1")
    if bearer and bearer.lower().startswith("bearer "):
        return bearer[7:].strip()
    return api_key


async def authenticate(scope: Scope) -> Principal:
    cached = scope.get("principal")
    if isinstance(cached, Principal):
        return cached
    key = _presented_key(scope)
    if not key:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
    now = time.monotonic()
    hit = _cache.get(key)
    services = scope["app"].state.services
    if hit is not None and hit[0] > now:
        principal = hit[2]
        if hit[1] <= now and _pending(key) is None:
            _start_lookup(services, key)  # refresh ahead; this request uses the still valid entry
    else:
        task = _pending(key) or _start_lookup(services, key)
        principal = await asyncio.shield(task)
    if principal is None:
        raise Unauthorized("the API key is unknown or revoked")
    scope["principal"] = principal  # type: ignore[typeddict-unknown-key]
    return principal


def _pending(key: str) -> asyncio.Task[Principal | None] | None:
    task = _inflight.get(key)
    # a lookup started under another event loop (an earlier app in the same process) cannot be awaited here
    return task if task is not None and task.get_loop() is asyncio.get_running_loop() else None


async def _lookup(services: Any, key: str) -> Principal | None:
    started = time.monotonic()  # the entry's age counts from before the query: never longer than promised
    async with services.sessions() as session:
        principal = await find_principal(session, key)
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[key] = (started + CACHE_SECONDS, started + REFRESH_AFTER_SECONDS, principal)
    return principal


def _start_lookup(services: Any, key: str) -> asyncio.Task[Principal | None]:
    """One lookup per key at a time: requests arriving meanwhile await the same task."""
    task = asyncio.ensure_future(_lookup(services, key))
    _inflight[key] = task

    def done(finished: asyncio.Task[Principal | None]) -> None:
        if _inflight.get(key) is finished:
            del _inflight[key]
        if not finished.cancelled() and finished.exception() is not None:
            # awaiting requests get the error; a background refresh only logs it (the entry then lapses)
            log.warning("looking up an API key failed: %s", finished.exception())

    task.add_done_callback(done)
    return task


def requires(*roles: str) -> dict[str, Any]:
    """The `opt` of a route handler that callers with one of `roles` (or `admin`) may call."""
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown role(s) {unknown!r}")
    return {"roles": tuple(roles)}


class AuthMiddleware:
    """Checks the caller's key against the roles the matched handler declares (see `requires`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            roles: tuple[str, ...] | None = scope["route_handler"].opt.get("roles")
            if roles is not None:
                principal = await authenticate(scope)
                if not any(principal.has(role) for role in roles):
                    wanted = " or ".join(f"'{role}'" for role in roles)
                    raise RoleMissing(
                        f"this operation needs the role {wanted}; the key '{principal.name}' has "
                        f"{sorted(principal.roles)}"
                    )
            elif scope["path"].startswith("/v1/"):
                raise RoleMissing("this operation is open to no role")
        await self.app(scope, receive, send)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller of a guarded handler (the guard has already authenticated it)."""
    principal = connection.scope.get("principal")
    if not isinstance(principal, Principal):
        raise Unauthorized("an API key is required")
    return principal


def clear_cache() -> None:
    _cache.clear()
    _inflight.clear()
