"""Authentication and roles for the HTTP API.

Every `/v1` endpoint declares the roles that may call it with `opt=requires("decide")`; the app's
middleware checks the caller's key against them before the handler runs (`check_access`), and refuses
any `/v1` endpoint that declares none (so a route added without a role is closed, not open). Paths
outside `/v1` (health, metrics, the schema) are public. The key comes in `Authorization: Bearer <key>` or `X-API-Key`.

Each app keeps a `PrincipalCache` of resolved keys so a decision does not pay a database round trip. An
entry is served for at most `CACHE_SECONDS` (1 s) counted from before the query that produced it, so a key
revoked in the database (by any worker, host or the CLI) is refused everywhere within 1 s. A key is looked
up by one query at a time however many requests present it at once (single flight), and a key in use is
looked up again in the background once its entry is `REFRESH_AFTER_SECONDS` old, so a busy key never makes
requests wait on the database. An expired key is refused at once: its expiry travels in the entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.types import Scope

from service.db.base import utc_now
from service.errors import ServiceError
from service.security.keys import ROLES, Clock, Principal, find_principal

CACHE_SECONDS = 1.0
REFRESH_AFTER_SECONDS = 0.5  # a hit after this starts a background lookup, so the entry never lapses in use
MAX_ENTRIES = 10_000
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
    if bearer and bearer[:7].lower() == "bearer ":  # the scheme alone lowered, not the key
        return bearer[7:].strip()
    return api_key


class PrincipalCache:
    """Resolved keys of one app: key -> (expires at, refresh due at, principal or None if unknown).

    `clock` gives monotonic seconds (entry ages) and `now` the UTC time (key expiry); tests pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, now: Clock = utc_now) -> None:
        self.clock = clock
        self.now = now
        self._entries: dict[str, tuple[float, float, Principal | None]] = {}
        self._inflight: dict[str, asyncio.Task[Principal | None]] = {}
        self._forgotten = 0  # bumped by `forget`: a lookup that started before keeps no entry

    async def principal(self, services: Any, key: str) -> Principal | None:
        hit = self.fresh(services, key)
        if hit is not None:
            return hit[0]
        task = self._pending(key) or self._start_lookup(services, key)
        return await asyncio.shield(task)

    def fresh(self, services: Any, key: str) -> tuple[Principal | None] | None:
        """`(principal or None)` from an entry still valid now, without waiting (a lookup is started in the
        background when the entry is due for refresh); None when there is none and `principal` must wait."""
        now = self.clock()
        hit = self._entries.get(key)
        if hit is None or hit[0] <= now:
            return None
        if hit[1] <= now and self._pending(key) is None:
            self._start_lookup(services, key)  # refresh ahead; this request uses the still valid entry
        return (hit[2],)

    def forget(self, key_id: str) -> None:
        """Drop the entries of one key at once (this worker revoked it; others wait out CACHE_SECONDS)."""
        for key, (_expires, _refresh, principal) in list(self._entries.items()):
            if principal is not None and principal.key_id == key_id:
                del self._entries[key]
        self._forgotten += 1
        self._inflight.clear()  # later requests start their own lookup, which sees the revocation

    def clear(self) -> None:
        self._entries.clear()
        self._inflight.clear()

    def _pending(self, key: str) -> asyncio.Task[Principal | None] | None:
        task = self._inflight.get(key)
        # a lookup started under another event loop cannot be awaited here
        return task if task is not None and task.get_loop() is asyncio.get_running_loop() else None

    async def _lookup(self, services: Any, key: str) -> Principal | None:
        started = self.clock()  # the entry's age counts from before the query: never longer than promised
        forgotten = self._forgotten
        async with services.sessions() as session:
            principal = await find_principal(session, key)
        if forgotten != self._forgotten:
            return principal  # it may have read the key before it was revoked: answer, but keep nothing
        if len(self._entries) > MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (started + CACHE_SECONDS, started + REFRESH_AFTER_SECONDS, principal)
        return principal

    def _start_lookup(self, services: Any, key: str) -> asyncio.Task[Principal | None]:
        """One lookup per key at a time: requests arriving meanwhile await the same task."""
        task = asyncio.ensure_future(self._lookup(services, key))
        self._inflight[key] = task

        def done(finished: asyncio.Task[Principal | None]) -> None:
            if self._inflight.get(key) is finished:
                del self._inflight[key]
            if not finished.cancelled() and finished.exception() is not None:
                # awaiting requests get the error; a background refresh only logs it (the entry then lapses)
                log.warning("looking up an API key failed: %r", finished.exception())

        task.add_done_callback(done)
        return task


async def authenticate(scope: Scope) -> Principal:
    cached = scope.get("principal")
    if isinstance(cached, Principal):
        return cached
    key = _presented_key(scope)
    if not key:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
    services = scope["app"].state["services"]  # by key: by attribute the state object fails a lookup first
    cache: PrincipalCache = services.principals
    hit = cache.fresh(services, key)  # a key in use: no coroutine to await
    principal = hit[0] if hit is not None else await cache.principal(services, key)
    if principal is None:
        raise Unauthorized("the API key is unknown or revoked")
    if principal.expires_at is not None and principal.expired(cache.now()):  # no clock read for most keys
        raise Unauthorized("the API key has expired")
    scope["principal"] = principal  # type: ignore[typeddict-unknown-key]
    return principal


def requires(*roles: str) -> dict[str, Any]:
    """The `opt` of a route handler that callers with one of `roles` (or `admin`) may call."""
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown role(s) {unknown!r}")
    return {"roles": tuple(roles)}


async def check_access(scope: Scope) -> None:
    """Refuse the request unless the caller's key has one of the roles the matched handler declares (see
    `requires`); a `/v1` handler that declares none is open to no one. Run by the app's middleware."""
    roles: tuple[str, ...] | None = scope["route_handler"].opt.get("roles")
    if roles is not None:
        principal = await authenticate(scope)
        if not principal.has_any(roles):
            wanted = " or ".join(f"'{role}'" for role in roles)
            raise RoleMissing(
                f"this operation needs the role {wanted}; the key '{principal.name}' has "
                f"{sorted(principal.roles)}"
            )
    elif scope["path"].startswith("/v1/"):
        raise RoleMissing("this operation is open to no role")


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller of a guarded handler (the guard has already authenticated it)."""
    principal = connection.scope.get("principal")
    if not isinstance(principal, Principal):
        raise Unauthorized("an API key is required")
    return principal
