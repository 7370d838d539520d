"""The process view: how long approvals take and by whom they close, how often their SLA is missed, what
waits and for how long, and which exceptions are open for how long.

Definitions (docs/approvals.md, "Insights and audit"):
- cycle time: `closed_at - created_at` of a case closed by an approval or a rejection, grouped by case kind
  and by the `role` of the approved/rejected step that closed it (the last such step); p50 and p90 by
  linear interpolation between the nearest ranks.
- SLA breach: a case with an SLA breached it when it closed after `sla_due_at`, is still pending past it, or
  was escalated or expired; the rate is over the cases with an SLA created since `since`.
- age bands of what is open (pending cases, unresolved exceptions), by time since it was opened.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.base import aware
from service.db.models import ApprovalCase, ApprovalStep, ExceptionRecord
from service.workflow.exceptions import UNRESOLVED

AGE_BANDS: tuple[tuple[str, float], ...] = (
    ("under_1h", 3600),
    ("1h_to_4h", 4 * 3600),
    ("4h_to_24h", 24 * 3600),
    ("1d_to_3d", 3 * 86400),
    ("over_3d", math.inf),
)
CLOSING_ACTIONS = ("approved", "rejected")
BREACH_ACTIONS = ("escalated", "expired")


def age_band(seconds: float) -> str:
    for name, upper in AGE_BANDS:
        if seconds < upper:
            return name
    return AGE_BANDS[-1][0]


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the nearest ranks of a sorted, non-empty sequence."""
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class CycleTime(msgspec.Struct):
    kind: str
    role: str
    closed: int
    p50_seconds: float
    p90_seconds: float


class SlaBreaches(msgspec.Struct):
    kind: str
    cases: int
    breached: int
    breach_rate: float


class AgeCount(msgspec.Struct):
    kind: str
    age_band: str
    count: int


class ApprovalInsights(msgspec.Struct):
    since: datetime
    as_of: datetime
    cycle_time: list[CycleTime]
    sla: list[SlaBreaches]
    open_by_age: list[AgeCount]


class StateCount(msgspec.Struct):
    kind: str
    state: str
    count: int


class ExceptionInsights(msgspec.Struct):
    as_of: datetime
    open_by_age: list[AgeCount]
    by_state: list[StateCount]


def _age_counts(rows: Sequence[tuple[str, datetime]], now: datetime) -> list[AgeCount]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for kind, opened in rows:
        counts[(kind, age_band((now - aware(opened)).total_seconds()))] += 1
    order = {name: i for i, (name, _) in enumerate(AGE_BANDS)}
    return [
        AgeCount(kind, band, count)
        for (kind, band), count in sorted(counts.items(), key=lambda item: (item[0][0], order[item[0][1]]))
    ]


async def approval_insights(session: AsyncSession, since: datetime, now: datetime) -> ApprovalInsights:
    closed = (
        await session.execute(
            select(ApprovalCase.id, ApprovalCase.kind, ApprovalCase.created_at, ApprovalCase.closed_at).where(
                ApprovalCase.closed_at.is_not(None), ApprovalCase.closed_at >= since
            )
        )
    ).all()
    closing_role: dict[str, str] = {}
    if closed:
        steps = await session.execute(
            select(ApprovalStep.case_id, ApprovalStep.role)
            .where(
                ApprovalStep.case_id.in_([row.id for row in closed]),
                ApprovalStep.action.in_(CLOSING_ACTIONS),
            )
            .order_by(ApprovalStep.at, ApprovalStep.id)
        )
        for case_id, role in steps:
            closing_role[case_id] = role or "unknown"  # the last one closed the case
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in closed:
        role = closing_role.get(row.id)
        if role is not None:  # expired and cancelled cases were not closed by anyone
            seconds = (aware(row.closed_at) - aware(row.created_at)).total_seconds()
            durations[(row.kind, role)].append(seconds)
    cycle = []
    for (kind, role), values in sorted(durations.items()):
        values.sort()
        cycle.append(CycleTime(kind, role, len(values), percentile(values, 0.5), percentile(values, 0.9)))

    with_sla = (
        await session.execute(
            select(ApprovalCase.id, ApprovalCase.kind, ApprovalCase.sla_due_at, ApprovalCase.closed_at).where(
                ApprovalCase.sla_due_at.is_not(None), ApprovalCase.created_at >= since
            )
        )
    ).all()
    escalated: set[str] = set()
    if with_sla:
        escalated = set(
            (
                await session.execute(
                    select(ApprovalStep.case_id).where(
                        ApprovalStep.case_id.in_([row.id for row in with_sla]),
                        ApprovalStep.action.in_(BREACH_ACTIONS),
                    )
                )
            ).scalars()
        )
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for case_id, kind, due, closed_at in with_sla:
        ended = aware(closed_at) if closed_at is not None else now
        breached = case_id in escalated or (due is not None and ended > aware(due))
        totals[kind][0] += 1
        totals[kind][1] += int(breached)
    sla = [
        SlaBreaches(kind, cases, breached, round(breached / cases, 4))
        for kind, (cases, breached) in sorted(totals.items())
    ]

    pending = (
        await session.execute(
            select(ApprovalCase.kind, ApprovalCase.created_at).where(ApprovalCase.status == "pending")
        )
    ).all()
    return ApprovalInsights(
        since, now, cycle, sla, _age_counts([(kind, created) for kind, created in pending], now)
    )


async def exception_insights(session: AsyncSession, now: datetime) -> ExceptionInsights:
    rows = (
        await session.execute(
            select(ExceptionRecord.kind, ExceptionRecord.state, ExceptionRecord.opened_at).where(
                ExceptionRecord.state.in_(UNRESOLVED)
            )
        )
    ).all()
    states: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        states[(row.kind, row.state)] += 1
    return ExceptionInsights(
        now,
        _age_counts([(row.kind, row.opened_at) for row in rows], now),
        [StateCount(kind, state, count) for (kind, state), count in sorted(states.items())],
    )
