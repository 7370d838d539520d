"""SQL access for ruleset versions, their pointers, the generation counter and the audit trail.

Plain async functions over an `AsyncSession`; the caller owns the transaction. Rows leave this module
as frozen records so that the API, the CLI and the registry never hold ORM objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.base import aware
from service.db.models.foundation import AuditEntry
from service.db.models.rulesets import RulesetGenerationRow, RulesetKindRow, RulesetRow, RulesetVersionRow
from service.security.audit import audit

DRAFT = "draft"
PUBLISHED = "published"
RETIRED = "retired"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC, so say so."""
    return None if value is None else aware(value)


def iso(value: datetime | None) -> str | None:
    moment = as_utc(value)
    return moment.isoformat() if moment is not None else None


def subject_of(name: str) -> str:
    return f"ruleset:{name}"


@dataclass(frozen=True)
class VersionRecord:
    """One stored version of a ruleset, as read from the database."""

    name: str
    version: int
    kind: str
    status: str
    sha256: str
    description: str
    yaml_text: str
    author: str
    created_at: datetime
    publisher: str | None
    published_at: datetime | None
    retired_at: datetime | None
    validation: dict[str, Any]

    @classmethod
    def from_row(cls, row: RulesetVersionRow) -> VersionRecord:
        return cls(
            name=row.name,
            version=row.version,
            kind=row.kind,
            status=row.status,
            sha256=row.sha256,
            description=row.description,
            yaml_text=row.yaml_text,
            author=row.author,
            created_at=as_utc(row.created_at) or utcnow(),
            publisher=row.publisher,
            published_at=as_utc(row.published_at),
            retired_at=as_utc(row.retired_at),
            validation=dict(row.validation),
        )

    def summary(self) -> dict[str, Any]:
        """The version's metadata without its text or validation report."""
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "status": self.status,
            "sha256": self.sha256,
            "description": self.description,
            "author": self.author,
            "created_at": iso(self.created_at),
            "publisher": self.publisher,
            "published_at": iso(self.published_at),
            "retired_at": iso(self.retired_at),
        }


@dataclass(frozen=True)
class RulesetRecord:
    """A ruleset name with its kind and its active and shadow pointers."""

    name: str
    kind: str
    active_version: int | None
    shadow_version: int | None
    is_kind_default: bool
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "active_version": self.active_version,
            "shadow_version": self.shadow_version,
            "kind_default": self.is_kind_default,
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True)
class LiveVersion:
    """A version live decisions evaluate: the active one of a ruleset, or its shadow."""

    name: str
    kind: str
    version: int
    sha256: str
    yaml_text: str


@dataclass(frozen=True)
class LiveState:
    """Everything a worker's registry needs, read at one generation."""

    generation: int
    active: tuple[LiveVersion, ...]
    shadows: dict[str, LiveVersion]
    kind_defaults: dict[str, str]


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "detail": self.detail,
        }


async def lock_store(session: AsyncSession, *, bump: bool) -> int:
    """Take the ruleset store's write lock for this transaction; with `bump`, advance the generation.

    Every lifecycle change starts by writing the single generation row, so concurrent changes from
    several processes queue behind each other on both PostgreSQL (row lock) and SQLite (write lock).
    """
    values: dict[str, Any] = {"generation": RulesetGenerationRow.generation + (1 if bump else 0)}
    if bump:
        values["changed_at"] = utcnow()
    await session.execute(update(RulesetGenerationRow).where(RulesetGenerationRow.id == 1).values(**values))
    return await current_generation(session)


async def current_generation(session: AsyncSession) -> int:
    value = await session.scalar(select(RulesetGenerationRow.generation).where(RulesetGenerationRow.id == 1))
    return int(value or 0)


async def get_version_row(session: AsyncSession, name: str, version: int) -> RulesetVersionRow | None:
    return await session.scalar(
        select(RulesetVersionRow).where(RulesetVersionRow.name == name, RulesetVersionRow.version == version)
    )


async def get_version(session: AsyncSession, name: str, version: int) -> VersionRecord | None:
    row = await get_version_row(session, name, version)
    return VersionRecord.from_row(row) if row is not None else None


async def find_by_sha256(session: AsyncSession, name: str, sha256: str) -> VersionRecord | None:
    row = await session.scalar(
        select(RulesetVersionRow).where(RulesetVersionRow.name == name, RulesetVersionRow.sha256 == sha256)
    )
    return VersionRecord.from_row(row) if row is not None else None


async def next_version_number(session: AsyncSession, name: str) -> int:
    highest = await session.scalar(
        select(func.max(RulesetVersionRow.version)).where(RulesetVersionRow.name == name)
    )
    return int(highest or 0) + 1


async def list_versions(session: AsyncSession, name: str) -> list[VersionRecord]:
    rows = await session.scalars(
        select(RulesetVersionRow).where(RulesetVersionRow.name == name).order_by(RulesetVersionRow.version)
    )
    return [VersionRecord.from_row(row) for row in rows]


async def get_ruleset_row(session: AsyncSession, name: str) -> RulesetRow | None:
    return await session.get(RulesetRow, name)


async def kind_defaults(session: AsyncSession) -> dict[str, str]:
    rows = await session.scalars(select(RulesetKindRow))
    return {row.kind: row.ruleset_name for row in rows}


def _ruleset_record(row: RulesetRow, defaults: dict[str, str]) -> RulesetRecord:
    return RulesetRecord(
        name=row.name,
        kind=row.kind,
        active_version=row.active_version,
        shadow_version=row.shadow_version,
        is_kind_default=defaults.get(row.kind) == row.name,
        updated_at=as_utc(row.updated_at) or utcnow(),
    )


async def get_ruleset(session: AsyncSession, name: str) -> RulesetRecord | None:
    row = await get_ruleset_row(session, name)
    if row is None:
        return None
    return _ruleset_record(row, await kind_defaults(session))


async def list_rulesets(session: AsyncSession, kind: str | None = None) -> list[RulesetRecord]:
    query = select(RulesetRow).order_by(RulesetRow.kind, RulesetRow.name)
    if kind is not None:
        query = query.where(RulesetRow.kind == kind)
    defaults = await kind_defaults(session)
    return [_ruleset_record(row, defaults) for row in await session.scalars(query)]


async def is_empty(session: AsyncSession) -> bool:
    return await session.scalar(select(func.count()).select_from(RulesetVersionRow)) == 0


async def write_audit(
    session: AsyncSession, *, actor: str, action: str, name: str, detail: dict[str, Any]
) -> None:
    await audit(session, actor, action, subject_of(name), detail)


async def audit_trail(session: AsyncSession, name: str, limit: int = 100) -> list[AuditRecord]:
    rows = await session.scalars(
        select(AuditEntry)
        .where(AuditEntry.subject == subject_of(name))
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    return [
        AuditRecord(
            at=as_utc(row.at) or utcnow(),
            actor=row.actor,
            action=row.action,
            subject=row.subject,
            detail=dict(row.detail),
        )
        for row in rows
    ]


async def _live_versions(session: AsyncSession, pointer: Any) -> list[LiveVersion]:
    rows = await session.execute(
        select(
            RulesetVersionRow.name,
            RulesetVersionRow.kind,
            RulesetVersionRow.version,
            RulesetVersionRow.sha256,
            RulesetVersionRow.yaml_text,
        )
        .join(RulesetRow, RulesetRow.name == RulesetVersionRow.name)
        .where(RulesetVersionRow.version == pointer)
        .order_by(RulesetVersionRow.name)
    )
    return [LiveVersion(*row) for row in rows]


async def live_state(session: AsyncSession, attempts: int = 5) -> LiveState:
    """Read the active and shadow versions at one generation (retried if a change lands in between)."""
    for _ in range(attempts):
        before = await current_generation(session)
        active = await _live_versions(session, RulesetRow.active_version)
        shadows = await _live_versions(session, RulesetRow.shadow_version)
        defaults = await kind_defaults(session)
        after = await current_generation(session)
        if before == after:
            return LiveState(
                generation=after,
                active=tuple(active),
                shadows={live.name: live for live in shadows},
                kind_defaults=defaults,
            )
        await session.rollback()
    raise RuntimeError("the ruleset store kept changing while it was read; try again")
