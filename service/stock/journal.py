"""Durable journal of the Redis backend's acknowledged changes, in SQL, written in group commits.

Each request hands its entries to `Journal.append` and waits until the transaction holding them has
committed; concurrent requests share one transaction, so the journal costs one commit per batch, not
per request. On a SQLite file the entries of a few turns of the event loop are written, with the decision
log's, in one transaction on the loop's own connection (`service.db.sqlite_writer`) instead of a round
trip through the async driver's thread per statement. Entries are signed deltas (see
`service.stock.ledger`), so the rebuild sums them in any order and gets the state Redis had acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db.engine import BatchInsert, HeldConnection, HeldDriverConnection
from service.db.models.stock import StockCheckpoint, StockExceptionRecord, StockJournalEntry
from service.db.sqlite_writer import SqliteWriter, SqliteWriters
from service.stock.ledger import Delta
from service.stock.store import StockException, StockUnavailable

JOURNAL = cast(Table, StockJournalEntry.__table__)
EXCEPTIONS = cast(Table, StockExceptionRecord.__table__)
CHECKPOINT = cast(Table, StockCheckpoint.__table__)
_INSERT = BatchInsert(JOURNAL, ("at_ms", "kind", "ref", "deltas", "record"))
_INSERT_EXCEPTION = BatchInsert(EXCEPTIONS, ("kind", "sku", "location", "event_id", "qty", "shortfall", "at"))
log = logging.getLogger("retail_policy.stock")
MAX_BATCH = 500
# Turns of the event loop a batch waits for company before it is written. A turn of an idle loop takes
# microseconds, so a lone request hardly waits; under load a turn serves many requests and the batch fills.
# Each batch costs PostgreSQL a commit (about 120 µs of a backend, 4 µs more a row) and the worker a round
# trip: under `serve --workers 2` and 32 connections batches went from 5.5 to about 10 entries, the worker's
# CPU per reservation from 175 to 161 µs.
LINGER_TURNS = 6
CLOSE_SECONDS = 10.0  # how long closing waits for the queued entries to be written
# PostgreSQL: a batch's entries as one statement, one array per column (no statement per row, no
# transaction block: the statement commits on its own); ordinality keeps the ids in the batch's order
_PG_INSERT = (
    "INSERT INTO stock_journal (at_ms, kind, ref, deltas, record)"
    " SELECT a, k, r, d::json, c::json"
    " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])"
    " WITH ORDINALITY AS t(a, k, r, d, c, n) ORDER BY n"
)
_PG_INSERT_EXCEPTION = (
    "INSERT INTO stock_exceptions (kind, sku, location, event_id, qty, shortfall, at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"
)


class Entry(msgspec.Struct, frozen=True):
    """One acknowledged change: kind in snapshot | event | reserve | commit | release."""

    kind: str
    ref: str
    at_ms: int
    deltas: Sequence[Delta]
    record: dict[str, Any] | None = None
    exception: StockException | None = None


@dataclass
class _Pending:
    entries: Sequence[Entry]
    done: asyncio.Future[list[int | None]]


@dataclass
class Journal:
    engine: AsyncEngine
    # the writer of a SQLite journal comes from here: shared with the decision log on the same file
    sqlite_writers: SqliteWriters = field(default_factory=SqliteWriters)
    _queue: list[_Pending] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _writer: asyncio.Task[None] | None = None
    _closing: bool = False  # close() has begun: what is queued is written, nothing more is taken
    _active: int = 0  # appends of this process not finished yet
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _held: HeldConnection = field(init=False)
    _driver: HeldDriverConnection | None = field(init=False)
    _sqlite: SqliteWriter | None = field(init=False)

    def __post_init__(self) -> None:
        self._held = HeldConnection(self.engine)
        self._sqlite = self.sqlite_writers.for_url(self.engine.url)
        postgres = self.engine.dialect.name == "postgresql"
        self._driver = HeldDriverConnection(self.engine) if postgres else None

    async def append(self, entries: Sequence[Entry]) -> list[int | None]:
        """Write entries durably; returns the id given to each entry's exception (None without one)."""
        if not entries:
            return []
        self._active += 1
        try:
            return await self._append(entries)
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Count a write of this process that goes around `append` (an intent's closing transaction) as
        under way, for `settled`."""
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    @property
    def sqlite_writer(self) -> SqliteWriter | None:
        """The writer of a SQLite file's journal (None on another database)."""
        return self._sqlite

    def sqlite_rows(self, entries: Sequence[Entry]) -> tuple[str, list[tuple[Any, ...]]]:
        """Entries (without anomalies) as the SQLite writer inserts them: the statement and the rows."""
        return _INSERT.prepared(self.engine.dialect, [_row(entry) for entry in entries])

    async def settled(self) -> None:
        """Return once no append of this process is under way.

        The rebuild reads the journal after this: a change that Redis applied before it lost its data and
        whose entry is still being written is then in what the rebuild reads."""
        while self._active:
            self._idle.clear()
            await self._idle.wait()

    async def _append(self, entries: Sequence[Entry]) -> list[int | None]:
        if self._closing:
            raise unwritten(RuntimeError("the journal is closing"))
        if self._sqlite is not None:
            try:
                return await self._sqlite.submit(_write_sqlite, self._prepare(entries))
            # any failure reaches the caller as the journal being unavailable, so that it undoes its change
            except Exception as error:
                raise unwritten(error) from error
        future: asyncio.Future[list[int | None]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(entries, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._run())
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # What arrives during a write goes in the next one, so batches grow with the load and a lone
            # request pays one commit. Before each write the batch waits a few turns of the loop for
            # company (see LINGER_TURNS).
            while self._queue:
                for _ in range(LINGER_TURNS):
                    if len(self._queue) >= MAX_BATCH:
                        break
                    await asyncio.sleep(0)
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    ids = await self._write([entry for pending in batch for entry in pending.entries])
                except asyncio.CancelledError:  # close() gave up waiting: the batch's callers hear so
                    _fail(batch, unwritten(RuntimeError("the journal closed during the write")))
                    raise
                # Any failure must reach the waiting requests and never stop the writer.
                except Exception as error:
                    _fail(batch, unwritten(error))
                    continue
                start = 0
                for pending in batch:
                    count = len(pending.entries)
                    if not pending.done.done():
                        pending.done.set_result(ids[start : start + count])
                    start += count
            if self._closing:
                return

    def _prepare(self, entries: Sequence[Entry]) -> _Prepared:
        """The entries' journal rows and their anomalies' rows, as the SQLite driver takes them."""
        dialect = self.engine.dialect
        sql, rows = _INSERT.prepared(dialect, [_row(entry) for entry in entries])
        if all(entry.exception is None for entry in entries):  # nearly always
            return _Prepared(sql, rows, "", [None] * len(entries))
        anomaly_sql, prepared = _INSERT_EXCEPTION.prepared(
            dialect,
            [
                tuple(exception_values(entry.exception)[c] for c in _INSERT_EXCEPTION.columns)
                for entry in entries
                if entry.exception is not None
            ],
        )
        found = iter(prepared)
        anomalies = [None if entry.exception is None else next(found) for entry in entries]
        return _Prepared(sql, rows, anomaly_sql, anomalies)

    async def _write(self, entries: Sequence[Entry]) -> list[int | None]:
        if self._driver is not None:
            return await self._write_postgres(self._driver, entries)
        ids: list[int | None] = []
        async with self._held.transaction() as conn:
            await _INSERT.execute(conn, [_row(entry) for entry in entries])
            for entry in entries:
                anomaly = entry.exception
                if anomaly is None:
                    ids.append(None)
                    continue
                inserted = await conn.execute(
                    insert(EXCEPTIONS).values(exception_values(anomaly)).returning(EXCEPTIONS.c.id)
                )
                ids.append(int(inserted.scalar_one()))
        return ids

    async def _write_postgres(
        self, driver: HeldDriverConnection, entries: Sequence[Entry]
    ) -> list[int | None]:
        """The batch through the journal's own driver connection; a connection that is lost, or whose
        state is unknown (the write was cut off), is replaced before the next batch."""
        async with driver.using() as connection:
            columns = _pg_columns(entries)
            if all(entry.exception is None for entry in entries):  # nearly always
                await connection.execute(_PG_INSERT, *columns)
                return [None] * len(entries)
            ids: list[int | None] = []
            async with connection.transaction():
                await connection.execute(_PG_INSERT, *columns)
                for entry in entries:
                    anomaly = entry.exception
                    values = None if anomaly is None else exception_values(anomaly)
                    ids.append(
                        None
                        if values is None
                        else int(
                            await connection.fetchval(
                                _PG_INSERT_EXCEPTION, *(values[c] for c in _INSERT_EXCEPTION.columns)
                            )
                        )
                    )
            return ids

    async def close(self) -> None:
        """Write what is queued (waiting at most CLOSE_SECONDS for it), then let go of the connections. An
        append still unwritten then fails as the journal being unavailable, so that its caller undoes its
        change; none is left waiting."""
        self._closing = True
        writer, self._writer = self._writer, None
        if writer is not None:
            self._wake.set()  # the writer writes the queue out, then stops (see _run)
            if not (await asyncio.wait({writer}, timeout=CLOSE_SECONDS))[0]:
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        left, self._queue = self._queue, []
        if left:
            _fail(left, unwritten(RuntimeError("the journal closed before the write")))
        await self._held.close()
        if self._driver is not None:
            await self._driver.close()
        if self._sqlite is not None:
            await self._sqlite.close()


def _fail(batch: Sequence[_Pending], failure: StockUnavailable) -> None:
    for pending in batch:
        if not pending.done.done():
            pending.done.set_exception(failure)


def unwritten(error: Exception) -> StockUnavailable:
    # the driver's words (paths, hosts) go to the log, not to the caller
    log.warning("stock journal could not be written: %s: %s", type(error).__name__, error)
    return StockUnavailable("stock journal could not be written", retry_after=1)


class _Prepared(msgspec.Struct, frozen=True):
    """One `append` for the SQLite writer: the single-row INSERT, the rows, per entry its anomaly."""

    sql: str
    rows: list[tuple[Any, ...]]
    anomaly_sql: str
    anomalies: list[tuple[Any, ...] | None]


def _write_sqlite(connection: sqlite3.Connection, batch: Sequence[_Prepared]) -> list[list[int | None]]:
    """Every append of a batch, in the writer's transaction: the journal rows as multi-row statements,
    then each anomaly's row, whose id goes back to its entry."""
    _INSERT.write_sqlite(connection, batch[0].sql, [row for prepared in batch for row in prepared.rows])
    return [
        [
            None if a is None else connection.execute(prepared.anomaly_sql, a).lastrowid
            for a in prepared.anomalies
        ]
        for prepared in batch
    ]


def write_sqlite_rows(connection: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Rows of `Journal.sqlite_rows`, in the SQLite writer's transaction."""
    if rows:
        _INSERT.write_sqlite(connection, sql, rows)


async def insert_entries(conn: AsyncConnection, entries: Sequence[Entry]) -> None:
    """Write entries (without anomalies) in the caller's transaction."""
    await _INSERT.execute(conn, [_row(entry) for entry in entries])


def _pg_columns(entries: Sequence[Entry]) -> tuple[list[Any], ...]:
    """The entries' journal rows as one array per column, JSON as text (for `_PG_INSERT`)."""
    encode = msgspec.json.encode
    return (
        [entry.at_ms for entry in entries],
        [entry.kind for entry in entries],
        [entry.ref for entry in entries],
        [encode([_delta_row(d) for d in entry.deltas]).decode() for entry in entries],
        [None if entry.record is None else encode(entry.record).decode() for entry in entries],
    )


def _row(entry: Entry) -> tuple[Any, ...]:
    return (entry.at_ms, entry.kind, entry.ref, [_delta_row(d) for d in entry.deltas], entry.record)


def exception_values(anomaly: StockException) -> dict[str, Any]:
    """An anomaly's row of the stock exceptions table, by column (the table gives its id)."""
    return {
        "kind": anomaly.kind,
        "sku": anomaly.sku,
        "location": anomaly.location,
        "event_id": anomaly.event_id,
        "qty": anomaly.qty,
        "shortfall": anomaly.shortfall,
        "at": anomaly.at,
    }


def _delta_row(delta: Delta) -> tuple[str, str, int, int, int, int, int]:
    return (
        delta.sku,
        delta.location,
        delta.sellable,
        delta.reserved,
        delta.damaged,
        delta.return_pending,
        delta.in_transit,
    )


async def latest_write(engine: AsyncEngine, window: int = 1000) -> int:
    """The highest write number (`seq`) among the last `window` entries, or the journal checkpoint's when
    higher (the days it folded were taken out of the journal): the latest write the journal holds (entries
    reach the journal about in the order Redis numbered them)."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(JOURNAL.c.record).order_by(JOURNAL.c.id.desc()).limit(window))
        latest = max((int(record.get("seq", 0)) for (record,) in rows if record), default=0)
        folded = (await conn.execute(select(CHECKPOINT.c.writes).where(CHECKPOINT.c.id == 1))).scalar()
        return max(latest, int(folded or 0))
