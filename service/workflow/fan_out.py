"""The webhook dispatcher's fan-out (`service.workflow.dispatcher`): the statements of a round, which
events it looks at (`unclaimed_past`, `next_batch`), the claim of a batch (`claim_range`), the database's
one mark every dispatcher shares (`outbox_mark`: `hold_mark`, `moved`, `encode_mark`), and on a SQLite
file the whole round as a write of the file's `SqliteWriter`: in the transaction of a turn of the event
loop, on the loop's own connection, beside the case transitions, journal entries and decisions of that
turn. Through the async driver a round cost a trip to its thread per statement and a transaction of its
own, and every commit of another connection emptied the writer's page cache.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import msgspec
from sqlalchemy import (
    BigInteger,
    Select,
    Table,
    Text,
    all_,
    and_,
    any_,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import OutboxDispatch, OutboxEvent, OutboxMark
from service.decisions.ids import new_decision_id
from service.workflow.subscriptions import matches

# A round runs in a transaction of the file's writer (`fan_out_sqlite`): it holds the write lock from its
# first read, so the mark and the events past it without their dispatch row cannot change under it and
# the claim needs no second look at the outbox. `?` in order: the mark, the batch size
_SQLITE_NEXT = (
    "SELECT min(id), max(id), count(*), (SELECT max(id) FROM outbox_events) FROM (SELECT e.id FROM "
    "outbox_events e WHERE e.id > ? AND NOT EXISTS (SELECT 1 FROM outbox_dispatch d WHERE d.event_id = "
    "e.event_id) ORDER BY e.id LIMIT ?)"
)
_SQLITE_RANGE = (
    "FROM outbox_events e WHERE e.id BETWEEN ? AND ? AND NOT EXISTS (SELECT 1 FROM outbox_dispatch d "
    "WHERE d.event_id = e.event_id)"
)
_SQLITE_CLAIM = (
    f"INSERT INTO outbox_dispatch (event_id, at) SELECT e.event_id, ? {_SQLITE_RANGE} "
    "ON CONFLICT (event_id) DO NOTHING"
)
_SQLITE_KINDS = f"SELECT e.event_id, e.kind {_SQLITE_RANGE}"
_SQLITE_DELIVERY = (
    "INSERT INTO deliveries (id, event_id, subscription_id, kind, status, attempts, next_attempt_at, "
    "created_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)"
)
# the mark's row is written whole: a round makes it when the table has none (a schema made without it)
_SQLITE_MARK = "INSERT OR REPLACE INTO outbox_mark (id, mark) VALUES (1, ?)"
_LOWEST = -(2**63)  # below every id: a round without a mark looks at every event


@dataclass(frozen=True, slots=True)
class SqliteRound:
    """A fan-out round asked of a SQLite file's writer: the batch size and the round's time as SQLAlchemy
    writes it (the dispatcher's other statements compare it as that text). The mark is the file's."""

    size: int
    at: Any


def fan_out_sqlite(connection: sqlite3.Connection, rounds: Sequence[SqliteRound]) -> list[tuple[int, int]]:
    """Each round's fan-out in the writer's transaction, from the file's mark, which it moves in the same
    transaction: (claimed, found), found being the events without their dispatch row it looked at (the
    batch was full when there were `size`)."""
    results: list[tuple[int, int]] = []
    for r in rounds:
        row = connection.execute("SELECT mark FROM outbox_mark WHERE id = 1").fetchone()
        stored = None if row is None else row[0]
        mark = decode_mark(stored)
        low, upto, found, after = connection.execute(_SQLITE_NEXT, (_sqlite_past(mark), r.size)).fetchone()
        if stale(mark, after):
            mark = None
            low, upto, found, after = connection.execute(_SQLITE_NEXT, (_LOWEST, r.size)).fetchone()
        claimed = 0
        if upto is not None:
            subscriptions = [
                (sid, msgspec.json.decode(events))
                for sid, events in connection.execute("SELECT id, events FROM subscriptions")
            ]
            if subscriptions:
                rows = [
                    (new_decision_id(), event_id, sid, kind, r.at, r.at)
                    for event_id, kind in connection.execute(_SQLITE_KINDS, (low, upto)).fetchall()
                    for sid, patterns in subscriptions
                    if matches(patterns, kind)
                ]
                connection.executemany(_SQLITE_DELIVERY, rows)
            claimed = connection.execute(_SQLITE_CLAIM, (r.at, low, upto)).rowcount
        text = encode_mark(moved(False, mark, r.size, found, after, upto))
        if row is None or text != stored:
            connection.execute(_SQLITE_MARK, (text,))
        results.append((claimed, found))
    return results


def _sqlite_past(mark: Mark) -> int:
    return mark if isinstance(mark, int) else _LOWEST


DISPATCH = cast(Table, OutboxDispatch.__table__)
EVENTS = cast(Table, OutboxEvent.__table__)


def _unclaimed(postgres: bool, events: Any) -> Select[tuple[Any, Any]]:
    """The ids and event ids of `events` (the outbox, or rows of it with its `id` and `event_id`) without
    their dispatch row."""
    if not postgres:
        return (
            select(events.c.id, events.c.event_id)
            .outerjoin(DISPATCH, DISPATCH.c.event_id == events.c.event_id)
            .where(DISPATCH.c.event_id.is_(None))
        )
    # each event looks up its own dispatch row (a lateral subquery with a limit is never made a join):
    # left to choose, the planner hashed every dispatch row
    claimed = select(DISPATCH.c.event_id).where(DISPATCH.c.event_id == events.c.event_id).limit(1).lateral()
    return (
        select(events.c.id, events.c.event_id).outerjoin(claimed, true()).where(claimed.c.event_id.is_(None))
    )


# the highest outbox id there is
HIGHEST_ID = select(func.max(EVENTS.c.id)).scalar_subquery()
# the statement's snapshot (PostgreSQL), in its text form: `xmin:xmax:running,...`
_SNAPSHOT = func.pg_current_snapshot().cast(Text)
# the first transaction the statement's snapshot cannot see, however it ends: no visible event has one
# at or past it
_XMAX = cast(Any, func.pg_snapshot_xmax(func.pg_current_snapshot())).cast(Text).cast(BigInteger)


@dataclass(frozen=True)
class Unseen:
    """The transactions a PostgreSQL read could not see: those still running when it took its snapshot,
    and every one from the snapshot's xmax on. Every other one had committed or rolled back, its events
    visible to that read. A transaction running in another database writes no event here: only those of
    the read's own set are looked at again, however long another one runs."""

    xmax: int
    running: tuple[int, ...]

    @classmethod
    def of(cls, snapshot: str) -> Unseen:
        _xmin, xmax, running = snapshot.split(":")
        return cls(int(xmax), tuple(int(txid) for txid in running.split(",") if txid))

    def _running(self) -> Any:
        return literal(list(self.running), postgresql.ARRAY(BigInteger))

    def wrote(self, txid: Any) -> Any:
        """Whether `txid` is one of these transactions, as a range bounded on both sides (no visible event
        has a transaction at or past the statement's own xmax) or one of those running."""
        return or_(and_(txid >= self.xmax, txid < _XMAX), txid == any_(self._running()))

    def saw(self, txid: Any) -> Any:
        """Whether `txid` is a transaction the read could see."""
        return and_(txid < self.xmax, txid != all_(self._running()))


@dataclass(frozen=True)
class Past:
    """Where a PostgreSQL round that claimed a full batch leaves off: every event of a transaction its
    read could see (not `unseen`) with an id up to `upto` (the batch's highest) has its dispatch row. The
    batch took the lowest ids of what the round looked at (`unclaimed_past`), and its claim covers every id
    from the lowest to the highest; the events that round left out were covered before."""

    upto: int
    unseen: Unseen


# where a round looks from (the database's `outbox_mark`): nothing (every event), on SQLite an outbox id, on
# PostgreSQL the transactions the last read could not see, or where a full batch left off
Mark = int | Unseen | Past | None

MARK = cast(Table, OutboxMark.__table__)


def encode_mark(mark: Mark) -> str | None:
    """The mark as its row holds it: JSON (an id; or `xmax`, `running` and, past a full batch, `upto`)."""
    if mark is None or isinstance(mark, int):
        return None if mark is None else str(mark)
    unseen = mark.unseen if isinstance(mark, Past) else mark
    fields: dict[str, Any] = {"xmax": unseen.xmax, "running": list(unseen.running)}
    if isinstance(mark, Past):
        fields["upto"] = mark.upto
    return msgspec.json.encode(fields).decode()


def decode_mark(text: str | None) -> Mark:
    """The mark its row holds (`encode_mark`); NULL or nothing: none, every event is looked at."""
    if not text:
        return None
    value = msgspec.json.decode(text)
    if isinstance(value, int):
        return value
    unseen = Unseen(int(value["xmax"]), tuple(int(txid) for txid in value["running"]))
    return Past(int(value["upto"]), unseen) if "upto" in value else unseen


def moved(
    postgres: bool, mark: Mark, size: int, found: int, after: int | str | None, upto: int | None
) -> Mark:
    """The mark after a round from `mark` that read `found` events without their dispatch row, up to id
    `upto`, and `after` (`next_batch`), and claimed them: past the whole read when the batch held every
    such event, else (a full batch) past the batch on SQLite, where ids commit in order; on PostgreSQL
    the next round leaves out what this one covered (`Past`). An empty SQLite outbox has no `after`."""
    full = found >= size
    if postgres:
        unseen = Unseen.of(str(after))
        return Past(upto, unseen) if full and upto is not None else unseen
    if full:
        return upto
    return mark if after is None else int(after)


def stale(mark: Mark, after: int | str | None) -> bool:
    """Whether a SQLite mark is past the highest id there is (`after`): the outbox was emptied by hand
    and SQLite gives ids below the mark again. The round then looks at every event."""
    return isinstance(mark, int) and (after is None or int(after) < mark)


async def hold_mark(session: AsyncSession, postgres: bool, idle_seconds: float) -> tuple[bool, Mark]:
    """Take the database's mark for this round's transaction: (held, the mark). On PostgreSQL its row is
    locked without waiting (another dispatcher's round holding it: not held, and this round does no
    fan-out), and a transaction that then stays idle `idle_seconds` (its process frozen, its host cut
    off) is ended by the server, so the mark is not held from every dispatcher for longer. On SQLite a
    write to it takes the write lock first, so the round reads under it. A mark past the database's
    transactions (a database restored from a dump into another server, whose transaction ids start
    lower) is none."""
    if postgres:
        idle = func.set_config(
            "idle_in_transaction_session_timeout", f"{max(1, int(idle_seconds * 1000))}", True
        )
        held = select(MARK.c.mark, _XMAX, idle).where(MARK.c.id == 1).with_for_update(skip_locked=True)
        row = (await session.execute(held)).first()
        if row is not None:
            mark = decode_mark(row[0])
            unseen = mark.unseen if isinstance(mark, Past) else mark
            return True, None if isinstance(unseen, Unseen) and unseen.xmax > row[1] else mark
    else:
        touch = update(MARK).where(MARK.c.id == 1).values(mark=MARK.c.mark).returning(MARK.c.mark)
        row = (await session.execute(touch)).first()
        if row is not None:
            return True, decode_mark(row[0])
    # no row given: on PostgreSQL another round holds it (the insert then finds it there), or there is none
    # (a schema made without the migration): make it, unless another round's insert came first
    dialect = postgresql if postgres else sqlite
    made = dialect.insert(MARK).values(id=1, mark=None).on_conflict_do_nothing().returning(MARK.c.id)
    return (await session.execute(made)).first() is not None, None


async def write_mark(session: AsyncSession, before: Mark, after: Mark) -> None:
    """Store the mark a round moved to, in its claim's transaction (nothing when it did not move)."""
    if after != before:
        await session.execute(update(MARK).where(MARK.c.id == 1).values(mark=encode_mark(after)))


def unclaimed_past(postgres: bool, mark: Mark, size: int) -> Select[tuple[Any, Any]]:
    """The ids and event ids of the events without their dispatch row that a round looks at: every event
    (no mark); on SQLite those past the mark; on PostgreSQL those of the transactions the last read
    could not see, and past a full batch also the first `size` of the others after its highest id
    (claimed or not: the claim tells).

    On PostgreSQL a round's work must follow the new events, not the outbox's size, whatever the planner
    estimates (with no statistics gathered, autovacuum off or not yet run, it guesses): every range read
    is bounded on both sides (no visible event has a transaction at or past the snapshot's xmax, nor an id
    above the highest; a one-sided range without statistics is planned as a third of the table). Left to
    choose, the planner walked the key's index from its first entry, or hashed every dispatch row: 8-15 ms
    a round at 40,000 claimed events, not 0.15 ms."""
    if not postgres:
        query = _unclaimed(False, EVENTS)
        return query.where(EVENTS.c.id > mark) if isinstance(mark, int) else query
    if not isinstance(mark, (Unseen, Past)):
        return _unclaimed(True, EVENTS)
    # the events of the transactions the last read could not see, through the transaction index, read
    # first (materialized: else the planner may walk the key's index and look at every row's transaction)
    unseen = mark.unseen if isinstance(mark, Past) else mark
    newer = (
        select(EVENTS.c.id, EVENTS.c.event_id)
        .where(unseen.wrote(EVENTS.c.txid))
        .cte("past_mark")
        .prefix_with("MATERIALIZED")
    )
    if isinstance(mark, Unseen):
        # in id order before each is looked up: the first `size` without their row end the look
        return _unclaimed(True, select(newer.c.id, newer.c.event_id).order_by(newer.c.id).subquery())
    # and the first `size` events of the transactions it saw after the batch's highest id, not looked up:
    # the claim's insert checks them (one another dispatcher claimed first is counted here all the same).
    # With `size` of them, the next batch's highest id is at most theirs, so each one up to it is in it
    following = (
        select(EVENTS.c.id, EVENTS.c.event_id)
        .where(EVENTS.c.id > mark.upto, EVENTS.c.id <= HIGHEST_ID, unseen.saw(EVENTS.c.txid))
        .order_by(EVENTS.c.id)
        .limit(size)
        .subquery("past_batch")
    )
    rows = union_all(_unclaimed(True, newer), select(following.c.id, following.c.event_id)).subquery()
    return select(rows.c.id, rows.c.event_id)


def next_batch(postgres: bool, mark: Mark, size: int) -> Select[tuple[Any, Any, Any, Any]]:
    """The lowest and highest id and the number of the first `size` events without their dispatch row that
    a round looks at, and where the next round may look from once every such event is claimed: past the
    highest id there is (SQLite), the transactions of the snapshot it could not see (PostgreSQL: its text
    form, `Unseen.of`). One statement, so all from one snapshot."""
    looked_at = unclaimed_past(postgres, mark, size)
    first = looked_at.order_by(looked_at.selected_columns[0]).limit(size).subquery()
    top = _SNAPSHOT if postgres else HIGHEST_ID
    return select(func.min(first.c.id), func.max(first.c.id), func.count(first.c.id), top)


def claim_range(postgres: bool, low: int, upto: int, now: datetime) -> Any:
    """The insert of the dispatch rows of the events without one with ids from `low` up to `upto`, read
    through the key's index (both sides: an id range open below reads it from its first entry on
    PostgreSQL). Every event of the range that the round looked at and found without its row is there;
    an event committed since inside the range comes along. On PostgreSQL the insert's own check of the
    key is the only look at the dispatch rows: a lookup before it found the same row twice."""
    events = EVENTS if postgres else _unclaimed(False, EVENTS).subquery()
    rows = select(events.c.event_id, literal(now, DISPATCH.c.at.type)).where(events.c.id.between(low, upto))
    dialect = postgresql if postgres else sqlite
    return (
        dialect.insert(DISPATCH)
        .from_select(["event_id", "at"], rows)
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
