"""The webhook dispatcher's fan-out on a SQLite file (`service.workflow.dispatcher`), as a write of the
file's `SqliteWriter`: in the transaction of a turn of the event loop, on the loop's own connection, beside
the case transitions, journal entries and decisions of that turn. Through the async driver a round cost a
trip to its thread per statement and a transaction of its own, and every commit of another connection
emptied the writer's page cache.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from service.decisions.ids import new_decision_id
from service.workflow.subscriptions import matches

# A round runs in a transaction of the file's writer (`fan_out_sqlite`): it holds the write
# lock from its first read, so the events past the mark without their dispatch row cannot change under it
# and the claim needs no second look at the outbox. `?` in order: the mark, the batch size
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
_LOWEST = -(2**63)  # below every id: a dispatcher's first round looks at every event


@dataclass(frozen=True, slots=True)
class SqliteRound:
    """A fan-out round asked of a SQLite file's writer: the mark, the batch size and the round's time as
    SQLAlchemy writes it (the dispatcher's other statements compare it as that text)."""

    mark: int | None
    size: int
    at: Any


def fan_out_sqlite(
    connection: sqlite3.Connection, rounds: Sequence[SqliteRound]
) -> list[tuple[int, int, int | None, int | None]]:
    """Each round's fan-out in the writer's transaction: (claimed, found, after, upto) as `fan_out` and
    `Dispatcher._move_mark` (`service.workflow.dispatcher`) take them (see `_next_batch`)."""
    results: list[tuple[int, int, int | None, int | None]] = []
    for r in rounds:
        past = _LOWEST if r.mark is None else r.mark
        low, upto, found, after = connection.execute(_SQLITE_NEXT, (past, r.size)).fetchone()
        if upto is None:
            results.append((0, found, after, upto))
            continue
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
        results.append((claimed, found, after, upto))
    return results
