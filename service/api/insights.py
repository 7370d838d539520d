"""The process view (`/v1/insights/approvals`, `/v1/insights/exceptions`) and a subject's audit trail
(`/v1/audit?subject=transfer:t-77`). docs/approvals.md, "Insights and audit"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Router, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from sqlalchemy import select

from service.db.base import aware
from service.db.models import AuditEntry
from service.errors import FieldError, Invalid
from service.security import requires
from service.services import Services
from service.workflow.insights import (
    ApprovalInsights,
    ExceptionInsights,
    approval_insights,
    exception_insights,
)


class AuditRow(msgspec.Struct):
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    note: str | None


class AuditOut(msgspec.Struct):
    subject: str
    entries: list[AuditRow]
    next: int | None  # pass as `after` for the next page


@get("/insights/approvals", opt=requires("planner"), operation_id="getApprovalInsights")
async def get_approval_insights(
    services: NamedDependency[Services],
    days: Annotated[
        int, QueryParameter(description="look back this many days (closed and created cases)", ge=1, le=366)
    ] = 30,
) -> ApprovalInsights:
    """Cycle time p50/p90 by kind and closing role, SLA breach rate by kind, pending cases by age band."""
    now = datetime.now(UTC)
    async with services.sessions() as session:
        return await approval_insights(session, now - timedelta(days=days), now)


@get("/insights/exceptions", opt=requires("stock", "planner"), operation_id="getExceptionInsights")
async def get_exception_insights(services: NamedDependency[Services]) -> ExceptionInsights:
    """Unresolved exceptions by kind and age band, and by kind and state."""
    async with services.sessions() as session:
        return await exception_insights(session, datetime.now(UTC))


@get("/audit", opt=requires("planner"), operation_id="getAuditTrail")
async def get_audit(
    services: NamedDependency[Services],
    # optional to the framework so that leaving it out is answered like any other bad value (422, named)
    subject: Annotated[
        str | None,
        QueryParameter(
            description="required: e.g. transfer:t-77, exception:<id>, ruleset:<name>", max_length=200
        ),
    ] = None,
    after: Annotated[int | None, QueryParameter(description="the `next` of the previous page", ge=0)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 500,
) -> AuditOut:
    """Every audit row of one subject, oldest first."""
    if subject is None or not subject.strip():
        reason = "required: the subject whose trail to read, e.g. transfer:t-77"
        raise Invalid(f"query.subject: {reason}", [FieldError("query.subject", reason)])
    query = select(AuditEntry).where(AuditEntry.subject == subject)
    if after is not None:
        query = query.where(AuditEntry.id > after)
    async with services.sessions() as session:
        rows = list((await session.execute(query.order_by(AuditEntry.id).limit(limit + 1))).scalars())
    page = rows[:limit]
    entries = [
        AuditRow(row.id, aware(row.at), row.actor, row.action, row.subject, row.detail, row.note)
        for row in page
    ]
    return AuditOut(subject, entries, page[-1].id if len(rows) > limit else None)


router = Router(
    path="/v1",
    route_handlers=[get_approval_insights, get_exception_insights, get_audit],
    tags=["insights"],
)
