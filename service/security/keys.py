"""API keys: creation, hashed storage and lookup.

A key reads `rp_<id>_<secret>`. Only the SHA-256 of the whole key is stored: keys are 256-bit random
values, so a fast hash is enough (no password stretching needed) and lookups stay cheap.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.models import ApiKey
from service.domain.cases import APPROVER_ROLES
from service.errors import FieldError, Invalid

# `requester` files transfer and markdown requests; the approver roles act on the cases they open
ROLES = ("decide", "stock", "author", "publisher", "planner", "admin", "requester", *APPROVER_ROLES)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and name, and the roles it carries."""

    key_id: str
    name: str
    roles: frozenset[str]

    def has(self, role: str) -> bool:
        return role in self.roles or "admin" in self.roles


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_roles(roles: list[str]) -> list[str]:
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        reason = f"unknown role(s) {', '.join(unknown)}" if unknown else "at least one role is needed"
        raise Invalid("bad roles", [FieldError("roles", f"{reason}; expected some of {', '.join(ROLES)}")])
    return sorted(set(roles))


async def create_key(sessions: async_sessionmaker[AsyncSession], name: str, roles: list[str]) -> str:
    """Store a new key and return it in clear: the only time it is ever shown."""
    roles = validate_roles(roles)
    key_id = secrets.token_hex(6)
    key = f"rp_{key_id}_{secrets.token_urlsafe(32)}"
    async with sessions.begin() as session:
        session.add(
            ApiKey(id=key_id, name=name, key_hash=hash_key(key), roles=roles, created_at=datetime.now(UTC))
        )
    return key


async def find_principal(session: AsyncSession, key: str) -> Principal | None:
    row = (
        await session.execute(
            select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    return Principal(key_id=row.id, name=row.name, roles=frozenset(row.roles))
