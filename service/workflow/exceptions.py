"""Exceptions: conditions that need a person, each with a state and an owner.

`raise_exception` opens one record per (kind, key) while that condition lasts, whoever raises it and
however often (a unique index over the unresolved records makes racing raisers insert one row);
`clear_exception` resolves it when the condition is gone. Both run in the caller's transaction and write
an outbox event (`exception.opened`, `exception.resolved`) beside the change. People acknowledge (taking
ownership) and resolve through the API; a record resolved while its condition still holds is opened
again by the next check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.base import aware, equal_as_range
from service.db.models import ExceptionRecord
from service.decisions.ids import new_decision_id
from service.security.audit import audit
from service.workflow.outbox import add_event

KINDS: tuple[str, ...] = (
    "negative_inventory",
    "oversell_risk",
    "delayed_receipt",
    "stuck_approval",
    "failed_delivery",
)
STATES: tuple[str, ...] = ("open", "acknowledged", "resolved")
UNRESOLVED: tuple[str, ...] = ("open", "acknowledged")
SYSTEM = "system"  # who resolves a record whose condition cleared


class ExceptionStateError(Exception):
    """A person's transition that the record's state does not allow (acknowledging a resolved one)."""

    def __init__(self, exception_id: str, state: str, wanted: str) -> None:
        super().__init__(f"exception {exception_id} is {state}; it cannot be {wanted}")
        self.state = state


class UnknownException(Exception):
    def __init__(self, exception_id: str) -> None:
        super().__init__(f"no exception {exception_id!r}")


def as_dict(record: ExceptionRecord) -> dict[str, Any]:
    """A record as the API and the outbox events show it."""
    return {
        "id": record.id,
        "kind": record.kind,
        "key": record.key,
        "state": record.state,
        "location": record.location,
        "sku": record.sku,
        "detail": record.detail,
        "assignee": record.assignee,
        "comment": record.comment,
        "opened_at": aware(record.opened_at).isoformat(),
        "updated_at": aware(record.updated_at).isoformat(),
        "acknowledged_at": aware(record.acknowledged_at).isoformat() if record.acknowledged_at else None,
        "resolved_at": aware(record.resolved_at).isoformat() if record.resolved_at else None,
        "resolved_by": record.resolved_by,
    }


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown exception kind {kind!r}; expected one of {', '.join(KINDS)}")


async def raise_exception(
    session: AsyncSession,
    kind: str,
    key: str,
    *,
    location: str | None = None,
    sku: str | None = None,
    detail: dict[str, Any],
    now: datetime,
    announce: bool = True,
) -> None:
    """Open the exception (kind, key) unless it is open already; `announce=False` writes no outbox event
    (a failed delivery of an exception event must not make another event for the same receiver)."""
    _check_kind(kind)
    values = {
        "id": new_decision_id(),
        "kind": kind,
        "key": key,
        "state": "open",
        "location": location,
        "sku": sku,
        "detail": detail,
        "opened_at": now,
        "updated_at": now,
    }
    dialect = session.get_bind().dialect.name
    where = ExceptionRecord.state != "resolved"
    if dialect == "postgresql":
        statement: Any = (
            postgresql.insert(ExceptionRecord)
            .values(values)
            .on_conflict_do_nothing(index_elements=["kind", "key"], index_where=where)
        )
    else:
        statement = (
            sqlite.insert(ExceptionRecord)
            .values(values)
            .on_conflict_do_nothing(index_elements=["kind", "key"], index_where=where)
        )
    inserted = (await session.execute(statement.returning(ExceptionRecord.id))).scalar_one_or_none()
    if inserted is not None and announce:
        record = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
        add_event(session, "exception.opened", f"exception:{inserted}", {"exception": record}, now)


async def clear_exception(
    session: AsyncSession, kind: str, key: str, now: datetime, *, by: str = SYSTEM
) -> None:
    """Resolve the unresolved exception (kind, key), if there is one: its condition has cleared."""
    _check_kind(kind)
    rows = (
        await session.execute(
            update(ExceptionRecord)
            .where(
                ExceptionRecord.kind == kind,
                ExceptionRecord.key == key,
                # the partial unique index's own condition, so that the index serves the lookup
                ExceptionRecord.state != "resolved",
            )
            .values(state="resolved", resolved_at=now, resolved_by=by, updated_at=now)
            .returning(ExceptionRecord.id, ExceptionRecord.location, ExceptionRecord.sku)
        )
    ).all()
    for row in rows:
        payload = resolved_payload(row.id, kind, key, by, row.location, row.sku, now)
        add_event(session, "exception.resolved", f"exception:{row.id}", {"exception": payload}, now)


def resolved_payload(
    exception_id: str, kind: str, key: str, by: str, location: str | None, sku: str | None, now: datetime
) -> dict[str, Any]:
    """What the `exception.resolved` event of a record whose condition cleared says about it."""
    payload: dict[str, Any] = {"id": exception_id, "kind": kind, "key": key, "state": "resolved"}
    payload.update(resolved_by=by, location=location, sku=sku, resolved_at=now.isoformat())
    return payload


async def unresolved_keys(session: AsyncSession, kind: str) -> set[str]:
    """The keys of `kind` with an unresolved record (what a check compares the live conditions with)."""
    found = await session.execute(
        select(ExceptionRecord.key).where(ExceptionRecord.kind == kind, ExceptionRecord.state.in_(UNRESOLVED))
    )
    return set(found.scalars())


async def _transition(
    session: AsyncSession,
    exception_id: str,
    *,
    allowed: tuple[str, ...],
    wanted: str,
    values: dict[str, Any],
) -> ExceptionRecord:
    changed = (
        await session.execute(
            update(ExceptionRecord)
            .where(ExceptionRecord.id == exception_id, ExceptionRecord.state.in_(allowed))
            .values(**values)
            .returning(ExceptionRecord.id)
        )
    ).scalar_one_or_none()
    record = await session.get(ExceptionRecord, exception_id, populate_existing=True)
    if record is None:
        raise UnknownException(exception_id)
    if changed is None:
        raise ExceptionStateError(exception_id, record.state, wanted)
    return record


async def acknowledge(
    session: AsyncSession,
    exception_id: str,
    *,
    actor: str,
    assignee: str | None,
    comment: str | None,
    now: datetime,
) -> ExceptionRecord:
    """An open exception gets an owner (`assignee`, the caller by default): open -> acknowledged."""
    owner = assignee or actor
    record = await _transition(
        session,
        exception_id,
        allowed=("open",),
        wanted="acknowledged",
        values={
            "state": "acknowledged",
            "assignee": owner,
            "comment": comment,
            "acknowledged_at": now,
            "updated_at": now,
        },
    )
    await audit(
        session, actor, "exception.acknowledge", f"exception:{exception_id}", {"assignee": owner}, comment
    )
    return record


async def resolve(
    session: AsyncSession,
    exception_id: str,
    *,
    actor: str,
    assignee: str | None,
    comment: str | None,
    now: datetime,
) -> ExceptionRecord:
    """A person closes an open or acknowledged exception."""
    values: dict[str, Any] = {
        "state": "resolved",
        "resolved_at": now,
        "resolved_by": actor,
        "updated_at": now,
    }
    if comment is not None:
        values["comment"] = comment
    if assignee is not None:
        values["assignee"] = assignee
    record = await _transition(session, exception_id, allowed=UNRESOLVED, wanted="resolved", values=values)
    await audit(session, actor, "exception.resolve", f"exception:{exception_id}", {}, comment)
    payload = as_dict(record)
    add_event(session, "exception.resolved", f"exception:{exception_id}", {"exception": payload}, now)
    return record


@dataclass(frozen=True)
class ExceptionFilter:
    kind: str | None = None
    state: str | None = None
    location: str | None = None
    opened_before: datetime | None = None  # older_than, as a time
    before_id: str | None = None  # the page cursor: ids sort by creation
    limit: int = 100


def listing(wanted: ExceptionFilter) -> Select[ExceptionRecord]:
    """Newest first, `limit + 1` rows (the extra one says whether a next page exists).

    By kind (or else by location) the records are read newest first from the index of (that column, id),
    the equality (and the cursor) written as one range of it (`equal_as_range`).
    """
    query = select(ExceptionRecord)
    record = ExceptionRecord
    column: Any = None  # the column read as a range, and its value
    if wanted.kind is not None:
        column, value = record.kind, wanted.kind
        if wanted.location is not None:
            query = query.where(record.location == wanted.location)
    elif wanted.location is not None:
        column, value = record.location, wanted.location
    if column is None:
        order = [record.id.desc()]
        if wanted.before_id is not None:
            query = query.where(record.id < wanted.before_id)
    else:
        order = [column.desc(), record.id.desc()]
        query = query.where(*equal_as_range(column, record.id, value, "", wanted.before_id))
    if wanted.state is not None:
        query = query.where(record.state == wanted.state)
    if wanted.opened_before is not None:
        query = query.where(record.opened_at <= wanted.opened_before)
    return query.order_by(*order).limit(wanted.limit + 1)
