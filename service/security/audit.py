"""The append-only audit log: who changed what, and when."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import AuditEntry


async def audit(
    session: AsyncSession,
    actor: str,
    action: str,
    subject: str,
    detail: dict[str, Any],
    note: str | None = None,
) -> None:
    """Append one audit row in the caller's transaction, so it commits (or not) with the change itself."""
    session.add(
        AuditEntry(
            at=datetime.now(UTC), actor=actor, action=action, subject=subject, detail=detail, note=note
        )
    )
