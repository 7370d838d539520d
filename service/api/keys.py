"""API key management for the `admin` role: list, create, revoke and rotate (docs/api.md, API keys)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from service.api.openapi import OptionalBody, answers
from service.security import principal_of, requires
from service.security.keys import (
    NAME_PATTERN,
    IssuedKey,
    KeyRecord,
    issue_key,
    list_keys,
    revoke_key,
    rotate_key,
)
from service.services import Services

Aware = Annotated[datetime, msgspec.Meta(tz=True)]
NameOrId = Annotated[str, Parameter(description="the key's id, or the name of exactly one active key")]


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
    roles: Annotated[list[str], msgspec.Meta(min_length=1, max_length=6)]
    expires_at: Aware | None = None


class RotateIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    expires_at: Aware | None = None


NO_EXPIRY = RotateIn()  # a rotation sent without a body


class KeyOut(msgspec.Struct):
    """A stored key: never its secret nor its hash."""

    id: str
    name: str
    roles: list[str]
    created_at: Aware
    expires_at: Aware | None
    revoked_at: Aware | None


class IssuedKeyOut(KeyOut, kw_only=True):
    """A key just created or rotated, with `key`, the secret: shown this once, stored only hashed."""

    key: str
    replaces: str | None = None


def _out(record: KeyRecord) -> KeyOut:
    return KeyOut(
        record.id, record.name, record.roles, record.created_at, record.expires_at, record.revoked_at
    )


def _issued(issued: IssuedKey, replaces: str | None = None) -> IssuedKeyOut:
    r = issued.record
    return IssuedKeyOut(
        r.id, r.name, r.roles, r.created_at, r.expires_at, r.revoked_at, key=issued.key, replaces=replaces
    )


@get("/keys", opt=requires("admin"), operation_id="listKeys")
async def get_keys(services: NamedDependency[Services]) -> list[KeyOut]:
    return [_out(record) for record in await list_keys(services.sessions)]


@post("/keys", opt=requires("admin"), operation_id="createKey", status_code=201)
async def create(
    services: NamedDependency[Services], request: Request[Any, Any, Any], data: JSONBody[KeyIn]
) -> IssuedKeyOut:
    issued = await issue_key(
        services.sessions, data.name, data.roles, data.expires_at, actor=principal_of(request).name
    )
    return _issued(issued)


@post(
    "/keys/{name_or_id:str}/revoke",
    opt={**requires("admin"), **answers(409)},
    operation_id="revokeKey",
    status_code=200,
)
async def revoke(
    services: NamedDependency[Services], request: Request[Any, Any, Any], name_or_id: NameOrId
) -> KeyOut:
    record = await revoke_key(services.sessions, name_or_id, actor=principal_of(request).name)
    services.principals.forget(record.id)  # this worker refuses it at once; the others within 1 s
    return _out(record)


@post(
    "/keys/{name_or_id:str}/rotate",
    opt={**requires("admin"), **answers(409)},
    operation_id="rotateKey",
    status_code=201,
    operation_class=OptionalBody,
)
async def rotate(
    services: NamedDependency[Services],
    request: Request[Any, Any, Any],
    name_or_id: NameOrId,
    data: JSONBody[RotateIn] = NO_EXPIRY,
) -> IssuedKeyOut:
    old, issued = await rotate_key(
        services.sessions, name_or_id, data.expires_at, actor=principal_of(request).name
    )
    services.principals.forget(old.id)
    return _issued(issued, replaces=old.id)


router = Router(path="/v1", route_handlers=[get_keys, create, revoke, rotate], tags=["API keys"])
