"""Approval cases: opening them, approvers acting on them, SLA escalation, and executing approved requests.

Every transition is one transaction: the case row moves from the version it was read at to the next
(`UPDATE ... WHERE id = ? AND version = ?`, so of two racing writers exactly one moves it and the other
reads again), and an `ApprovalStep`, an audit row and an outbox event are written beside it.

Executing an approved case:
- a markdown stores the new price with its effective time and moves to `executed` in one transaction,
  after its approval commits;
- a transfer re-checks the source floor on live stock (`blocked` if it would now breach it), then moves
  to `executed`, which commits it to its shipment `shp-<case id>` (when an approver's approval completes
  the case, in the approval's own transaction: `approved` and `executed` are two steps of one write), then
  applies one `transfer_out` event (source -> destination in transit) whose event id derives from the case
  id. The event is applied at most once, so the recovery of moves (`service.workflow.recovery`, in the
  sweeper's round and before a receipt) applies them again, finding missing those a stopped worker left,
  without moving stock twice; a case left `approved` (a worker stopped before executing it) is executed by
  the sweeper.
A `transfer_in` at the destination that names the shipment id as its `reference` moves the case to
`received`.

`clock` gives the time of every transition (tests move it by hand). `hook`, when set, is awaited at named
points of a transition (`before_write`: between reading a case and writing it; `before_move`: after the
`executed` transition commits, before the stock moves; `after_move`) so tests can inject a racing approver
or a crash there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.db.base import aware, utc_now
from service.db.models import ApprovalCase, ApprovalCaseRole, ApprovalStep, ChangeRequest, ItemPrice
from service.db.sqlite_writer import SqliteWriter, SqliteWriters, sqlite_file
from service.decisions.context import DecisionServices
from service.domain.cases import Approval, acting_role, refusal, satisfied
from service.errors import Conflict, FieldError, Forbidden, Invalid, NotFound
from service.masterdata import MasterDataCache
from service.security.audit import audit
from service.stock import StockEvent
from service.workflow.floors import Floors
from service.workflow.moves import Moves, shipment_event
from service.workflow.outbox import add_event
from service.workflow.recovery import MoveRecovery
from service.workflow.rounds import (
    ATTEMPTS,
    SYSTEM_ACTOR,
    overdue,
    receive_shipments,
    shipment_of,
    shipped_cases,
    sweep_cases,
)
from service.workflow.store import CaseStore, RequestRow, writes_in_one_statement
from service.workflow.writes import (
    ColumnBinds,
    Stale,
    Step,
    Transition,
    case_binds,
    case_summary,
    for_sqlite,
    plan,
    role_rows,
    then,
    write_in_session,
    write_sqlite,
)

log = logging.getLogger("retail_policy.workflow")

RECOVERY_GRACE = timedelta(seconds=30)  # an approved case this old is executed by the sweeper
# how far back a worker's first recovery pass looks for executed transfers whose stock may not have moved
RECOVERY_LOOKBACK = timedelta(days=7)
Clock = Callable[[], datetime]
Hook = Callable[[str, str], Awaitable[None]]
CASE_COLUMNS = list(ApprovalCase.__table__.columns)
AnyRequest = ChangeRequest | RequestRow  # through the session, or as the case store reads it
AnyStep = Step | ApprovalStep


def case_from_row(row: Any) -> dict[str, Any]:
    case = dict(row._mapping)
    for key in ("sla_due_at", "created_at", "updated_at", "closed_at"):
        if case[key] is not None:
            case[key] = aware(case[key])
    return case


class WorkflowServices(DecisionServices, Protocol):
    """What the workflow reads of the app's services (`service.services.Services`)."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def master_data(self) -> MasterDataCache: ...

    @property
    def sqlite_writers(self) -> SqliteWriters: ...


@dataclass
class Workflow:
    services: WorkflowServices
    clock: Clock = utc_now
    hook: Hook | None = None
    recovery_grace: timedelta = RECOVERY_GRACE
    recovery_lookback: timedelta = RECOVERY_LOOKBACK
    _lock: asyncio.Lock | None = field(init=False, default=None)
    _sqlite: tuple[SqliteWriter, ColumnBinds] | None = field(init=False, default=None)
    _moves: Moves = field(init=False)
    _recovery: MoveRecovery = field(init=False)
    _floors: Floors = field(init=False)
    _store: CaseStore = field(init=False)

    def __post_init__(self) -> None:
        self._moves = Moves(lambda: self.services.stock)
        self._recovery = MoveRecovery(
            lambda: self.services.sessions,
            lambda: self.services.stock,
            self.recovery_grace,
            self.recovery_lookback,
        )
        self._floors = Floors(self.services)
        engine = self.services.engine
        path, writer = None, None
        if engine.dialect.name == "sqlite":
            self._lock = asyncio.Lock()
            writer = self.services.sqlite_writers.for_url(engine.url)
            if writer is not None:
                self._sqlite = (writer, case_binds(engine.dialect))
                path = sqlite_file(engine.url)
        self._store = CaseStore(engine, path, writer)

    def close(self) -> None:
        """Close the case store's own SQLite read connection (opened again when read after)."""
        self._store.close()

    async def commit(self, t: Transition) -> None:
        """Write one transition in a transaction of its own (on a SQLite file: by the file's writer, in
        the transaction of this turn of the loop); raises `Stale` when the case moved meanwhile."""
        if self._sqlite is None:
            if writes_in_one_statement(self._store, t):
                await self._store.write(t)
                return
            async with self.writing() as session:
                await write_in_session(session, t)
            return
        writer, binds = self._sqlite
        written = await writer.submit(write_sqlite, for_sqlite(t, binds))
        if isinstance(written, BaseException):
            raise written
        if not written:
            raise Stale

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
    def sessions(self) -> async_sessionmaker[AsyncSession]:
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

    async def read(self, case_id: str) -> tuple[dict[str, Any], AnyRequest, list[AnyStep]]:
        """A case, its request and its steps, outside any transaction (see `service.workflow.store`)."""
        if not self._store.usable:
            async with self.sessions() as session:
                case = await self.load(session, case_id)
                return case, await self.request_of(session, case), await self.steps(session, case_id)
        found = await self._store.read(case_id)
        if found is None:
            raise NotFound(f"no approval case {case_id!r}", [FieldError("id", "unknown case")])
        case, request, steps = found
        if request is None:  # a case is always opened with its request, in one transaction
            raise NotFound(f"no request for case {case_id!r}", [FieldError("id", "no request")])
        return case, request, list[AnyStep](steps)

    async def steps(self, session: AsyncSession, case_id: str) -> list[AnyStep]:
        query = select(ApprovalStep).where(ApprovalStep.case_id == case_id).order_by(ApprovalStep.id)
        return list((await session.execute(query)).scalars())

    async def view(
        self,
        session: AsyncSession | None,
        case_id: str,
        known: tuple[dict[str, Any], AnyRequest, list[AnyStep]] | None = None,
        summary: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A case with its approval mode, the approvals that count now and every step (`known`: the case,
        its request and its steps as this worker just wrote them, saving their reads; then `session` may
        be None; `summary`: that case's `case_summary`, as the transition that wrote it made it)."""
        request: AnyRequest
        if known is None:
            assert session is not None
            case = await self.load(session, case_id)
            request = await self.request_of(session, case)
            steps = await self.steps(session, case_id)
        else:
            case, request, steps = known
        out = case_summary(case) if summary is None else dict(summary)
        approvals: list[dict[str, Any]] = []
        views: list[dict[str, Any]] = []
        late = case["status"] == "pending" and overdue(case, self.clock())
        out.update(approval=request.approval, approvals=approvals, overdue=late, steps=views)
        # the steps a worker just wrote share the case's `updated_at` (one aware `now`): formatted once
        updated = case["updated_at"]
        shared = updated if updated.tzinfo is not None else None
        for s in steps:
            at = out["updated_at"] if s.at is shared else aware(s.at).isoformat()
            views.append({"at": at, "action": s.action, "actor": s.actor, "role": s.role, "comment": s.comment,
                          "detail": s.detail})  # fmt: skip
            if s.action == "approved" and s.role is not None and s.role in case["approvers"]:
                approvals.append({"person": s.actor, "role": s.role, "at": at})
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
        written: list[AnyStep] | None = None,
    ) -> dict[str, Any]:
        """Move `case` (as read, at its version) one step, or raise `Stale` when it moved meanwhile.
        Answers the case as it now is; the step written is appended to `written` when given."""
        t = plan(
            case, status=status, action=action, actor=actor, now=now, detail=detail, event=event,
            role=role, comment=comment, changes=changes, extra_events=extra_events,
        )  # fmt: skip
        await write_in_session(session, t)
        if written is not None:
            written.extend(t.steps)
        return t.after

    async def _index_roles(self, session: AsyncSession, case: dict[str, Any]) -> None:
        rows = role_rows(case)
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
                case, request, steps = await self.read(case_id)
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
                # the approval that completes a transfer checks the source floor on live stock first; when
                # it holds, its own transaction also records the execution (`_shipped`), and the stock
                # moves once that has committed
                blocked, shipped = None, None
                ships = done and case["kind"] == "transfer" and request.shipment_id is None
                if ships:
                    body = request.body
                    blocked = await self._floors.breach(body["sku"], body["from_location"], body["qty"], now)
                # the write names the version read, so it needs no lock held since the read
                await self._at("before_write", case_id)
                t = self._decision(case, request, person, role, verdict, comment, now, done)
                if ships and blocked is None:
                    shipped = self._shipped(t.after, request, now)
                    t = then(t, shipped)
                await self.commit(t)
            except Stale:
                continue
            written, after = [*steps, *t.steps], t.after
            if shipped is not None:
                await self._move_safely(case_id, shipped)
            elif after["status"] == "approved":
                final = await self.execute_safely(
                    case_id, now, (after, request), blocked=blocked, written=written
                )
                if final is None:  # not known how the case stands: read it
                    return await self.view(None, case_id, await self.read(case_id))
                return await self.view(None, case_id, (final, request, written))
            return await self.view(None, case_id, (after, request, written), t.summary)
        raise Conflict(
            "the case kept changing while this action was applied; try again",
            [FieldError("version", "changed concurrently")],
        )

    def _decision(
        self,
        case: dict[str, Any],
        request: AnyRequest,
        person: str,
        role: str | None,
        verdict: str,
        comment: str | None,
        now: datetime,
        done: bool,
    ) -> Transition:
        """The transition one approval or rejection makes (`done`: the approval completes the case)."""
        detail = {"level": case["escalation_level"]}
        if verdict == "reject":
            return plan(
                case, status="rejected", action="rejected", actor=person, role=role, comment=comment,
                now=now, detail=detail, event="case.rejected", changes={"outcome_reason": comment},
            )  # fmt: skip
        return plan(
            case, status="approved" if done else "pending", action="approved", actor=person, role=role,
            comment=comment, now=now, detail=detail, event="case.approved" if done else None,
        )  # fmt: skip

    # executing

    async def execute_safely(
        self,
        case_id: str,
        now: datetime | None = None,
        known: tuple[dict[str, Any], AnyRequest] | None = None,
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
        known: tuple[dict[str, Any], AnyRequest] | None = None,
        **approval: Any,
    ) -> dict[str, Any] | None:
        now = now or self.clock()
        if known is None:
            case, request, _steps = await self.read(case_id)
        else:
            case, request = known
        if case["status"] != "approved":
            return None
        if case["kind"] == "markdown":
            return await self._execute_markdown(case, request, now, approval.get("written"))
        return await self._execute_transfer(case, request, now, **approval)

    async def _execute_markdown(
        self, case: dict[str, Any], request: AnyRequest, now: datetime, written: list[AnyStep] | None
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
        except (Stale, IntegrityError):
            return None  # another worker executed it
        self.services.master_data.invalidate()
        return after

    async def _execute_transfer(
        self,
        case: dict[str, Any],
        request: AnyRequest,
        now: datetime,
        blocked: dict[str, Any] | None = None,
        written: list[AnyStep] | None = None,
    ) -> dict[str, Any] | None:
        """Execute an approved transfer: record it executed (with its shipment id), then move its stock.
        `blocked`: the floor breach the approving request found."""
        body = request.body
        # a shipment id recorded on the request (as an earlier version wrote it before executing the case)
        # was committed to, its stock maybe moved: the floor is not checked again
        if request.shipment_id is None:
            if blocked is None:
                blocked = await self._floors.breach(body["sku"], body["from_location"], body["qty"], now)
            if blocked is not None:
                return await self._finish(
                    plan(
                        case, status="blocked", action="blocked", actor=SYSTEM_ACTOR, now=now,
                        detail=blocked, event="case.blocked", changes={"outcome_reason": blocked["reason"]},
                    ),
                    written,
                )  # fmt: skip
        shipped = self._shipped(case, request, now)
        # a Stale here: another worker recorded it, and moves the stock (or the recovery pass does)
        after = await self._finish(shipped, written)
        if after is not None:
            await self._move(case["id"], shipped)
        return after

    def _shipped(self, case: dict[str, Any], request: AnyRequest, now: datetime) -> Transition:
        """An approved transfer's `executed` transition: from its commit on the transfer is finished,
        never checked again, and the `transfer_out` event its step names moves the stock."""
        body = request.body
        shipped = {
            "shipment_id": request.shipment_id or shipment_of(case["id"]),
            "event_id": f"case-{case['id']}-out",
            "sku": body["sku"],
            "qty": body["qty"],
            "from_location": body["from_location"],
            "to_location": body["to_location"],
            "stock_event": "applied",  # once, by its event id: after this commit, or by the recovery pass
        }
        return plan(
            case, status="executed", action="executed", actor=SYSTEM_ACTOR, now=now, detail=shipped,
            event="case.executed", extra_events=[("transfer.shipped", {"shipment": shipped})],
        )  # fmt: skip

    async def _move(self, case_id: str, shipped: Transition) -> None:
        """Apply the `transfer_out` of a committed `executed` transition (at most once, by its event id)."""
        await self._at("before_move", case_id)
        await self._moves.apply(shipment_event(shipped.steps[-1].detail, shipped.now))
        self._recovery.moved(case_id, shipped.now)
        await self._at("after_move", case_id)

    async def _move_safely(self, case_id: str, shipped: Transition) -> None:
        try:
            await self._move(case_id, shipped)
        except Exception:
            log.exception("moving the stock of executed case %s failed; the sweeper retries it", case_id)

    async def _finish(self, t: Transition, written: list[AnyStep] | None) -> dict[str, Any] | None:
        """Commit an execution's transition; None when another worker moved the case first."""
        try:
            await self.commit(t)
        except Stale:
            return None
        if written is not None:
            written.extend(t.steps)
        return t.after

    async def recover_moves(self, now: datetime) -> int:
        """The sweeper's recovery of executed transfers' moves (`service.workflow.recovery`)."""
        return await self._recovery.round(now)

    async def before_receipts(self, events: Sequence[StockEvent]) -> int:
        """Apply again the moves out of the transfers whose shipment a `transfer_in` among `events` names,
        before those events (and in that order the destination's inbound is right)."""
        return await self._recovery.apply_again(shipped_cases(events))

    async def receive(self, events: Sequence[StockEvent], statuses: Sequence[str]) -> int:
        """Close executed transfers whose shipment a `transfer_in` names; answers how many."""
        return await receive_shipments(self, events, statuses)

    # the sweeper's round

    async def sweep(self, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
        """One round: escalate or expire pending cases past their SLA, execute approved cases left
        unexecuted (a worker stopped between approving and moving stock). Safe on many workers at once."""
        return await sweep_cases(self, now or self.clock(), limit)


def _invalid(field_name: str, reason: str) -> Invalid:
    return Invalid(f"{field_name}: {reason}", [FieldError(field_name, reason)])
