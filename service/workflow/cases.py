"""Approval cases: opening them, approvers acting on them, SLA escalation, and executing approved requests.

Every transition is one transaction: the case row moves from the version it was read at to the next
(`UPDATE ... WHERE id = ? AND version = ?`, so of two racing writers exactly one moves it and the other
reads again), and an `ApprovalStep`, an audit row and an outbox event are written beside it.

Executing an approved case happens after its approval commits:
- a markdown stores the new price with its effective time and moves to `executed` in one transaction;
- a transfer re-checks the source floor on live stock (`blocked` if it would now breach it), then commits
  to the move by giving the request its shipment id, then applies one `transfer_out` event (source ->
  destination in transit) whose event id derives from the case id, then moves to `executed`. The event is
  applied at most once, so running this again after a crash (the sweeper's recovery pass does, for every
  case left `approved`) finishes the job without moving stock twice; once the shipment id is set the floor
  is not checked again, since the stock may already have moved.
A `transfer_in` at the destination that names the shipment id as its `reference` moves the case to
`received`.

`clock` gives the time of every transition (tests move it by hand). `hook`, when set, is awaited at named
points of a transition (`before_write`: between reading a case and writing it; `before_move`: after the
shipment is committed to, before the stock moves; `after_move`) so tests can inject a racing approver or a crash there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.base import aware, utc_now
from service.db.models import ApprovalCase, ApprovalCaseRole, ApprovalStep, ChangeRequest, ItemPrice
from service.decisions.approvals import transfer_floor
from service.decisions.context import context_from
from service.domain.cases import Approval, acting_role, escalate, refusal, satisfied
from service.errors import Conflict, FieldError, Forbidden, Invalid, NotFound
from service.security.audit import audit
from service.services import Services
from service.stock import StockEvent
from service.workflow.exceptions import clear_exception
from service.workflow.outbox import add_event

log = logging.getLogger("retail_policy.workflow")

SYSTEM_ACTOR = "workflow"
ATTEMPTS = 5  # a transition that loses a race reads the case again, at most this often
RECOVERY_GRACE = timedelta(seconds=30)  # an approved case this old is executed by the sweeper
Clock = Callable[[], datetime]
Hook = Callable[[str, str], Awaitable[None]]
CASE_COLUMNS = list(ApprovalCase.__table__.columns)


class _Stale(Exception):
    """The case moved since it was read: read it again."""


def case_from_row(row: Any) -> dict[str, Any]:
    case = dict(row._mapping)
    for key in ("sla_due_at", "created_at", "updated_at", "closed_at"):
        if case[key] is not None:
            case[key] = aware(case[key])
    return case


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def case_summary(case: dict[str, Any]) -> dict[str, Any]:
    """A case as events and answers carry it (without its steps)."""
    return {
        "id": case["id"],
        "kind": case["kind"],
        "subject": case["subject"],
        "requested_by": case["requested_by"],
        "decision_id": case["decision_id"],
        "status": case["status"],
        "approvers": list(case["approvers"]),
        "approvals_required": case["approvals_required"],
        "escalation": list(case["escalation"]),
        "escalation_level": case["escalation_level"],
        "sla_hours": case["sla_hours"],
        "sla_due_at": _iso(case["sla_due_at"]),
        "created_at": _iso(case["created_at"]),
        "updated_at": _iso(case["updated_at"]),
        "closed_at": _iso(case["closed_at"]),
        "outcome_reason": case["outcome_reason"],
        "version": case["version"],
    }


def step_view(step: ApprovalStep) -> dict[str, Any]:
    return {
        "at": aware(step.at).isoformat(),
        "action": step.action,
        "actor": step.actor,
        "role": step.role,
        "comment": step.comment,
        "detail": step.detail,
    }


@dataclass
class Workflow:
    services: Services
    clock: Clock = utc_now
    hook: Hook | None = None
    recovery_grace: timedelta = RECOVERY_GRACE
    _lock: asyncio.Lock | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        engine = getattr(self.services, "engine", None)
        if engine is not None and engine.dialect.name == "sqlite":
            self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def serial(self) -> AsyncIterator[None]:
        """On SQLite, one write transaction at a time per process: waiting for this lock costs nothing,
        where waiting for SQLite's own lock sleeps in its busy handler."""
        if self._lock is None:
            yield
            return
        async with self._lock:
            yield

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """A write transaction (see `serial`)."""
        async with self.serial(), self.sessions.begin() as session:
            yield session

    @property
    def sessions(self) -> Any:
        return self.services.sessions

    async def _at(self, point: str, case_id: str) -> None:
        if self.hook is not None:
            await self.hook(point, case_id)

    # reading

    async def load(self, session: AsyncSession, case_id: str) -> dict[str, Any]:
        row = (await session.execute(select(*CASE_COLUMNS).where(ApprovalCase.id == case_id))).one_or_none()
        if row is None:
            raise NotFound(f"no approval case {case_id!r}", [FieldError("id", "unknown case")])
        return case_from_row(row)

    async def request_of(self, session: AsyncSession, case: dict[str, Any]) -> ChangeRequest:
        found = await session.get(ChangeRequest, case["subject"])
        if found is None:  # a case is always opened with its request, in one transaction
            raise NotFound(f"no request for case {case['id']!r}", [FieldError("id", "no request")])
        return found

    async def steps(self, session: AsyncSession, case_id: str) -> list[ApprovalStep]:
        query = select(ApprovalStep).where(ApprovalStep.case_id == case_id).order_by(ApprovalStep.id)
        return list((await session.execute(query)).scalars())

    async def view(
        self,
        session: AsyncSession | None,
        case_id: str,
        known: tuple[dict[str, Any], ChangeRequest, list[ApprovalStep]] | None = None,
    ) -> dict[str, Any]:
        """A case with its approval mode, the approvals that count now and every step (`known`: the case,
        its request and its steps as this worker just wrote them, saving their reads; then `session` may
        be None)."""
        if known is None:
            assert session is not None
            case = await self.load(session, case_id)
            request = await self.request_of(session, case)
            steps = await self.steps(session, case_id)
        else:
            case, request, steps = known
        out = case_summary(case)
        out["approval"] = request.approval
        out["approvals"] = [
            {"person": s.actor, "role": s.role, "at": aware(s.at).isoformat()}
            for s in steps
            if s.action == "approved" and s.role is not None and s.role in case["approvers"]
        ]
        out["overdue"] = case["status"] == "pending" and _overdue(case, self.clock())
        out["steps"] = [step_view(s) for s in steps]
        return out

    # writing

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
        role: str | None = None,
        comment: str | None = None,
        changes: dict[str, Any] | None = None,
        extra_events: Sequence[tuple[str, dict[str, Any]]] = (),
        written: list[ApprovalStep] | None = None,
    ) -> dict[str, Any]:
        """Move `case` (as read, at its version) one step, or raise `_Stale` when it moved meanwhile.
        Answers the case as it now is; the step written is appended to `written` when given."""
        values: dict[str, Any] = {"version": case["version"] + 1, "updated_at": now, "status": status}
        values.update(changes or {})
        if case["status"] == "pending" and status != "pending":
            values["closed_at"] = now
        result = await session.execute(
            update(ApprovalCase)
            .where(ApprovalCase.id == case["id"], ApprovalCase.version == case["version"])
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise _Stale
        after = {**case, **values}
        written_step = ApprovalStep(
            case_id=case["id"], at=now, action=action, actor=actor, role=role, comment=comment, detail=detail
        )
        session.add(written_step)
        if written is not None:
            written.append(written_step)
        await audit(
            session,
            actor,
            f"case.{action}",
            case["subject"],
            {"case_id": case["id"], "status": status, "role": role, **detail},
            note=comment,
        )
        step = {"action": action, "actor": actor, "role": role, "comment": comment, "detail": detail}
        if event is not None:
            add_event(session, event, case["subject"], {"case": case_summary(after), "step": step}, now)
        for kind, payload in extra_events:
            add_event(session, kind, case["subject"], {"case": case_summary(after), **payload}, now)
        due = values.get("sla_due_at")
        if status != "pending" or (due is not None and due > now):
            # no longer stuck (closed, or escalated with a fresh SLA): its exception clears with it
            await clear_exception(session, "stuck_approval", case["id"], now)
        # the inbox index lists the roles that may act on a pending case: gone once it leaves pending
        if "approvers" in values or (case["status"] == "pending" and status != "pending"):
            await session.execute(delete(ApprovalCaseRole).where(ApprovalCaseRole.case_id == case["id"]))
            if status == "pending":
                await self._index_roles(session, after)
        return after

    async def _index_roles(self, session: AsyncSession, case: dict[str, Any]) -> None:
        rows = [
            {
                "case_id": case["id"],
                "role": role,
                "status": case["status"],
                "kind": case["kind"],
                "created_at": case["created_at"],
            }
            for role in dict.fromkeys(case["approvers"])
        ]
        if rows:
            await session.execute(insert(ApprovalCaseRole), rows)

    async def open(
        self,
        session: AsyncSession,
        *,
        case_id: str,
        kind: str,
        subject: str,
        requested_by: str,
        decision_id: str,
        decision: dict[str, Any],
        escalation: Sequence[str],
        now: datetime,
    ) -> dict[str, Any]:
        """Open the case of a decided request in the caller's transaction: `pending` when routed, else
        approved or rejected by the ruleset at once (each a step of its own)."""
        outcome = decision["outcome"]
        routed = outcome == "route"
        sla = decision.get("sla_hours") if routed else None
        case = {
            "id": case_id,
            "kind": kind,
            "subject": subject,
            "requested_by": requested_by,
            "decision_id": decision_id,
            "status": "pending",
            "approvers": list(decision.get("approvers", [])) if routed else [],
            "approvals_required": int(decision.get("approvals_required", 1)) if routed else 0,
            "escalation": list(escalation) if routed else [],
            "escalation_level": 0,
            "sla_hours": None if sla is None else float(sla),
            "sla_due_at": None if sla is None else now + timedelta(hours=sla),
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "outcome_reason": decision.get("reason"),
            "version": 0,
        }
        await session.execute(insert(ApprovalCase), [case])
        step = {"outcome": outcome, "decision_id": decision_id}
        session.add(ApprovalStep(case_id=case_id, at=now, action="opened", actor=requested_by, detail=step))
        await audit(session, requested_by, "case.opened", subject, {"case_id": case_id, **step})
        add_event(session, "case.opened", subject, {"case": case_summary(case), "decision": decision}, now)
        if routed:
            await self._index_roles(session, case)
            return case
        ruleset = SYSTEM_ACTOR
        detail = {"by": "ruleset", "decision_id": decision_id}
        if outcome == "approve":
            return await self.transition(
                session, case, status="approved", action="approved", actor=ruleset, now=now,
                detail=detail, event="case.approved",
            )  # fmt: skip
        return await self.transition(
            session, case, status="rejected", action="rejected", actor=ruleset, now=now,
            detail=detail, event="case.rejected", comment=decision.get("reason"),
        )  # fmt: skip

    async def act(
        self, case_id: str, person: str, holds: Callable[[str], bool], verdict: str, comment: str | None
    ) -> dict[str, Any]:
        """An approver approves or rejects a case; answers the case as it now is (with its steps)."""
        if verdict == "reject" and not (comment and comment.strip()):
            raise _invalid("comment", "a rejection needs a comment saying why")
        for _attempt in range(ATTEMPTS):
            now = self.clock()
            try:
                async with self.sessions() as session:
                    case = await self.load(session, case_id)
                    request = await self.request_of(session, case)
                    steps = await self.steps(session, case_id)
                approvals = [
                    Approval(s.actor, s.role) for s in steps if s.action == "approved" and s.role is not None
                ]
                requesters = {request.requested_by, str(request.body["requested_by"]["id"])}
                why = refusal(
                    person, requesters, case["status"], case["approvers"], approvals, holds, verdict
                )
                if why is not None:
                    problem = Forbidden if why.status == 403 else Conflict
                    raise problem(why.reason, [FieldError(why.field, why.reason)])
                role = acting_role(request.approval, case["approvers"], approvals, holds)
                given = [*approvals, Approval(person, str(role))]
                done = verdict == "approve" and satisfied(
                    request.approval, case["approvers"], case["approvals_required"], given
                )
                # the approval that completes a transfer checks the source floor on live stock first, so
                # that its own transaction commits to the move (the shipment id) when the floor holds
                blocked, shipment = None, None
                if done and case["kind"] == "transfer" and request.shipment_id is None:
                    body = request.body
                    blocked = await self._source_floor_breach(
                        body["sku"], body["from_location"], body["qty"], now
                    )
                    shipment = None if blocked is not None else f"shp-{case_id}"
                # the write names the version read, so it needs no lock held since the read
                await self._at("before_write", case_id)
                written = list(steps)
                async with self.writing() as session:
                    after = await self._decide(
                        session, case, request, person, role, verdict, comment, now, done, shipment, written
                    )
            except _Stale:
                continue
            final: dict[str, Any] | None = after
            if after["status"] == "approved":
                final = await self.execute_safely(
                    case_id, now, (after, request), committed=shipment, blocked=blocked, written=written
                )
            if final is None:  # not known how the case stands: read it
                async with self.sessions() as session:
                    return await self.view(session, case_id)
            return await self.view(None, case_id, (final, request, written))
        raise Conflict(
            "the case kept changing while this action was applied; try again",
            [FieldError("version", "changed concurrently")],
        )

    async def _decide(
        self,
        session: AsyncSession,
        case: dict[str, Any],
        request: ChangeRequest,
        person: str,
        role: str | None,
        verdict: str,
        comment: str | None,
        now: datetime,
        done: bool,
        shipment: str | None,
        written: list[ApprovalStep],
    ) -> dict[str, Any]:
        """The transition one approval or rejection makes (`done`: the approval completes the case;
        `shipment`: the approved transfer's move is committed to in the same transaction)."""
        detail = {"level": case["escalation_level"]}
        if verdict == "reject":
            return await self.transition(
                session, case, status="rejected", action="rejected", actor=person, role=role,
                comment=comment, now=now, detail=detail, event="case.rejected",
                changes={"outcome_reason": comment}, written=written,
            )  # fmt: skip
        after = await self.transition(
            session, case, status="approved" if done else "pending", action="approved",
            actor=person, role=role, comment=comment, now=now, detail=detail,
            event="case.approved" if done else None, written=written,
        )  # fmt: skip
        if shipment is not None:
            await self._commit_shipment(session, request, shipment)
        return after

    async def _commit_shipment(self, session: AsyncSession, request: ChangeRequest, shipment: str) -> None:
        """From here on the transfer is finished, never checked again (its stock may have moved)."""
        await session.execute(
            update(ChangeRequest)
            .where(ChangeRequest.id == request.id, ChangeRequest.shipment_id.is_(None))
            .values(shipment_id=shipment)
        )

    # executing

    async def execute_safely(
        self,
        case_id: str,
        now: datetime | None = None,
        known: tuple[dict[str, Any], ChangeRequest] | None = None,
        **approval: Any,
    ) -> dict[str, Any] | None:
        """Execute an approved case; a failure leaves it approved for the recovery pass. Answers the case
        as this worker left it, or None when it does not know (another worker moved it, or a failure).
        `approval`: what the approving request already did (see `_execute_transfer`)."""
        try:
            return await self.execute(case_id, now, known, **approval)
        except Exception:
            log.exception("executing approved case %s failed; the sweeper retries it", case_id)
            return None

    async def execute(
        self,
        case_id: str,
        now: datetime | None = None,
        known: tuple[dict[str, Any], ChangeRequest] | None = None,
        **approval: Any,
    ) -> dict[str, Any] | None:
        now = now or self.clock()
        if known is None:
            async with self.sessions() as session:
                case = await self.load(session, case_id)
                request = await self.request_of(session, case)
        else:
            case, request = known
        if case["status"] != "approved":
            return None
        if case["kind"] == "markdown":
            return await self._execute_markdown(case, request, now, approval.get("written"))
        return await self._execute_transfer(case, request, now, **approval)

    async def _execute_markdown(
        self, case: dict[str, Any], request: ChangeRequest, now: datetime, written: list[ApprovalStep] | None
    ) -> dict[str, Any] | None:
        body = request.body
        starts = datetime.combine(datetime.fromisoformat(body["effective_from"]).date(), time(0), UTC)
        effective_at = max(starts, now)  # approved late: the price holds from the approval on
        change = {
            "sku": body["sku"],
            "price": body["proposed_price"],
            "effective_at": effective_at.isoformat(),
        }
        try:
            async with self.writing() as session:
                session.add(
                    ItemPrice(
                        sku=body["sku"],
                        price=float(body["proposed_price"]),
                        effective_at=effective_at,
                        case_id=case["id"],
                        created_at=now,
                    )
                )
                await session.flush()
                after = await self.transition(
                    session, case, status="executed", action="executed", actor=SYSTEM_ACTOR, now=now,
                    detail=change, event="case.executed",
                    extra_events=[("markdown.price_changed", {"price_change": change})], written=written,
                )  # fmt: skip
        except (_Stale, IntegrityError):
            return None  # another worker executed it
        self.services.master_data.invalidate()
        return after

    async def _execute_transfer(
        self,
        case: dict[str, Any],
        request: ChangeRequest,
        now: datetime,
        committed: str | None = None,
        blocked: dict[str, Any] | None = None,
        written: list[ApprovalStep] | None = None,
    ) -> dict[str, Any] | None:
        """Move the stock of an approved transfer. `committed`: the shipment id the approving transaction
        set; `blocked`: the floor breach the approving request found (then no shipment was set)."""
        body = request.body
        sku, source, destination, qty = body["sku"], body["from_location"], body["to_location"], body["qty"]
        shipment = request.shipment_id or committed
        if shipment is None:
            if blocked is None:
                blocked = await self._source_floor_breach(sku, source, qty, now)
            if blocked is not None:
                try:
                    async with self.writing() as session:
                        return await self.transition(
                            session, case, status="blocked", action="blocked", actor=SYSTEM_ACTOR, now=now,
                            detail=blocked, event="case.blocked", changes={"outcome_reason": blocked["reason"]},
                            written=written,
                        )  # fmt: skip
                except _Stale:
                    return None
            shipment = f"shp-{case['id']}"
            async with self.writing() as session:
                await self._commit_shipment(session, request, shipment)
        await self._at("before_move", case["id"])
        event_id = f"case-{case['id']}-out"
        stock = self.services.stock
        results = await stock.apply_events(
            [StockEvent(event_id, "transfer_out", sku, source, qty, now, None, destination, shipment)]
        )
        await self._at("after_move", case["id"])
        shipped = {
            "shipment_id": shipment,
            "event_id": event_id,
            "sku": sku,
            "qty": qty,
            "from_location": source,
            "to_location": destination,
            "stock_event": results[0].status,
        }
        try:
            async with self.writing() as session:
                return await self.transition(
                    session, case, status="executed", action="executed", actor=SYSTEM_ACTOR, now=now,
                    detail=shipped, event="case.executed", extra_events=[("transfer.shipped", {"shipment": shipped})],
                    written=written,
                )  # fmt: skip
        except _Stale:
            return None  # another worker recorded it; the stock moved once, by event id

    async def _source_floor_breach(
        self, sku: str, source: str, qty: int, now: datetime
    ) -> dict[str, Any] | None:
        ctx = context_from(self.services, SYSTEM_ACTOR, now, await self.services.master_data.get(now))
        item = ctx.master_data.items.get(sku)
        location = ctx.master_data.locations.get(source)
        if item is None or location is None:
            return {"reason": f"{'sku ' + sku if item is None else 'location ' + source} is no longer known"}
        available = (await self.services.stock.get_available([sku])).get(sku, {}).get(source, 0)
        floor = transfer_floor(ctx, item, location)
        if available - qty >= floor:
            return None
        return {
            "reason": f"moving {qty} would leave {available - qty} available at {source}, below its floor {floor}",
            "available": available,
            "floor": floor,
            "qty": qty,
        }

    async def receive(self, events: Sequence[StockEvent], statuses: Sequence[str]) -> int:
        """Close executed transfers whose shipment a `transfer_in` names; answers how many."""
        arrivals = {
            e.reference: e
            for e, status in zip(events, statuses, strict=True)
            # a duplicate too: a retry after a failure here closes the case then
            if status in ("applied", "duplicate") and e.type == "transfer_in" and e.reference
        }
        if not arrivals:
            return 0
        async with self.sessions() as session:
            found = (
                await session.execute(
                    select(ChangeRequest.shipment_id, ChangeRequest.case_id, ChangeRequest.body).where(
                        ChangeRequest.shipment_id.in_(list(arrivals))
                    )
                )
            ).all()
        closed = 0
        for shipment, case_id, body in found:
            event = arrivals[shipment]
            if event.location != body["to_location"]:
                continue  # not the destination: the shipment is still on its way there
            now = self.clock()
            detail = {
                "shipment_id": shipment,
                "event_id": event.event_id,
                "qty": event.qty,
                "location": event.location,
            }
            for _attempt in range(ATTEMPTS):
                try:
                    async with self.writing() as session:
                        case = await self.load(session, case_id)
                        if case["status"] != "executed":
                            break
                        await self.transition(
                            session, case, status="received", action="received", actor=SYSTEM_ACTOR, now=now,
                            detail=detail, event="case.received",
                        )  # fmt: skip
                        closed += 1
                    break
                except _Stale:
                    continue
        return closed

    # the sweeper's round

    async def sweep(self, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
        """One round: escalate or expire pending cases past their SLA, execute approved cases left
        unexecuted (a worker stopped between approving and moving stock). Safe on many workers at once."""
        now = now or self.clock()
        counts = {"escalated": 0, "expired": 0, "executed": 0}
        async with self.sessions() as session:
            due = (
                (
                    await session.execute(
                        select(ApprovalCase.id)
                        .where(ApprovalCase.status == "pending", ApprovalCase.sla_due_at <= now)
                        .order_by(ApprovalCase.sla_due_at)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
            stuck = (
                (
                    await session.execute(
                        select(ApprovalCase.id)
                        .where(
                            ApprovalCase.status == "approved",
                            ApprovalCase.updated_at <= now - self.recovery_grace,
                        )
                        .order_by(ApprovalCase.updated_at)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
        for case_id in due:
            moved = await self._escalate(case_id, now)
            if moved is not None:
                counts[moved] += 1
        for case_id in stuck:
            await self.execute_safely(case_id, now)
            counts["executed"] += 1
        return counts

    async def _escalate(self, case_id: str, now: datetime) -> str | None:
        try:
            async with self.writing() as session:
                case = await self.load(session, case_id)
                if case["status"] != "pending" or not _overdue(case, now):
                    return None  # another worker got here first
                above = escalate(case["approvers"], case["escalation"])
                if above is None:
                    await self.transition(
                        session, case, status="expired", action="expired", actor=SYSTEM_ACTOR, now=now,
                        detail={"level": case["escalation_level"], "reason": "the SLA passed at the end of the chain"},
                        event="case.expired", changes={"outcome_reason": "no approval before the last SLA"},
                    )  # fmt: skip
                    return "expired"
                approvers, rest = above
                hours = case["sla_hours"] or 0.0
                # under `all` the new level's roles are what must approve; under `any` the count stays
                all_of = (await self.request_of(session, case)).approval == "all"
                required = len(approvers) if all_of else case["approvals_required"]
                await self.transition(
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
        except _Stale:
            return None


def _overdue(case: dict[str, Any], now: datetime) -> bool:
    due = case["sla_due_at"]
    return due is not None and due <= now


def _invalid(field_name: str, reason: str) -> Invalid:
    return Invalid(f"{field_name}: {reason}", [FieldError(field_name, reason)])
