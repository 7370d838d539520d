"""Day partitions of the decision log and the stock journal on PostgreSQL.

Both tables are range-partitioned by day (`decisions` on `created_at`, `stock_journal` on `at_ms`, UTC
days) with a default partition that catches a row of a day without a partition of its own (a clock far
off, a partition not made yet); SQLite keeps plain tables. `maintain` makes the partitions of today and
the next `ahead_days` days, moves any rows of those days out of the default partition, and drops the
decision log's partitions of days before its retention. With a journal retention set it also folds the
journal's days before that retention into the journal checkpoint and drops them (`service.stock.checkpoint`:
the Redis rebuild starts from the checkpoint, so nothing it needs goes); on SQLite that is all it does, by
deleting the folded rows. The service runs it at start-up and periodically (`PartitionKeeper`),
`retail-policy db partitions` runs it once. Every run holds a transaction-scoped advisory lock, so the
workers of several hosts take turns, and a short lock timeout, so a run that would wait on a busy table
gives up and the next one tries again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.day_partitions import (
    DECISIONS,
    JOURNAL,
    LOCK_KEY,
    LOCK_TIMEOUT,
    TABLES,
    TRACES,
    DayPartitioned,
    create_day_partition,
    drop_partition,
    is_partitioned,
    partitions,
)
from service.stock.checkpoint import fold_old_days
from service.stock.fold import CHUNK
from service.tasks import cancel_and_wait

# the names other modules take from here (the migrations, the tests)
__all__ = [
    "DECISIONS",
    "JOURNAL",
    "LOCK_KEY",
    "TRACES",
    "DayPartitioned",
    "MaintenanceReport",
    "PartitionKeeper",
    "create_day_partition",
    "maintain",
    "maintain_sync",
]

log = logging.getLogger("retail_policy.partitions")


@dataclass
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved: int = 0  # rows moved out of a default partition into their day's partition
    trimmed: int = 0  # rows of expired days deleted from a default partition (from the journal: folded)
    folded: int = 0  # journal entries folded into the journal checkpoint and taken out of the journal


def maintain_sync(
    conn: Connection, today: date, ahead_days: int, retention_days: int, journal_retention_days: int = 0
) -> MaintenanceReport:
    """One maintenance run in the caller's transaction (see the module's text); a retention of 0 keeps
    all. On SQLite only the journal's retention applies."""
    report = MaintenanceReport()
    postgresql = conn.dialect.name == "postgresql"
    if postgresql:
        conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        conn.execute(text(f"SELECT pg_advisory_xact_lock({LOCK_KEY})"))
    for spec in TABLES if postgresql else ():
        if not is_partitioned(conn, spec.table):
            continue
        existing = set(partitions(conn, spec.table))
        for offset in range(ahead_days + 1):
            day = today + timedelta(days=offset)
            if spec.partition(day) not in existing:
                report.moved += create_day_partition(conn, spec, day)
                report.created.append(spec.partition(day))
        if not spec.trimmed or retention_days <= 0:
            continue
        cutoff = today - timedelta(days=retention_days)
        for name in sorted(existing):
            held = spec.day_of(name)
            if held is not None and held < cutoff:
                drop_partition(conn, spec, name)
                report.dropped.append(name)
        if spec.default in existing:
            report.trimmed += int(
                conn.execute(
                    text(f'DELETE FROM "{spec.default}" WHERE {spec.column} < {spec.bound(cutoff)}')
                ).rowcount
                or 0
            )
    if journal_retention_days > 0:
        folded = fold_old_days(
            conn, today - timedelta(days=journal_retention_days), int(datetime.now(UTC).timestamp() * 1000)
        )
        report.dropped += folded.dropped
        report.trimmed += folded.deleted
        report.folded += folded.folded
    return report


async def maintain(
    engine: AsyncEngine, today: date, ahead_days: int, retention_days: int, journal_retention_days: int = 0
) -> MaintenanceReport:
    """`maintain_sync` in a transaction of its own. On SQLite (the journal's retention only) in a
    transaction per CHUNK journal rows: SQLite has one writer at a time, and the journal's writes get the
    lock between them (each is a whole fold of its rows, and the rebuild re-reads when one commits)."""
    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            return await conn.run_sync(
                maintain_sync, today, ahead_days, retention_days, journal_retention_days
            )
    report = MaintenanceReport()
    while journal_retention_days > 0:
        cutoff, now_ms = (
            today - timedelta(days=journal_retention_days),
            int(datetime.now(UTC).timestamp() * 1000),
        )
        async with engine.begin() as conn:
            folded = await conn.run_sync(fold_old_days, cutoff, now_ms, True)
        report.trimmed += folded.deleted
        report.folded += folded.folded
        if folded.deleted < CHUNK:
            break
    return report


@dataclass
class PartitionKeeper:
    """Runs `maintain` at start-up and then every `interval_seconds` in the background."""

    engine: AsyncEngine
    ahead_days: int
    retention_days: int
    interval_seconds: float
    journal_retention_days: int = 0
    _task: asyncio.Task[None] | None = None

    async def run_once(self) -> MaintenanceReport | None:
        try:
            report = await maintain(
                self.engine,
                datetime.now(UTC).date(),
                self.ahead_days,
                self.retention_days,
                self.journal_retention_days,
            )
        except Exception:  # the database busy or away: the next run tries again
            log.warning(
                "partition maintenance failed; retrying in %.0f s", self.interval_seconds, exc_info=True
            )
            return None
        if report.created or report.dropped or report.folded:
            log.info(
                "partitions created %s, dropped %s; %d journal entries folded into its checkpoint",
                report.created,
                report.dropped,
                report.folded,
            )
        return report

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            await self.run_once()

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name="partition-maintenance")
        return self._task

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
