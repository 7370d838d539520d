"""The journal checkpoint: old journal days folded into the state the rebuild needs, so they can go.

`fold_old_days` (run by the partition maintenance, `service.db.partitions`, when `JOURNAL_RETENTION_DAYS`
is set) folds every journal entry of the days before the cutoff into the checkpoint (`service.stock.fold`,
tables `stock_checkpoint` and `stock_checkpoint_items`) and takes them out of the journal, in one
transaction: on PostgreSQL it locks each old day partition against writes (EXCLUSIVE: readers go on),
reads it, and detaches and drops it once the fold is saved; the rows of old days in the default partition
(or in a plain table, as on SQLite) are deleted in chunks with RETURNING and folded from what the delete
returned, so a row committed meanwhile is either deleted and folded or left for the next run, never both
or neither. An entry of an old day that arrives late (a cross-slot order completed by the recovery keeps
its creation time) lands in the default partition and is folded by the next run; until then the rebuild
reads it with the rest. On PostgreSQL the run holds the maintenance's advisory lock, so two hosts take
turns (the second finds nothing left to fold); on SQLite its first write takes the write lock, and
`service.db.partitions.maintain` folds a transaction of CHUNK rows at a time there, so that the journal's
writes get the lock between them.

`read_state` is what the rebuild reads: the checkpoint, then every journal entry left, added to it. On
PostgreSQL it holds the same advisory lock, shared, so no fold commits meanwhile; on both databases the
checkpoint's generation, read before and after, must not have moved (else it reads again), so the result
is exactly what a pass over the whole journal would give.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Connection, String, Table, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.day_partitions import JOURNAL, LOCK_KEY, drop_partition, is_partitioned, partitions
from service.db.models.stock import StockJournalEntry
from service.stock.fold import CHUNK, HEADER, JournalFold, load_all, read_header, save_merged

ENTRIES = cast(Table, StockJournalEntry.__table__)
COLUMNS = "id, at_ms, kind, ref, deltas, record"
TYPES: dict[str, Any] = {
    "id": BigInteger,
    "at_ms": BigInteger,
    "kind": String,
    "ref": String,
    "deltas": JSON,
    "record": JSON,
}


@dataclass
class CheckpointReport:
    folded: int = 0  # journal entries folded into the checkpoint (and taken out of the journal)
    dropped: list[str] = field(default_factory=list)  # day partitions dropped
    deleted: int = 0  # rows deleted from the default partition (from the table, unpartitioned)


def fold_old_days(conn: Connection, cutoff: date, now_ms: int, one_chunk: bool = False) -> CheckpointReport:
    """Fold the journal entries of days before `cutoff` into the checkpoint and take them out of the
    journal, in the caller's transaction (on PostgreSQL holding the maintenance's advisory lock);
    `one_chunk`: of an unpartitioned journal, the first CHUNK rows only (`deleted` < CHUNK: no more)."""
    report = CheckpointReport()
    cut_ms = int(JOURNAL.bound(cutoff))
    old: list[str] = []
    rest: str | None = JOURNAL.table
    if conn.dialect.name == "postgresql" and is_partitioned(conn, JOURNAL.table):
        names = partitions(conn, JOURNAL.table)
        old = [n for n in names if (day := JOURNAL.day_of(n)) is not None and day < cutoff]
        rest = JOURNAL.default if JOURNAL.default in names else None
    if not old and (rest is None or not _any_before(conn, rest, cut_ms)):
        return report
    # the fold is this run's from here: a new generation (on SQLite this write takes the write lock)
    conn.execute(update(HEADER).where(HEADER.c.id == 1).values(generation=HEADER.c.generation + 1))
    fold = JournalFold()
    for name in old:
        conn.execute(text(f'LOCK TABLE "{name}" IN EXCLUSIVE MODE'))  # no writes until the drop
        for row in _read(conn, name):
            fold.add(row)
    if rest is not None:
        while True:
            rows = _delete_chunk(conn, rest, cut_ms)
            for row in rows:
                fold.add(row)
            report.deleted += len(rows)
            if len(rows) < CHUNK or one_chunk:
                break
    save_merged(conn, fold, cut_ms, now_ms)
    for name in old:
        drop_partition(conn, JOURNAL, name)
        report.dropped.append(name)
    report.folded = fold.entries
    return report


def _any_before(conn: Connection, table: str, cut_ms: int) -> bool:
    found = conn.execute(text(f'SELECT 1 FROM "{table}" WHERE at_ms < :cut LIMIT 1'), {"cut": cut_ms})
    return found.first() is not None


def _read(conn: Connection, table: str) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        rows = (
            conn.execute(
                text(f'SELECT {COLUMNS} FROM "{table}" WHERE id > :after ORDER BY id LIMIT :n').columns(
                    **TYPES
                ),
                {"after": after, "n": CHUNK},
            )
            .mappings()
            .all()
        )
        for row in rows:
            yield dict(row)
        if len(rows) < CHUNK:
            return
        after = int(rows[-1]["id"])


def _delete_chunk(conn: Connection, table: str, cut_ms: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        text(
            f'DELETE FROM "{table}" WHERE id IN (SELECT id FROM "{table}" WHERE at_ms < :cut '
            f"ORDER BY id LIMIT :n) RETURNING {COLUMNS}"
        ).columns(**TYPES),
        {"cut": cut_ms, "n": CHUNK},
    )
    return [dict(row) for row in rows.mappings()]


@dataclass(frozen=True)
class JournalState:
    """The checkpoint with every journal entry left added to it."""

    fold: JournalFold
    checkpoint_entries: int  # entries the checkpoint had folded
    journal_entries: int  # entries read from the journal
    generation: int  # the checkpoint's generation


def _read_state(conn: Connection) -> JournalState | None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": LOCK_KEY})
    generation = read_header(conn).generation
    fold = load_all(conn)
    folded, after = fold.entries, 0
    while True:
        rows = (
            conn.execute(select(ENTRIES).where(ENTRIES.c.id > after).order_by(ENTRIES.c.id).limit(CHUNK))
            .mappings()
            .all()
        )
        for row in rows:
            fold.add(dict(row))
        if len(rows) < CHUNK:
            break
        after = int(rows[-1]["id"])
    if read_header(conn).generation != generation:
        return None  # a fold committed meanwhile (SQLite): read again
    return JournalState(fold, folded, fold.entries - folded, generation)


async def read_state(engine: AsyncEngine) -> JournalState:
    """The checkpoint and the journal entries left, read as of one moment (see the module's text)."""
    while True:
        async with engine.connect() as conn:
            state = await conn.run_sync(_read_state)
        if state is not None:
            return state


def _extent(conn: Connection) -> tuple[int, int]:
    generation = read_header(conn).generation
    rows = int(conn.execute(select(func.count()).select_from(ENTRIES)).scalar_one())
    return (generation if read_header(conn).generation == generation else -1), rows


async def journal_extent(engine: AsyncEngine) -> tuple[int, int]:
    """The checkpoint's generation and the journal's row count (generation -1 when a fold committed
    between the reads): the rebuild read everything there is when these are its own."""
    async with engine.connect() as conn:
        return await conn.run_sync(_extent)
