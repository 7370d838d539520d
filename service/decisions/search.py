"""Finding logged decisions: by subject (the order, transfer or markdown id), kind and time window, and the
shadow differences recorded for a ruleset. Newest first, one page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.base import aware
from service.db.models.decisions import DecisionEntry


@dataclass(frozen=True)
class DecisionFilter:
    subject: str | None = None  # the order id of an allocation, the transfer or markdown id, ...
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ruleset: str | None = None
    with_shadow: bool = False


@dataclass(frozen=True)
class DecisionSummary:
    decision_id: str
    kind: str
    created_at: datetime
    subject: str | None
    actor: str | None
    ruleset: str
    version: int
    outcome: str | None
    shadow: dict[str, Any] | None


def _outcome(decision: dict[str, Any]) -> str | None:
    for key in ("status", "outcome", "action"):
        value = decision.get(key)
        if isinstance(value, str):
            return value
    return None


async def find_decisions(
    session: AsyncSession, wanted: DecisionFilter, offset: int, limit: int
) -> tuple[list[DecisionSummary], bool]:
    """One page of matching decisions, newest first, and whether there are more."""
    query = select(DecisionEntry)
    if wanted.subject:
        query = query.where(DecisionEntry.subject == wanted.subject)
    if wanted.kind:
        query = query.where(DecisionEntry.kind == wanted.kind)
    if wanted.since is not None:
        query = query.where(DecisionEntry.created_at >= wanted.since)
    if wanted.until is not None:
        query = query.where(DecisionEntry.created_at < wanted.until)
    if wanted.ruleset:
        query = query.where(DecisionEntry.ruleset_name == wanted.ruleset)
    if wanted.with_shadow:
        query = query.where(DecisionEntry.shadow.is_not(None))
    query = query.order_by(DecisionEntry.created_at.desc(), DecisionEntry.id.desc())
    rows = list((await session.execute(query.offset(offset).limit(limit + 1))).scalars())
    summaries = [
        DecisionSummary(
            decision_id=row.id,
            kind=row.kind,
            created_at=aware(row.created_at),
            subject=row.subject,
            actor=row.actor,
            ruleset=row.ruleset_name,
            version=row.ruleset_version,
            outcome=_outcome(row.decision or {}),
            shadow=row.shadow,
        )
        for row in rows[:limit]
    ]
    return summaries, len(rows) > limit
