"""API keys: creation, hashed storage, lookup, and the lifecycle (list, expiry, revoke, rotate).

A key reads `rp_<id>_<secret>`. Only the SHA-256 of the whole key is stored: keys are 256-bit random
values, so a fast hash is enough (no password stretching needed) and lookups stay cheap. The clear key is
returned once, when it is created or rotated, and never again. Every creation, revocation and rotation
writes an audit row (who, when) in the same transaction as the change.

A key is named by its id or its name: the id wins, and a name must match exactly one active key.
The last active `admin` key cannot be revoked (409), so the API always keeps a key that can manage keys.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.base import aware, utc_now
from service.db.models import ApiKey, ConsoleSessionRow
from service.domain.cases import APPROVER_ROLES
from service.errors import Conflict, FieldError, Invalid, NotFound
from service.security.audit import audit

# `requester` files transfer and markdown requests; the approver roles act on the cases they open
ROLES = ("decide", "stock", "author", "publisher", "planner", "admin", "requester", *APPROVER_ROLES)
NAME_PATTERN = r"^[A-Za-z0-9._:\-]{1,64}$"
_NAME = re.compile(NAME_PATTERN)
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and name, the roles it carries, and when the key stops working."""

    key_id: str
    name: str
    roles: frozenset[str]
    expires_at: datetime | None = None

    def has(self, role: str) -> bool:
        return role in self.roles or "admin" in self.roles

    def has_any(self, roles: tuple[str, ...]) -> bool:
        """Whether the key carries one of `roles` (or `admin`)."""
        return "admin" in self.roles or not self.roles.isdisjoint(roles)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class KeyRecord:
    """What may be shown of a stored key: everything but its hash."""

    id: str
    name: str
    roles: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyRecord:
        return cls(
            id=row.id,
            name=row.name,
            roles=list(row.roles),
            created_at=aware(row.created_at),
            expires_at=aware(row.expires_at) if row.expires_at else None,
            revoked_at=aware(row.revoked_at) if row.revoked_at else None,
        )

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class IssuedKey:
    """A key just created or rotated: its record and the clear key, shown this once."""

    record: KeyRecord
    key: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_roles(roles: list[str]) -> list[str]:
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        reason = f"unknown role(s) {', '.join(unknown)}" if unknown else "at least one role is needed"
        raise Invalid("bad roles", [FieldError("roles", f"{reason}; expected some of {', '.join(ROLES)}")])
    return sorted(set(roles))


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise Invalid(
            "bad key name",
            [FieldError("name", "1 to 64 characters of letters, digits and . _ : -")],
        )
    return name


def validate_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        raise Invalid("bad expiry", [FieldError("expires_at", "give the time with a UTC offset")])
    if expires_at <= now:
        raise Invalid("bad expiry", [FieldError("expires_at", "must be in the future")])
    return expires_at.astimezone(UTC)  # SQLite keeps no offset: store UTC


def _new_row(name: str, roles: list[str], expires_at: datetime | None, now: datetime) -> tuple[ApiKey, str]:
    key_id = secrets.token_hex(6)
    key = f"rp_{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        id=key_id, name=name, key_hash=hash_key(key), roles=roles, created_at=now, expires_at=expires_at
    )
    return row, key


def _subject(key_id: str) -> str:
    return f"api_key:{key_id}"


async def issue_key(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    roles: list[str],
    expires_at: datetime | None = None,
    *,
    actor: str = "system",
    clock: Clock = utc_now,
) -> IssuedKey:
    """Store a new key (audited as created by `actor`) and return it with the clear key."""
    now = clock()
    name, roles = validate_name(name), validate_roles(roles)
    expires_at = validate_expiry(expires_at, now)
    row, key = _new_row(name, roles, expires_at, now)
    async with sessions.begin() as session:
        session.add(row)
        await audit(
            session,
            actor,
            "api_key.create",
            _subject(row.id),
            {"name": name, "roles": roles, "expires_at": expires_at.isoformat() if expires_at else None},
        )
    return IssuedKey(KeyRecord.of(row), key)


async def create_key(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    roles: list[str],
    expires_at: datetime | None = None,
    *,
    actor: str = "system",
) -> str:
    """Store a new key and return it in clear: the only time it is ever shown."""
    return (await issue_key(sessions, name, roles, expires_at, actor=actor)).key


async def list_keys(sessions: async_sessionmaker[AsyncSession]) -> list[KeyRecord]:
    """Every key, revoked and expired ones included, oldest first."""
    async with sessions() as session:
        rows = (await session.execute(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))).scalars()
        return [KeyRecord.of(row) for row in rows]


async def _find(session: AsyncSession, name_or_id: str, now: datetime) -> ApiKey:
    """The key with this id, else the one active key with this name (locked for the change)."""
    row = (
        await session.execute(select(ApiKey).where(ApiKey.id == name_or_id).with_for_update())
    ).scalar_one_or_none()
    if row is not None:
        return row
    named = [
        row
        for row in (
            await session.execute(select(ApiKey).where(ApiKey.name == name_or_id).with_for_update())
        ).scalars()
        if KeyRecord.of(row).active(now)
    ]
    if not named:
        raise NotFound(
            f"no key has the id or active name '{name_or_id}'",
            [FieldError("name_or_id", "no key has this id, and no active key this name")],
        )
    if len(named) > 1:
        ids = ", ".join(sorted(row.id for row in named))
        raise Conflict(
            f"{len(named)} active keys are named '{name_or_id}'",
            [FieldError("name_or_id", f"the name is ambiguous; give one of the ids {ids}")],
        )
    return named[0]


async def _revoke(session: AsyncSession, row: ApiKey, now: datetime) -> None:
    record = KeyRecord.of(row)
    if record.revoked_at is not None:
        raise Conflict(
            f"the key '{row.id}' was already revoked",
            [FieldError("name_or_id", f"revoked at {record.revoked_at.isoformat()}")],
        )
    if "admin" in row.roles:
        active_rows = (
            await session.execute(select(ApiKey).where(ApiKey.revoked_at.is_(None)).with_for_update())
        ).scalars()
        others = [
            r for r in active_rows if r.id != row.id and "admin" in r.roles and KeyRecord.of(r).active(now)
        ]
        if not others:
            raise Conflict(
                "the last active admin key cannot be revoked",
                [FieldError("name_or_id", "create another admin key first, or rotate this one")],
                title="Last admin key",
            )
    row.revoked_at = now
    # its console sessions end with it (a revoked key is refused anyway; this leaves no row behind)
    await session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.key_id == row.id))


async def revoke_key(
    sessions: async_sessionmaker[AsyncSession],
    name_or_id: str,
    *,
    actor: str = "system",
    clock: Clock = utc_now,
) -> KeyRecord:
    """Revoke a key (by id or active name); every worker refuses it within `guards.CACHE_SECONDS`."""
    now = clock()
    async with sessions.begin() as session:
        row = await _find(session, name_or_id, now)
        await _revoke(session, row, now)
        await audit(session, actor, "api_key.revoke", _subject(row.id), {"name": row.name})
        await session.flush()
        return KeyRecord.of(row)


async def rotate_key(
    sessions: async_sessionmaker[AsyncSession],
    name_or_id: str,
    expires_at: datetime | None = None,
    *,
    actor: str = "system",
    clock: Clock = utc_now,
) -> tuple[KeyRecord, IssuedKey]:
    """Issue a new key with the old one's name and roles (and expiry, unless `expires_at` is given), and
    revoke the old one in the same transaction. Returns (the old key, the new key)."""
    now = clock()
    async with sessions.begin() as session:
        old = await _find(session, name_or_id, now)
        if old.revoked_at is not None:
            raise Conflict(
                f"the key '{old.id}' was already revoked",
                [FieldError("name_or_id", "a revoked key cannot be rotated; create a new key")],
            )
        expiry = validate_expiry(expires_at, now) if expires_at is not None else old.expires_at
        if expiry is not None and aware(expiry) <= now:
            raise Invalid(
                "the key has expired", [FieldError("expires_at", "give a future expiry for the new key")]
            )
        row, key = _new_row(old.name, list(old.roles), expiry, now)
        session.add(row)
        await session.flush()  # the new admin key exists before the old one's last-admin check
        await _revoke(session, old, now)
        await audit(
            session,
            actor,
            "api_key.rotate",
            _subject(old.id),
            {
                "name": old.name,
                "replaced_by": row.id,
                "expires_at": aware(expiry).isoformat() if expiry else None,
            },
        )
        await session.flush()
        return KeyRecord.of(old), IssuedKey(KeyRecord.of(row), key)


# built once (the statement is immutable): every worker runs it for each key in use about twice a second
_PRINCIPAL = select(ApiKey.id, ApiKey.name, ApiKey.roles, ApiKey.expires_at).where(
    ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None)
)


async def find_principal(session: AsyncSession, key: str) -> Principal | None:
    """The unrevoked key `key` (expired or not: the guard tells the caller which)."""
    row = (await session.execute(_PRINCIPAL, {"key_hash": hash_key(key)})).one_or_none()
    if row is None:
        return None
    expires_at = aware(row.expires_at) if row.expires_at else None
    return Principal(key_id=row.id, name=row.name, roles=frozenset(row.roles), expires_at=expires_at)
