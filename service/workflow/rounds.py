"""What happens to approval cases without an approver: receipts closing executed transfers, and the
sweeper's round (escalating or expiring cases past their SLA, executing approved cases a stopped worker
left unexecuted). Each is a transition of `service.workflow.cases.Workflow`, reached through `CaseOps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Select, and_, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import NullType

from service.db.models import ApprovalCase, ApprovalStep, ChangeRequest
from service.domain.cases import escalate
from service.stock import StockEvent
from service.workflow.writes import Stale

SYSTEM_ACTOR = "workflow"
ATTEMPTS = 5  # a transition that loses a race reads the case again, at most this often
RECOVERY_OVERLAP = timedelta(seconds=5)  # a round of the moves' recovery looks this far into the last one's


class Likely(FunctionElement[Any]):
    """A condition that holds for most rows, as SQLite's planner is told (`likely(...)`); elsewhere the
    condition itself."""

    type = NullType()  # as Boolean, it would be compared with 1 on SQLite
    name = "likely"
    inherit_cache = True


@compiles(Likely)
def _condition(element: Likely, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(Likely, "sqlite")
def _likely(element: Likely, compiler: Any, **kw: Any) -> str:
    return f"likely({compiler.process(element.clauses, **kw)})"


# pending cases, as the partial index of pending cases by SLA names them: written into the statement, so
# that PostgreSQL's plan of a prepared statement may use that index too; SQLite, without statistics,
# would otherwise take the index of (status, created_at) for it and sort every pending case by SLA
PENDING = Likely(ApprovalCase.status == literal_column("'pending'"))
# executed transfers, as the partial index of them by update time names them (as PENDING is written)
EXECUTED_TRANSFERS = and_(
    Likely(ApprovalCase.status == literal_column("'executed'")),
    Likely(ApprovalCase.kind == literal_column("'transfer'")),
)


class CaseOps(Protocol):
    """What the rounds use of the workflow."""

    recovery_grace: timedelta

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...

    def writing(self) -> AbstractAsyncContextManager[AsyncSession]: ...

    async def load(self, session: AsyncSession, case_id: str) -> dict[str, Any]: ...

    async def request_of(self, session: AsyncSession, case: dict[str, Any]) -> ChangeRequest: ...

    def clock(self) -> datetime: ...

    async def transition(
        self,
        session: AsyncSession,
        case: dict[str, Any],
        *,
        status: str,
        action: str,
        actor: str,
        now: datetime,
        detail: dict[str, Any],
        event: str | None,
        changes: dict[str, Any] | None = None,
    ) -> dict[str, Any]: ...

    async def execute_safely(self, case_id: str, now: datetime | None = None) -> dict[str, Any] | None: ...

    async def recover_moves(self, now: datetime) -> int: ...


SHIPMENT = "shp-"  # a transfer case's shipment id is this and its case id


def shipment_of(case_id: str) -> str:
    """The shipment id of a transfer case (named by its `executed` step, and by the receipt closing it)."""
    return SHIPMENT + case_id


def has_shipped(kind: str, status: str) -> bool:
    """Whether a case of this kind in this status has shipped its stock (a transfer executed or received)."""
    return kind == "transfer" and status in ("executed", "received")


def overdue(case: dict[str, Any], now: datetime) -> bool:
    due = case["sla_due_at"]
    return due is not None and due <= now


def shipped_cases(events: Sequence[StockEvent]) -> list[str]:
    """The cases whose shipment id a `transfer_in` among `events` names."""
    return [
        e.reference.removeprefix(SHIPMENT)
        for e in events
        if e.type == "transfer_in" and e.reference and e.reference.startswith(SHIPMENT)
    ]


async def receive_shipments(wf: CaseOps, events: Sequence[StockEvent], statuses: Sequence[str]) -> int:
    """Close executed transfers whose shipment a `transfer_in` names; answers how many."""
    arrivals = {
        e.reference: e
        for e, status in zip(events, statuses, strict=True)
        # a duplicate too: a retry after a failure here closes the case then
        if status in ("applied", "duplicate") and e.type == "transfer_in" and e.reference
    }
    if not arrivals:
        return 0
    # a case's shipment id is `shipment_of` its id (an earlier version also recorded it on the request)
    cases = {ref.removeprefix(SHIPMENT): ref for ref in arrivals if ref.startswith(SHIPMENT)}
    if not cases:
        return 0
    async with wf.sessions() as session:
        found = [
            (cases[case_id], case_id, body)
            for case_id, body in (
                await session.execute(
                    select(ChangeRequest.case_id, ChangeRequest.body).where(
                        ChangeRequest.case_id.in_(list(cases)), ChangeRequest.kind == "transfer"
                    )
                )
            ).all()
        ]
    closed = 0
    for shipment, case_id, body in found:
        event = arrivals[shipment]
        if event.location != body["to_location"]:
            continue  # not the destination: the shipment is still on its way there
        now = wf.clock()
        detail = {
            "shipment_id": shipment,
            "event_id": event.event_id,
            "qty": event.qty,
            "location": event.location,
        }
        for _attempt in range(ATTEMPTS):
            try:
                async with wf.writing() as session:
                    case = await wf.load(session, case_id)
                    if case["status"] != "executed":
                        break
                    await wf.transition(
                        session, case, status="received", action="received", actor=SYSTEM_ACTOR, now=now,
                        detail=detail, event="case.received",
                    )  # fmt: skip
                    closed += 1
                break
            except Stale:
                continue
    return closed


def executed_transfers(since: datetime, upto: datetime) -> Select[str, datetime]:
    """The ids and update times of transfers executed (and not yet received) in (since, upto]."""
    return select(ApprovalCase.id, ApprovalCase.updated_at).where(
        EXECUTED_TRANSFERS, ApprovalCase.updated_at > since, ApprovalCase.updated_at <= upto
    )


def executed_steps(case_ids: Sequence[str]) -> Select[dict[str, Any], datetime]:
    """The detail and time of these cases' `executed` steps (a transfer's: what its stock move is)."""
    return select(ApprovalStep.detail, ApprovalStep.at).where(
        ApprovalStep.case_id.in_(case_ids), ApprovalStep.action == "executed"
    )


def due_cases(now: datetime, limit: int) -> Select[Any]:
    """The ids of pending cases past their SLA at `now`, the longest overdue first."""
    return (
        select(ApprovalCase.id)
        .where(PENDING, ApprovalCase.sla_due_at <= now)
        .order_by(ApprovalCase.sla_due_at)
        .limit(limit)
    )


async def sweep_cases(wf: CaseOps, now: datetime, limit: int) -> dict[str, int]:
    """One round of the sweeper (see `Workflow.sweep`)."""
    counts = {"escalated": 0, "expired": 0, "executed": 0, "moved": 0}
    async with wf.sessions() as session:
        due = (await session.execute(due_cases(now, limit))).scalars().all()
        stuck = (
            (
                await session.execute(
                    select(ApprovalCase.id)
                    .where(
                        ApprovalCase.status == "approved",
                        ApprovalCase.updated_at <= now - wf.recovery_grace,
                    )
                    .order_by(ApprovalCase.updated_at)
                    .limit(limit)
                )
            )
            .scalars()
            .all()
        )
    for case_id in due:
        moved = await _escalate(wf, case_id, now)
        if moved is not None:
            counts[moved] += 1
    for case_id in stuck:
        await wf.execute_safely(case_id, now)
        counts["executed"] += 1
    counts["moved"] = await wf.recover_moves(now)
    return counts


async def _escalate(wf: CaseOps, case_id: str, now: datetime) -> str | None:
    try:
        async with wf.writing() as session:
            case = await wf.load(session, case_id)
            if case["status"] != "pending" or not overdue(case, now):
                return None  # another worker got here first
            above = escalate(case["approvers"], case["escalation"])
            if above is None:
                await wf.transition(
                    session, case, status="expired", action="expired", actor=SYSTEM_ACTOR, now=now,
                    detail={"level": case["escalation_level"], "reason": "the SLA passed at the end of the chain"},
                    event="case.expired", changes={"outcome_reason": "no approval before the last SLA"},
                )  # fmt: skip
                return "expired"
            approvers, rest = above
            hours = case["sla_hours"] or 0.0
            # under `all` the new level's roles are what must approve; under `any` the count stays
            all_of = (await wf.request_of(session, case)).approval == "all"
            required = len(approvers) if all_of else case["approvals_required"]
            await wf.transition(
                session, case, status="pending", action="escalated", actor=SYSTEM_ACTOR, now=now,
                detail={"from": case["approvers"], "to": approvers, "level": case["escalation_level"] + 1},
                event="case.escalated",
                changes={
                    "approvers": approvers,
                    "escalation": rest,
                    "escalation_level": case["escalation_level"] + 1,
                    "sla_due_at": now + timedelta(hours=hours),
                    "approvals_required": required,
                },
            )  # fmt: skip
            return "escalated"
    except Stale:
        return None
