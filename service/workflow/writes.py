"""One case transition as the rows it writes, written through a session or by a SQLite file's writer.

`plan` works out everything a transition writes: the case row moving from the version it was read at to
the next, its `ApprovalStep`, its audit row, its outbox events, whether the case's stuck-approval
exception clears and the inbox index rows (`then` joins two transitions into one write). Both ways of
writing it write all of it in one transaction, or nothing when the case moved since it was read (`Stale`):

- `write_in_session` through an `AsyncSession` (every transition but an approver's and the execution of
  a transfer; those go as one statement on PostgreSQL, `service.workflow.store`);
- `write_sqlite`, the work of the file's `SqliteWriter` (`service.db.sqlite_writer`): on the event loop,
  in the transaction of that turn of the loop, the turn's transitions together (their rows as multi-row
  INSERTs), or, when that fails, each in a savepoint of its own. An approval then costs its statements
  (microseconds each), not a round trip to the driver's thread per statement, which under load takes
  milliseconds while the write lock is held.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import Table, delete, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engine import BatchInsert, as_sqlalchemy_binds, bound
from service.db.models import (
    ApprovalCase,
    ApprovalCaseRole,
    ApprovalStep,
    AuditEntry,
    ExceptionRecord,
    OutboxEvent,
)
from service.decisions.ids import new_decision_id
from service.workflow.exceptions import SYSTEM, clear_exception, resolved_payload

STUCK = "stuck_approval"
STUCK_MARGIN = timedelta(minutes=5)  # clocks of hosts differ by less: a case due this soon may be stuck
_CASES: Table = ApprovalCase.__table__  # type: ignore[assignment]
# the columns a transition writes of its steps, audit rows and outbox events (both ways of writing it)
STEP_COLUMNS = ("case_id", "at", "action", "actor", "role", "comment", "detail")
AUDIT_COLUMNS = ("at", "actor", "action", "subject", "detail", "note")
EVENT_COLUMNS = ("event_id", "kind", "subject", "payload", "created_at")
_ROLE_COLUMNS = ("case_id", "role", "status", "kind", "created_at")
_STEPS = BatchInsert(ApprovalStep.__table__, STEP_COLUMNS)  # type: ignore[arg-type]
_AUDIT = BatchInsert(AuditEntry.__table__, AUDIT_COLUMNS)  # type: ignore[arg-type]
_EVENTS = BatchInsert(OutboxEvent.__table__, EVENT_COLUMNS)  # type: ignore[arg-type]
_ROLES = BatchInsert(ApprovalCaseRole.__table__, _ROLE_COLUMNS)  # type: ignore[arg-type]
# a step's, an audit row's and an event's values in those columns' order, as one tuple
step_values = attrgetter(*STEP_COLUMNS)
audit_values = itemgetter(*AUDIT_COLUMNS)
event_values = itemgetter(*EVENT_COLUMNS)
# by the row's whole key, read from the case: one seek of the table's one b-tree
_DELETE_ROLE = (
    "DELETE FROM approval_case_roles WHERE role = ? AND status = ? AND created_at = ? AND case_id = ?"
)
_CLEAR = (
    "UPDATE exception_records SET state = 'resolved', resolved_at = ?, resolved_by = ?, updated_at = ? "
    "WHERE kind = ? AND key = ? AND state <> 'resolved' "  # the partial unique index's condition
    "RETURNING id, location, sku"
)


class ColumnBinds:
    """How each column of a table goes to one dialect's driver (`bound`), worked out once per column; kept
    by the owner of the engine whose dialect it is."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self.table = table
        self.dialect = dialect
        self._found: dict[str, Callable[[Any], Any] | None] = {}
        self._sqlalchemy: dict[str, Callable[[Any], Any]] = {}

    def __call__(self, name: str, value: Any) -> Any:
        """`value` of column `name` as the dialect's driver takes it."""
        try:
            process = self._found[name]
        except KeyError:
            process = self._found[name] = bound(self.table.c[name].type, self.dialect)
        return value if process is None or value is None else process(value)

    def as_sqlalchemy(self, name: str) -> Callable[[Any], Any]:
        """How SQLAlchemy itself binds column `name`'s values (`as_sqlalchemy_binds`), worked out once."""
        try:
            return self._sqlalchemy[name]
        except KeyError:
            found = self._sqlalchemy[name] = as_sqlalchemy_binds(self.table.c[name].type, self.dialect)
            return found


def case_binds(dialect: Dialect) -> ColumnBinds:
    """The case table's `ColumnBinds` for `dialect`."""
    return ColumnBinds(_CASES, dialect)


class Stale(Exception):
    """The case moved since it was read: read it again."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def case_summary(case: dict[str, Any]) -> dict[str, Any]:
    """A case as events and answers carry it (without its steps)."""
    updated, closed = case["updated_at"], case["closed_at"]
    updated_at = _iso(updated)
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
        "updated_at": updated_at,
        "closed_at": updated_at if closed is updated else _iso(closed),  # closed by its last transition
        "outcome_reason": case["outcome_reason"],
        "version": case["version"],
    }


@dataclass(slots=True)
class Step:
    """An approval step as the workflow writes and reads it, without an ORM instance's bookkeeping
    (`ApprovalStep`'s columns; `id` is None until read back)."""

    case_id: str
    at: datetime
    action: str
    actor: str
    role: str | None
    comment: str | None
    detail: dict[str, Any]
    id: int | None = None

    def row(self) -> ApprovalStep:
        return ApprovalStep(
            case_id=self.case_id, at=self.at, action=self.action, actor=self.actor, role=self.role,
            comment=self.comment, detail=self.detail,
        )  # fmt: skip


def role_rows(case: dict[str, Any]) -> list[dict[str, Any]]:
    """The inbox index rows of a pending case: one per role that may act on it (none for a case in
    another status). A case's rows are these, as its row reads, so they are deleted by their keys."""
    if case["status"] != "pending":
        return []
    return [
        {
            "case_id": case["id"],
            "role": role,
            "status": case["status"],
            "kind": case["kind"],
            "created_at": case["created_at"],
        }
        for role in dict.fromkeys(case["approvers"])
    ]


@dataclass
class Transition:
    """What one transition writes (see `plan`)."""

    case: dict[str, Any]  # as read, at the version the write names
    values: dict[str, Any]  # the case row's new column values
    after: dict[str, Any]  # the case as it is once written
    summary: dict[str, Any]  # `after`'s `case_summary`, as the events carry it (not to be changed)
    steps: list[Step]  # in the order they happened (one, or two for `then`)
    audits: list[dict[str, Any]]  # one per step
    events: list[dict[str, Any]]
    now: datetime
    clear_stuck: bool  # the case is no longer stuck (closed, or escalated with a fresh SLA)
    roles: list[dict[str, Any]] | None  # None: the inbox index stays; else its new rows (maybe none)


def _may_be_stuck(case: dict[str, Any], now: datetime) -> bool:
    due = case["sla_due_at"]
    return due is not None and due <= now + STUCK_MARGIN


def plan(
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
) -> Transition:
    """The rows of moving `case` (as read) to `status`, with one step `action` by `actor`."""
    values: dict[str, Any] = {"version": case["version"] + 1, "updated_at": now, "status": status}
    values.update(changes or {})
    leaves_pending = case["status"] == "pending" and status != "pending"
    if leaves_pending:
        values["closed_at"] = now
    after = {**case, **values}
    step = Step(case["id"], now, action, actor, role, comment, detail)
    audit = {
        "at": datetime.now(UTC),
        "actor": actor,
        "action": f"case.{action}",
        "subject": case["subject"],
        "detail": {"case_id": case["id"], "status": status, "role": role, **detail},
        "note": comment,
    }
    summary = case_summary(after)
    said = {"action": action, "actor": actor, "role": role, "comment": comment, "detail": detail}
    payloads = [] if event is None else [(event, {"case": summary, "step": said})]
    payloads += [(kind, {"case": summary, **payload}) for kind, payload in extra_events]
    events = [
        {
            "event_id": new_decision_id(),
            "kind": kind,
            "subject": case["subject"],
            "payload": payload,
            "created_at": now,
        }
        for kind, payload in payloads
    ]
    due = values.get("sla_due_at")
    roles = None
    # the inbox index lists the roles that may act on a pending case: gone once it leaves pending
    if "approvers" in values or leaves_pending:
        roles = role_rows(after) if status == "pending" else []
    return Transition(
        case=case,
        values=values,
        after=after,
        summary=summary,
        steps=[step],
        audits=[audit],
        events=events,
        now=now,
        # a stuck-approval exception is a pending case's: cleared as the case leaves pending (a later
        # transition has none to clear) or escalates with a fresh SLA. One is only raised past the SLA, so
        # a case not yet due has none (one raised by a clock ahead of this one: the monitor resolves it)
        clear_stuck=(leaves_pending or (due is not None and due > now)) and _may_be_stuck(case, now),
        roles=roles,
    )


def then(first: Transition, second: Transition) -> Transition:
    """`first` and then `second` (planned from `first.after`) as one transition: one update of the case
    row from the version `first` read, and both transitions' steps, audit rows and events, in order."""
    roles = first.roles if second.roles is None else second.roles
    return Transition(
        case=first.case,
        values={**first.values, **second.values},
        after=second.after,
        summary=second.summary,
        steps=first.steps + second.steps,
        audits=first.audits + second.audits,
        events=first.events + second.events,
        now=second.now,
        clear_stuck=first.clear_stuck or second.clear_stuck,
        roles=roles,
    )


async def write_in_session(session: AsyncSession, t: Transition) -> None:
    """Write `t` in the session's transaction; raises `Stale` (writing nothing) when the case moved."""
    result = await session.execute(
        update(ApprovalCase)
        .where(ApprovalCase.id == t.case["id"], ApprovalCase.version == t.case["version"])
        .values(**t.values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Stale
    session.add_all([step.row() for step in t.steps])
    session.add_all([AuditEntry(**audit) for audit in t.audits])
    session.add_all([OutboxEvent(**event) for event in t.events])
    if t.clear_stuck:
        await clear_exception(session, STUCK, t.case["id"], t.now)
    if t.roles is not None:
        index = ApprovalCaseRole
        for row in role_rows(t.case):
            await session.execute(
                delete(index).where(
                    index.role == row["role"],
                    index.status == row["status"],
                    index.created_at == row["created_at"],
                    index.case_id == row["case_id"],
                )
            )
        if t.roles:
            await session.execute(insert(ApprovalCaseRole), t.roles)


@dataclass(slots=True)
class SqliteTransition:
    """A transition's statements with their parameters as the stdlib SQLite driver takes them."""

    update: tuple[str, tuple[Any, ...]]
    rows: dict[str, tuple[BatchInsert, str, list[tuple[Any, ...]]]]  # step, audit and event rows by table
    roles: list[tuple[str, tuple[Any, ...]]] | None
    clear: tuple[Any, ...] | None  # the parameters of _CLEAR
    case_id: str
    now: datetime
    dialect: Dialect


def for_sqlite(t: Transition, binds: ColumnBinds) -> SqliteTransition:
    """`t` prepared for `write_sqlite` (the values through their column types (`case_binds` of the SQLite
    dialect), on the caller's loop)."""
    names = list(t.values)
    sets = ", ".join(f"{name} = ?" for name in names)
    dialect = binds.dialect
    params = [binds(name, t.values[name]) for name in names]
    rows = {
        "steps": (_STEPS, *_STEPS.prepared(dialect, list(map(step_values, t.steps)))),
        "audit": (_AUDIT, *_AUDIT.prepared(dialect, list(map(audit_values, t.audits)))),
        "events": (_EVENTS, *_EVENTS.prepared(dialect, list(map(event_values, t.events)))),
    }
    roles = None
    if t.roles is not None:
        # the key's time as SQLAlchemy's DATETIME writes it, as every writer of the table does (see
        # `ApprovalCaseRole`), not as `bound` gives other times to the driver: the case's own time, of
        # the same column type
        key_time = binds.as_sqlalchemy("created_at")
        roles = [
            (_DELETE_ROLE, (r["role"], r["status"], key_time(r["created_at"]), r["case_id"]))
            for r in role_rows(t.case)
        ]
        if t.roles:
            role_values = [
                tuple(key_time(r[c]) if c == "created_at" else r[c] for c in _ROLE_COLUMNS) for r in t.roles
            ]
            roles += _ROLES.sqlite_statements(dialect, role_values)
    clear = None
    if t.clear_stuck:
        at = bound(ExceptionRecord.__table__.c.resolved_at.type, dialect)
        stamp = t.now if at is None else at(t.now)
        clear = (stamp, SYSTEM, stamp, STUCK, t.case["id"])
    return SqliteTransition(
        update=(
            f"UPDATE approval_cases SET {sets} WHERE id = ? AND version = ?",
            (*params, t.case["id"], t.case["version"]),
        ),
        rows=rows,
        roles=roles,
        clear=clear,
        case_id=t.case["id"],
        now=t.now,
        dialect=dialect,
    )


def write_sqlite(connection: sqlite3.Connection, batch: Sequence[SqliteTransition]) -> list[Any]:
    """The transitions of one turn of the loop, in the writer's transaction: True when written, False
    when its case moved (nothing written), or the error that undid it.

    First all together (their step, audit and outbox rows as multi-row INSERTs); when that fails, the
    batch is undone and each transition is written in a savepoint of its own, so one that fails fails
    alone."""
    if len(batch) > 1:
        connection.execute("SAVEPOINT transitions")
        try:
            together = _write_together(connection, batch)
        except Exception:
            connection.execute("ROLLBACK TO transitions")
        else:
            connection.execute("RELEASE transitions")
            return together
        connection.execute("RELEASE transitions")
    results: list[Any] = []
    for item in batch:
        connection.execute("SAVEPOINT transition")
        try:
            written = _write_together(connection, [item])[0]
        except Exception as error:  # this transition fails alone
            connection.execute("ROLLBACK TO transition")
            results.append(error)
        else:
            results.append(written)
        connection.execute("RELEASE transition")
    return results


def _write_together(connection: sqlite3.Connection, batch: Sequence[SqliteTransition]) -> list[bool]:
    results: list[bool] = []
    rows: dict[str, tuple[BatchInsert, str, list[tuple[Any, ...]]]] = {}
    for item in batch:
        if connection.execute(*item.update).rowcount != 1:
            results.append(False)
            continue
        results.append(True)
        for table, (insert_, sql, values) in item.rows.items():
            rows.setdefault(table, (insert_, sql, []))[2].extend(values)
        if item.clear is not None:
            resolved = connection.execute(_CLEAR, item.clear).fetchall()
            if resolved:
                events = [
                    (
                        new_decision_id(),
                        "exception.resolved",
                        f"exception:{exception_id}",
                        {
                            "exception": resolved_payload(
                                exception_id, STUCK, item.case_id, SYSTEM, loc, sku, item.now
                            )
                        },
                        item.now,
                    )
                    for exception_id, loc, sku in resolved
                ]
                sql, prepared = _EVENTS.prepared(item.dialect, events)
                rows.setdefault("events", (_EVENTS, sql, []))[2].extend(prepared)
        for statement in item.roles or ():
            connection.execute(*statement)
    for insert_, sql, values in rows.values():
        if values:
            insert_.write_sqlite(connection, sql, values)
    return results
