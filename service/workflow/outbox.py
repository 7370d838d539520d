"""Writing events to the outbox: always in the caller's transaction, beside the change they report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import OutboxEvent
from service.decisions.ids import new_decision_id


def add_event(session: AsyncSession, kind: str, subject: str, payload: dict[str, Any], now: datetime) -> str:
    """Add one outbox event to `session`'s transaction and answer its id (sortable, unique)."""
    event_id = new_decision_id()
    session.add(OutboxEvent(event_id=event_id, kind=kind, subject=subject, payload=payload, created_at=now))
    return event_id
