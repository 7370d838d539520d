"""Day partitions on PostgreSQL: which tables are partitioned by day, the names and bounds of their
partitions, and making one (`service.db.partitions` keeps them, `service.stock.checkpoint` folds and drops
the journal's old days)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, text

# pg_advisory_xact_lock key of partition maintenance (any fixed number no other lock uses)
LOCK_KEY = 7_317_001
LOCK_TIMEOUT = "2s"


@dataclass(frozen=True)
class DayPartitioned:
    """A table partitioned by UTC day on `column`, a timestamp, (`millis`) Unix milliseconds or (`dated`)
    a date."""

    table: str
    column: str
    millis: bool
    # whether the decision log's retention drops its old days as they are (the journal's are folded into
    # its checkpoint first, by its own retention: service.stock.checkpoint)
    trimmed: bool
    dated: bool = False

    def bound(self, day: date) -> str:
        """The SQL literal of the start of `day` in the partition key's terms."""
        if self.dated:
            return f"'{day.isoformat()}'"
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
# the decisions' traces, by the UTC day of their decisions: made and dropped with the log's days
TRACES = DayPartitioned("decision_traces", "day", millis=False, trimmed=True, dated=True)
JOURNAL = DayPartitioned("stock_journal", "at_ms", millis=True, trimmed=False)
TABLES = (DECISIONS, TRACES, JOURNAL)


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
    table weak enough for writes to go on. The partition's columns are compressed as its table's
    (PostgreSQL 14 and later: the decision log's JSON with lz4, migration 0025)."""
    name, low, high = spec.partition(day), spec.bound(day), spec.bound(day + timedelta(days=1))
    compression = " INCLUDING COMPRESSION" if (conn.dialect.server_version_info or (0,)) >= (14,) else ""
    conn.execute(
        text(
            f'CREATE TABLE "{name}" (LIKE "{spec.table}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
            f"{compression})"
        )
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


def drop_partition(conn: Connection, spec: DayPartitioned, name: str) -> None:
    conn.execute(text(f'ALTER TABLE "{spec.table}" DETACH PARTITION "{name}"'))
    conn.execute(text(f'DROP TABLE "{name}"'))
