"""The decision log writer: decisions are queued in memory and written to SQL in batches by one task.

The queue is bounded: when it is full, `record` waits for room (requests slow down), it never drops a
decision. A failed write is retried with back-off, keeping the batch. `close` flushes what is queued.
Decisions still queued are readable from this process through `get`, so a decision can be fetched by id
as soon as it has been answered. On a SQLite file each batch is written by the file's writer on the
event loop (`service.db.sqlite_writer`), in the same transaction as the stock journal's entries of that
turn of the loop, at most `SQLITE_SLICE` decisions per turn: encoding and inserting a decision costs the
loop tens of microseconds, and the slice bounds how long the worker's requests (and, through the write
lock, the other workers' journal entries) wait behind the log.

A decision's trace is written once per UTC day and content, to `decision_traces`, and the decision's row
names it by digest (`DecisionTrace`): the default-level trace of the same SKUs or the same order shape is
the same bytes decision after decision, and bytes written are most of what a decision costs the database.
The log remembers the (day, digest) pairs it has written (a bounded set: one it forgot is written again,
which the database ignores), and adds a pair only once the transaction that wrote it has committed. A
trace is written in the same transaction as the first decision that names it, and its day's partition is
dropped with that day's decisions (`service.db.partitions`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, Protocol

import msgspec
from sqlalchemy import Select, Table, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from service.db.base import aware
from service.db.engine import BatchInsert, HeldConnection, HeldDriverConnection
from service.db.models.decisions import DecisionEntry, DecisionTrace
from service.db.sqlite_writer import SqliteWriters
from service.decisions.record import DecisionRecord, iso_time, trace_json
from service.tasks import cancel_and_wait

log = logging.getLogger(__name__)
# Under load the writer lets a batch gather this long before writing it: a transaction costs far more
# than a row, and no request waits on the log (a decision is readable from memory until written).
GATHER_SECONDS = 0.05
# On a SQLite file, decisions encoded and inserted in one turn of the event loop (one transaction, shared
# with that turn's journal entries): about 0.3 ms of the loop for availability answers. A commit rewrites
# the last, partly filled page of the table and of each index, so a slice of 16 cost 11 us a decision
# and one of 32 costs 7.5.
SQLITE_SLICE = 32
_DECISIONS: Table = DecisionEntry.__table__  # type: ignore[assignment]
_INSERT = BatchInsert(_DECISIONS, DecisionRecord.COLUMNS)
# (day, digest) pairs of traces the log remembers having written, before it forgets them all
STORED_TRACES = 4096
_TRACE_COLUMNS = f"INSERT INTO {DecisionTrace.__tablename__} (day, digest, trace) VALUES"
# a trace another worker (or a retried batch) wrote already is left as it is: the same digest, the same trace
_TRACE_SQL = {
    "sqlite": f"{_TRACE_COLUMNS} (?, ?, ?) ON CONFLICT DO NOTHING",
    "postgresql": f"{_TRACE_COLUMNS} ($1, $2, $3) ON CONFLICT DO NOTHING",
    "named": f"{_TRACE_COLUMNS} (:day, :digest, :trace) ON CONFLICT DO NOTHING",
}
# traces new to the log in a batch: (day, digest) -> the trace as JSON text
NewTraces = dict[tuple[date, str], str]
_decode = msgspec.json.decode


class Queued(NamedTuple):
    """A decision as the log holds it until written: its row (`DecisionRecord.row`, the JSON columns
    encoded when it was recorded) and its trace, (day, digest) and JSON. Encoded at once rather than in the
    writer's batch, so that the decision's dicts go with its answer instead of living through the batch's
    wait (an allocation's stock view is hundreds of objects, each walked by every young-generation
    collection meanwhile)."""

    id: str
    kind: str
    idempotency_key: str | None
    row: tuple[Any, ...]
    trace: tuple[tuple[date, str], bytes] | None

    @classmethod
    def of(cls, record: DecisionRecord) -> Queued:
        if record.trace is None:
            return cls(record.id, record.kind, record.idempotency_key, record.row(None), None)
        encoded, digest = trace_json(record.trace)
        day = record.created_at.astimezone(UTC).date()
        return cls(
            record.id, record.kind, record.idempotency_key, record.row(digest), ((day, digest), encoded)
        )

    def logged(self) -> dict[str, Any]:
        """The decision as `GET /v1/decisions/{id}` answers it (`DecisionRecord.logged`), from its row."""
        (
            decision_id, kind, created_at, _subject, _key, actor, name, version, sha256,
            request, decision, _digest, shadow, timings, inputs,
        ) = self.row  # fmt: skip
        return logged_view(
            decision_id,
            kind,
            iso_time(created_at),
            _decode(decision),
            {"name": name, "version": version, "sha256": sha256},
            None if self.trace is None else _decode(self.trace[1]),
            _decode(timings),
            _decode(request),
            None if shadow is None else _decode(shadow),
            actor,
            None if inputs is None else _decode(inputs),
        )


class DecisionSink(Protocol):
    """Where the use cases send each decision; the simulator passes one that keeps nothing."""

    async def record(self, record: DecisionRecord) -> None: ...

    async def find_by_idempotency_key(self, kind: str, key: str) -> dict[str, Any] | None: ...


class NullDecisionLog:
    """Keeps nothing (in-process replays that must not fill the production log)."""

    async def record(self, record: DecisionRecord) -> None:
        return None

    async def find_by_idempotency_key(self, kind: str, key: str) -> dict[str, Any] | None:
        return None


def created_window(decision_id: str) -> tuple[datetime, datetime] | None:
    """The times a decision of this id was most likely logged at: a day either side of the moment its
    UUIDv7 names (`service.decisions.ids`); None for an id that names no moment."""
    digits = decision_id.replace("-", "")
    if len(digits) != 32 or digits[12] != "7":
        return None
    try:
        moment = datetime.fromtimestamp(int(digits[:12], 16) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return moment - timedelta(days=1), moment + timedelta(days=1)


def logged_view(
    decision_id: str,
    kind: str,
    created_at: str,
    decision: Any,
    ruleset: dict[str, Any],
    trace: dict[str, Any] | None,
    timings: Any,
    request: Any,
    shadow: Any,
    actor: str | None,
    inputs: Any,
) -> dict[str, Any]:
    """A logged decision as `GET /v1/decisions/{id}` answers it, from its columns' values (decoded),
    whether read back from the table or still queued."""
    out: dict[str, Any] = {
        "decision_id": decision_id,
        "kind": kind,
        "created_at": created_at,
        "decision": decision,
        "ruleset": ruleset,
        "trace": trace,
        "timings": timings,
        "request": request,
    }
    if shadow is not None:
        out["shadow"] = shadow
    if actor is not None:
        out["actor"] = actor
    if inputs is not None:
        out["inputs"] = inputs
    return out


def entry_to_dict(row: DecisionEntry, trace: dict[str, Any] | None) -> dict[str, Any]:
    """A logged decision as `GET /v1/decisions/{id}` answers it; `trace` is the one its row names
    (`read_trace`)."""
    return logged_view(
        row.id,
        row.kind,
        aware(row.created_at).isoformat(),
        row.decision,
        {"name": row.ruleset_name, "version": row.ruleset_version, "sha256": row.ruleset_sha256},
        trace,
        row.timings,
        row.request,
        row.shadow,
        row.actor,
        row.inputs,
    )


async def read_trace(session: AsyncSession, row: DecisionEntry) -> dict[str, Any] | None:
    """The trace of a logged decision: the one its row names in the table of traces, or (logged before
    traces were kept apart) its own."""
    if row.trace_digest is None:
        return row.trace
    day = aware(row.created_at).astimezone(UTC).date()
    found = await session.execute(
        select(DecisionTrace.trace).where(DecisionTrace.day == day, DecisionTrace.digest == row.trace_digest)
    )
    trace: dict[str, Any] | None = found.scalar_one_or_none()
    return trace


class SqlDecisionLog:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        close_timeout_seconds: float = 30.0,
        sqlite_writers: SqliteWriters | None = None,
    ) -> None:
        self._sessions = sessions
        self._queue: asyncio.Queue[Queued] = asyncio.Queue(max_queue)
        self._batch_size = batch_size
        self._close_timeout = close_timeout_seconds
        self._pending: dict[str, Queued] = {}
        self._pending_keys: dict[tuple[str, str], Queued] = {}
        self._task: asyncio.Task[None] | None = None
        bind = sessions.kw.get("bind")
        if not isinstance(bind, AsyncEngine):
            raise TypeError("the decision log needs sessions bound to an AsyncEngine")
        self._connection = HeldConnection(bind)
        self._dialect = bind.dialect
        # on PostgreSQL a batch is one COPY on a driver connection of the log's own (atomic, no transaction
        # block around it)
        self._driver = HeldDriverConnection(bind) if bind.dialect.name == "postgresql" else None
        # on a SQLite file a batch goes through the file's writer (see service.db.sqlite_writer)
        self._sqlite = (sqlite_writers or SqliteWriters()).for_url(bind.url)
        # (day, digest) of traces written by committed transactions (see the module's text)
        self._stored_traces: set[tuple[date, str]] = set()
        self.written = 0
        self.recorded = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="decision-log-writer")

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def record(self, record: DecisionRecord) -> None:
        self.recorded += 1
        queued = Queued.of(record)
        self._pending[record.id] = queued
        if record.idempotency_key is not None:
            self._pending_keys[(record.kind, record.idempotency_key)] = queued
        if self._queue.full():
            await self._queue.put(queued)  # waits while the queue is full: slower, never lossy
        else:
            self._queue.put_nowait(queued)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if self._queue.qsize() < self._batch_size // 10:
                await asyncio.sleep(GATHER_SECONDS)
            batch = [first]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)
            for queued in batch:
                self._pending.pop(queued.id, None)
                if queued.idempotency_key is not None:
                    self._pending_keys.pop((queued.kind, queued.idempotency_key), None)
                self._queue.task_done()

    def _plan(self, batch: Sequence[Queued]) -> tuple[list[tuple[Any, ...]], NewTraces]:
        """The rows of `batch` and the traces they name that the log has not written yet."""
        stored = self._stored_traces
        new: NewTraces = {}
        for queued in batch:
            trace = queued.trace
            if trace is not None:
                key = trace[0]
                if key not in stored and key not in new:
                    new[key] = trace[1].decode()
        return [queued.row for queued in batch], new

    def _stored(self, new: NewTraces) -> None:
        """`new` is committed: later decisions that name these traces write only their digest."""
        if not new:
            return
        if len(self._stored_traces) + len(new) > STORED_TRACES:
            self._stored_traces.clear()
        self._stored_traces.update(new)

    async def _write(self, batch: list[Queued]) -> None:
        delay = 0.05
        done = 0  # decisions of the batch committed so far (SQLite writes it in slices)
        while True:
            try:
                if self._sqlite is not None:
                    while done < len(batch):
                        part = batch[done : done + SQLITE_SLICE]
                        rows, new = self._plan(part)
                        traces = [(day.isoformat(), digest, trace) for (day, digest), trace in new.items()]
                        await self._sqlite.submit(
                            _write_sqlite, (_INSERT.prepared(self._dialect, rows), traces)
                        )
                        self._stored(new)
                        done += len(part)
                else:
                    # a Core executemany on the table: the ORM bulk path costs the event loop more per row
                    rows, new = self._plan(batch)
                    if self._driver is not None:
                        await self._copy(self._driver, rows, new)
                    else:
                        async with self._connection.transaction() as connection:
                            if new:
                                await connection.execute(
                                    text(_TRACE_SQL["named"]),
                                    [
                                        {"day": day.isoformat(), "digest": digest, "trace": trace}
                                        for (day, digest), trace in new.items()
                                    ],
                                )
                            await _INSERT.execute(connection, rows)
                    self._stored(new)
                self.written += len(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be briefly away; keep the batch and try again
                log.exception("writing %d decisions failed; retrying in %.2fs", len(batch), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _copy(self, driver: HeldDriverConnection, rows: list[tuple[Any, ...]], new: NewTraces) -> None:
        # a lost connection is discarded: the retry starts on a fresh one
        async with driver.using() as connection:
            if not new:  # one COPY commits on its own
                await _INSERT.copy_driver(connection, self._dialect, rows)
                return
            async with connection.transaction():  # the traces with the first decisions that name them
                await connection.executemany(
                    _TRACE_SQL["postgresql"], [(day, digest, trace) for (day, digest), trace in new.items()]
                )
                await _INSERT.copy_driver(connection, self._dialect, rows)

    async def flush(self) -> None:
        """Wait until every decision queued so far is written."""
        if self._task is None:
            self.start()
        await self._queue.join()

    async def close(self) -> None:
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), self._close_timeout)
        except TimeoutError:
            log.error("decision log closed with %d decisions unwritten", self._queue.qsize())
        await cancel_and_wait(self._task)
        self._task = None
        await self._connection.close()
        if self._driver is not None:
            await self._driver.close()
        if self._sqlite is not None:
            await self._sqlite.close()

    async def get(self, decision_id: str) -> dict[str, Any] | None:
        pending = self._pending.get(decision_id)
        if pending is not None:
            return pending.logged()
        async with self._sessions() as session:
            by_id = select(DecisionEntry).where(DecisionEntry.id == decision_id)
            row = None
            window = created_window(decision_id)
            if window is not None:
                # on PostgreSQL the log is partitioned by day: the day the id names is the one to read
                earliest, latest = window
                row = (
                    await session.execute(
                        by_id.where(DecisionEntry.created_at >= earliest, DecisionEntry.created_at < latest)
                    )
                ).scalar_one_or_none()
            if row is None:  # logged with a clock far from the id's (or not a time-ordered id): every day
                row = (await session.execute(by_id)).scalar_one_or_none()
            return None if row is None else entry_to_dict(row, await read_trace(session, row))

    async def find_by_idempotency_key(self, kind: str, key: str) -> dict[str, Any] | None:
        pending = self._pending_keys.get((kind, key))
        if pending is not None:
            return pending.logged()
        async with self._sessions() as session:
            row = (await session.execute(_first_with_key(kind, key))).scalar_one_or_none()
            return None if row is None else entry_to_dict(row, await read_trace(session, row))


def _first_with_key(kind: str, key: str) -> Select[DecisionEntry]:
    """The earliest decision of `kind` with idempotency key `key`. The decisions with the key are read
    first (through the index of keys: a few at most), then ordered: left to choose, PostgreSQL without
    statistics (a new day's partition) walked every decision of the kind in time order for the first with
    the key, all of them when none has it (12-47 ms at 100,000 of a kind in a day; SQLite, never analyzed,
    did the same: 10 ms)."""
    keyed = (
        select(DecisionEntry)
        .where(DecisionEntry.kind == kind, DecisionEntry.idempotency_key == key)
        .cte("keyed")
        .prefix_with("MATERIALIZED")
    )
    first = aliased(DecisionEntry, keyed)
    return select(first).order_by(first.created_at).limit(1)


SqliteBatch = tuple[tuple[str, list[tuple[Any, ...]]], list[tuple[str, str, str]]]


def _write_sqlite(connection: sqlite3.Connection, batches: Sequence[SqliteBatch]) -> list[None]:
    """Batches of decision rows (the single-row INSERT and the rows) and the traces new to the log (day,
    digest, JSON) they name, in the writer's transaction."""
    traces = [trace for _, new in batches for trace in new]
    if traces:
        connection.executemany(_TRACE_SQL["sqlite"], traces)
    _INSERT.write_sqlite(connection, batches[0][0][0], [row for (_, rows), _ in batches for row in rows])
    return [None] * len(batches)


async def open_decision_log(sessions: async_sessionmaker[AsyncSession], **options: Any) -> SqlDecisionLog:
    """App start-up hook: the writer, started; `close()` at shutdown flushes it."""
    writer = SqlDecisionLog(sessions, **options)
    writer.start()
    return writer
