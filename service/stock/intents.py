"""The intents of cross-slot orders and finishes on a Redis Cluster, kept in the journal's database.

An intent is written (and committed) before the first Redis step of a request that a cluster takes in
steps on several slots (`service.stock.crossslot`); it names what the steps will touch, so that a
recovery sweep can compensate or complete them when the worker that took them is gone. At most one intent
per reservation is open (`rid` is unique): a second request on the same reservation waits for the first
to end. Its owner holds it by its lease (`lease_until_ms`); the sweep takes over an intent whose lease
lapsed by moving the lease forward with a compare-and-set, so exactly one worker owns it at a time. An
intent ends in one transaction with its outcome: `close` deletes it and writes the journal entries of
what it did (only while the lease it holds is still the row's), `drop` deletes it when nothing is to be
journaled (compensated, refused, a replay).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, cast

import msgspec
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.db.models.stock import StockIntent
from service.stock.journal import Entry, Journal, insert_entries, unwritten, write_sqlite_rows
from service.stock.store import StockUnavailable

INTENTS = cast(Table, StockIntent.__table__)


class Intent(msgspec.Struct, frozen=True):
    id: int
    rid: str
    kind: str  # reserve | commit | release
    lease_until_ms: int
    payload: dict[str, Any]


class Intents:
    """The intent rows of one store, on its journal's engine."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.engine = journal.engine

    async def open(
        self, kind: str, rid: str, payload: dict[str, Any], lease_until_ms: int, now_ms: int
    ) -> int | None:
        """The new intent's id; None when an intent on `rid` is open already."""
        writer = self.journal.sqlite_writer
        if writer is not None:
            # on a SQLite file, in the writer's transaction of this turn of the loop (as the journal)
            item = (rid, kind, lease_until_ms, now_ms, msgspec.json.encode(payload).decode())
            try:
                return await writer.submit(_open_sqlite, item)
            except Exception as error:
                raise _unavailable(error) from error
        try:
            async with self.engine.begin() as conn:
                inserted = await conn.execute(
                    insert(INTENTS)
                    .values(
                        rid=rid,
                        kind=kind,
                        lease_until_ms=lease_until_ms,
                        created_at_ms=now_ms,
                        payload=payload,
                    )
                    .returning(INTENTS.c.id)
                )
                return int(inserted.scalar_one())
        except IntegrityError:
            return None
        except Exception as error:
            raise _unavailable(error) from error

    async def get(self, rid: str) -> Intent | None:
        try:
            async with self.engine.connect() as conn:
                row = (await conn.execute(select(INTENTS).where(INTENTS.c.rid == rid))).mappings().first()
        except Exception as error:
            raise _unavailable(error) from error
        return None if row is None else _intent(row)

    async def due(self, now_ms: int, limit: int = 100) -> list[Intent]:
        """Intents whose lease lapsed, oldest lease first."""
        try:
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(INTENTS)
                        .where(INTENTS.c.lease_until_ms < now_ms)
                        .order_by(INTENTS.c.lease_until_ms)
                        .limit(limit)
                    )
                ).mappings()
                return [_intent(row) for row in rows]
        except Exception as error:
            raise _unavailable(error) from error

    async def take_over(self, intent: Intent, lease_until_ms: int) -> Intent | None:
        """Own a lapsed intent (compare-and-set of its lease): the intent with the new lease, or None when
        another worker took it (or it ended) first."""
        try:
            async with self.engine.begin() as conn:
                moved = await conn.execute(
                    update(INTENTS)
                    .where(INTENTS.c.id == intent.id, INTENTS.c.lease_until_ms == intent.lease_until_ms)
                    .values(lease_until_ms=lease_until_ms)
                )
        except Exception as error:
            raise _unavailable(error) from error
        if moved.rowcount != 1:
            return None
        return msgspec.structs.replace(intent, lease_until_ms=lease_until_ms)

    async def lapse(self, intent_id: int, lease_until_ms: int) -> None:
        """Give the intent up to the recovery sweep now (its owner could not finish it)."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(INTENTS)
                    .where(INTENTS.c.id == intent_id, INTENTS.c.lease_until_ms == lease_until_ms)
                    .values(lease_until_ms=0)
                )
        except Exception as error:  # the lease lapses by itself
            _unavailable(error)

    async def close(self, intent_id: int, lease_until_ms: int, entries: list[Entry]) -> bool:
        """End the intent and journal `entries` in one transaction, while the lease is still the one the
        caller holds; False (nothing written) when the intent was taken over or ended meanwhile. Raises
        StockUnavailable when the database does not answer (the intent stays open)."""
        writer = self.journal.sqlite_writer
        if writer is not None:
            sql, rows = self.journal.sqlite_rows(entries)
            try:
                async with self.journal.writing():
                    return await writer.submit(_close_sqlite, (intent_id, lease_until_ms, sql, rows))
            except Exception as error:
                raise _unavailable(error) from error
        try:
            async with self.journal.writing(), self.engine.begin() as conn:
                gone = await conn.execute(
                    delete(INTENTS).where(
                        INTENTS.c.id == intent_id, INTENTS.c.lease_until_ms == lease_until_ms
                    )
                )
                if gone.rowcount != 1:
                    return False
                await insert_entries(conn, entries)
                return True
        except Exception as error:
            raise _unavailable(error) from error

    async def drop(self, intent_id: int, lease_until_ms: int) -> bool:
        return await self.close(intent_id, lease_until_ms, [])


_OPEN_SQL = (
    "INSERT INTO stock_intents (rid, kind, lease_until_ms, created_at_ms, payload) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (rid) DO NOTHING"
)


def _open_sqlite(connection: sqlite3.Connection, items: Sequence[tuple[Any, ...]]) -> list[int | None]:
    opened: list[int | None] = []
    for item in items:
        cursor = connection.execute(_OPEN_SQL, item)
        opened.append(cursor.lastrowid if cursor.rowcount == 1 else None)
    return opened


def _close_sqlite(connection: sqlite3.Connection, items: Sequence[tuple[Any, ...]]) -> list[bool]:
    closed: list[bool] = []
    for intent_id, lease_until_ms, sql, rows in items:
        cursor = connection.execute(
            "DELETE FROM stock_intents WHERE id = ? AND lease_until_ms = ?", (intent_id, lease_until_ms)
        )
        closed.append(cursor.rowcount == 1)
        if cursor.rowcount == 1:
            write_sqlite_rows(connection, sql, rows)
    return closed


def _intent(row: Any) -> Intent:
    return Intent(int(row["id"]), row["rid"], row["kind"], int(row["lease_until_ms"]), dict(row["payload"]))


def _unavailable(error: Exception) -> StockUnavailable:
    return unwritten(error)
