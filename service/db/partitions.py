"""Day partitions of the decision log and the stock journal on PostgreSQL.

Both tables are range-partitioned by day (`decisions` on `created_at`, `stock_journal` on `at_ms`, UTC
days) with a default partition that catches a row of a day without a partition of its own (a clock far
off, a partition not made yet); SQLite keeps plain tables. `maintain` makes the partitions of today and
the next `ahead_days` days, moves any rows of those days out of the default partition, and drops the
decision log's partitions of days before its retention. The service runs it at start-up and periodically
(`PartitionKeeper`), `retail-policy db partitions` runs it once. Every run holds a transaction-scoped
advisory lock, so the workers of several hosts take turns, and a short lock timeout, so a run that would
wait on a busy table gives up and the next one tries again.

The journal is never trimmed by retention: the Redis rebuild sums every entry it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("retail_policy.partitions")

# pg_advisory_xact_lock key of partition maintenance (any fixed number no other lock uses)
LOCK_KEY = 7_317_001
LOCK_TIMEOUT = "2s"


@dataclass(frozen=True)
class DayPartitioned:
    """A table partitioned by UTC day on `column`, a timestamp or (`millis`) Unix milliseconds."""

    table: str
    column: str
    millis: bool
    trimmed: bool  # whether the retention drops its old days

    def bound(self, day: date) -> str:
        """The SQL literal of the start of `day` in the partition key's terms."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if self.millis:
            return str(int(start.timestamp()) * 1000)
        return f"'{start.isoformat()}'"

    def partition(self, day: date) -> str:
        return f"{self.table}_p{day:%Y%m%d}"

    @property
    def default(self) -> str:
        return f"{self.table}_default"

    def day_of(self, partition: str) -> date | None:
        """The day a partition of this table holds, from its name (None for the default or a stranger)."""
        prefix = f"{self.table}_p"
        if not partition.startswith(prefix):
            return None
        try:
            return datetime.strptime(partition[len(prefix) :], "%Y%m%d").replace(tzinfo=UTC).date()
        except ValueError:
            return None


DECISIONS = DayPartitioned("decisions", "created_at", millis=False, trimmed=True)
JOURNAL = DayPartitioned("stock_journal", "at_ms", millis=True, trimmed=False)
TABLES = (DECISIONS, JOURNAL)


@dataclass
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved: int = 0  # rows moved out of a default partition into their day's partition
    trimmed: int = 0  # rows of expired days deleted from a default partition


def is_partitioned(conn: Connection, table: str) -> bool:
    found = conn.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = :table AND c.relnamespace = current_schema()::regnamespace"
        ),
        {"table": table},
    ).first()
    return found is not None


def partitions(conn: Connection, table: str) -> list[str]:
    """The names of `table`'s partitions."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = :table AND p.relnamespace = current_schema()::regnamespace ORDER BY 1"
        ),
        {"table": table},
    ).all()
    return [str(name) for (name,) in rows]


def create_day_partition(conn: Connection, spec: DayPartitioned, day: date) -> int:
    """Make `day`'s partition, taking over the rows of that day the default partition holds; answers
    how many rows moved. Attaching (rather than CREATE ... PARTITION OF) keeps the lock on the parent
    table weak enough for writes to go on."""
    name, low, high = spec.partition(day), spec.bound(day), spec.bound(day + timedelta(days=1))
    conn.execute(
        text(f'CREATE TABLE "{name}" (LIKE "{spec.table}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
    )
    moved = conn.execute(
        text(
            f'WITH moved AS (DELETE FROM "{spec.default}" WHERE {spec.column} >= {low} '
            f"AND {spec.column} < {high} RETURNING *) "
            f'INSERT INTO "{name}" SELECT * FROM moved'
        )
    ).rowcount
    conn.execute(
        text(f'ALTER TABLE "{spec.table}" ATTACH PARTITION "{name}" FOR VALUES FROM ({low}) TO ({high})')
    )
    return int(moved or 0)


def maintain_sync(conn: Connection, today: date, ahead_days: int, retention_days: int) -> MaintenanceReport:
    """One maintenance run in the caller's transaction (see the module's text); retention 0 keeps all."""
    report = MaintenanceReport()
    if conn.dialect.name != "postgresql":
        return report
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    conn.execute(text(f"SELECT pg_advisory_xact_lock({LOCK_KEY})"))
    for spec in TABLES:
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
                conn.execute(text(f'ALTER TABLE "{spec.table}" DETACH PARTITION "{name}"'))
                conn.execute(text(f'DROP TABLE "{name}"'))
                report.dropped.append(name)
        if spec.default in existing:
            report.trimmed += int(
                conn.execute(
                    text(f'DELETE FROM "{spec.default}" WHERE {spec.column} < {spec.bound(cutoff)}')
                ).rowcount
                or 0
            )
    return report


async def maintain(
    engine: AsyncEngine, today: date, ahead_days: int, retention_days: int
) -> MaintenanceReport:
    """`maintain_sync` in a transaction of its own."""
    if engine.dialect.name != "postgresql":
        return MaintenanceReport()
    async with engine.begin() as conn:
        return await conn.run_sync(maintain_sync, today, ahead_days, retention_days)


@dataclass
class PartitionKeeper:
    """Runs `maintain` at start-up and then every `interval_seconds` in the background."""

    engine: AsyncEngine
    ahead_days: int
    retention_days: int
    interval_seconds: float
    _task: asyncio.Task[None] | None = None

    async def run_once(self) -> MaintenanceReport | None:
        try:
            report = await maintain(
                self.engine, datetime.now(UTC).date(), self.ahead_days, self.retention_days
            )
        except Exception:  # the database busy or away: the next run tries again
            log.warning(
                "partition maintenance failed; retrying in %.0f s", self.interval_seconds, exc_info=True
            )
            return None
        if report.created or report.dropped:
            log.info("partitions created %s, dropped %s", report.created, report.dropped)
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
