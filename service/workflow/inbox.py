"""The approvers' inbox: cases by role, status, kind and SLA, oldest first, in pages.

A page ends with `next_cursor` when more cases follow; passing it back answers the next page. The cursor
is the (created_at, id) of the last case answered, so pages neither skip nor repeat a case while others
are filed meanwhile. Filtering by role reads `approval_case_roles` (the roles that may act on a pending
case now), one index range in creation order; a role acts on pending cases only, so with another status
the role filter finds none.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select, tuple_

from service.db.models import ApprovalCase, ApprovalCaseRole
from service.errors import FieldError, Invalid
from service.workflow.cases import CASE_COLUMNS, Workflow, case_from_row
from service.workflow.writes import case_summary

STATUSES = ("pending", "approved", "rejected", "expired", "cancelled", "executed", "blocked", "received")
KINDS = ("transfer", "markdown")


def encode_cursor(created_at: datetime, case_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{case_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, case_id = text.split("|", 1)
        return datetime.fromisoformat(at), case_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid(
            "cursor: not a cursor this inbox gave", [FieldError("cursor", "unknown cursor")]
        ) from None


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        reason = f"expected one of {', '.join(allowed)}"
        raise Invalid(f"{name}: {reason}", [FieldError(name, reason)])


def inbox_query(
    role: str | None,
    status: str,
    overdue: bool | None,
    kind: str | None,
    after: tuple[datetime, str] | None,
    now: datetime,
    limit: int,
) -> Select[Any]:
    """At most `limit` cases of an inbox, oldest first, after the case `after` names (created_at, id)."""
    if role is not None:
        index = ApprovalCaseRole
        query = (
            select(*CASE_COLUMNS)
            .select_from(index)
            .join(ApprovalCase, ApprovalCase.id == index.case_id)
            .where(index.role == role, index.status == status, ApprovalCase.status == status)
        )
        created, ident = index.created_at, index.case_id
        if kind is not None:
            query = query.where(index.kind == kind)
    else:
        query = select(*CASE_COLUMNS).where(ApprovalCase.status == status)
        created, ident = ApprovalCase.created_at, ApprovalCase.id
        if kind is not None:
            query = query.where(ApprovalCase.kind == kind)
    if overdue is True:
        query = query.where(ApprovalCase.sla_due_at <= now)
    elif overdue is False:
        query = query.where(or_(ApprovalCase.sla_due_at.is_(None), ApprovalCase.sla_due_at > now))
    if after is not None:
        # a row comparison: an index range from the cursor on (both planners walked the index from the
        # first case of the inbox for `created > ? OR (created = ? AND id > ?)` without statistics)
        query = query.where(tuple_(created, ident) > after)
    query = query.order_by(created, ident).limit(limit)
    return query


async def inbox(
    workflow: Workflow,
    *,
    role: str | None,
    status: str,
    overdue: bool | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    _choice("status", status, STATUSES)
    _choice("kind", kind, KINDS)
    after = decode_cursor(cursor) if cursor else None
    now = workflow.clock()
    query = inbox_query(role, status, overdue, kind, after, now, limit + 1)
    async with workflow.sessions() as session:
        rows = [case_from_row(row) for row in (await session.execute(query)).all()]
    page = rows[:limit]
    cases = []
    for case in page:
        out = case_summary(case)
        out["overdue"] = (
            case["status"] == "pending" and case["sla_due_at"] is not None and case["sla_due_at"] <= now
        )
        cases.append(out)
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
    return {"cases": cases, "next_cursor": next_cursor}
