"""Decision log and stock journal partitioned by day on PostgreSQL (SQLite keeps plain tables).

Each table becomes a range-partitioned table of the same columns (its rows kept): a partition for every
day its rows have, for today and the next week, and a default partition. Primary keys take the partition
key in (`(id, created_at)`, `(id, at_ms)`); the journal keeps its id sequence. Decisions get an index on
(subject, created_at) for lookups by order id on both databases. `service.db.partitions` keeps the days
coming afterwards.

Revision ID: 0015_partition_decision_log
Revises: 0014_reservation_intents
"""

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from service.db.day_partitions import DECISIONS, JOURNAL, DayPartitioned, create_day_partition

revision = "0015_partition_decision_log"
down_revision = "0014_reservation_intents"
branch_labels = None
depends_on = None

AHEAD_DAYS = 7
SUBJECT_INDEX = "ix_decisions_subject_created_at"
# indexes beside the primary key, per table: (name, columns)
INDEXES = {
    "decisions": [
        ("ix_decisions_kind_created_at", "kind, created_at"),
        ("ix_decisions_kind_idempotency_key", "kind, idempotency_key"),
        (SUBJECT_INDEX, "subject, created_at"),
    ],
    "stock_journal": [],
}


def _days(conn: sa.Connection, spec: DayPartitioned, table: str) -> list[date]:
    day = f"(to_timestamp({spec.column} / 1000.0) AT TIME ZONE 'UTC')::date"
    if not spec.millis:
        day = f"({spec.column} AT TIME ZONE 'UTC')::date"
    return [row[0] for row in conn.execute(sa.text(f'SELECT DISTINCT {day} FROM "{table}" ORDER BY 1'))]


def _sequence(conn: sa.Connection, table: str) -> str | None:
    found = conn.execute(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')")).scalar()
    return None if found is None else str(found)


def _rebuild(conn: sa.Connection, spec: DayPartitioned, partitioned: bool) -> None:
    """Replace `spec.table` by a table of the same columns and rows, partitioned by day or plain."""
    table, old = spec.table, f"{spec.table}_before_0014"
    sequence = _sequence(conn, table)
    if sequence is not None:
        conn.execute(sa.text(f"ALTER SEQUENCE {sequence} OWNED BY NONE"))
    for name, _ in INDEXES[table]:
        conn.execute(sa.text(f'DROP INDEX IF EXISTS "{name}"'))
    conn.execute(sa.text(f'ALTER TABLE "{table}" RENAME TO "{old}"'))
    primary = conn.execute(
        sa.text(f"SELECT conname FROM pg_constraint WHERE conrelid = '\"{old}\"'::regclass AND contype = 'p'")
    ).scalar_one()
    conn.execute(sa.text(f'ALTER TABLE "{old}" RENAME CONSTRAINT "{primary}" TO "{old}_pkey"'))
    key = f"id, {spec.column}" if partitioned else "id"
    tail = f" PARTITION BY RANGE ({spec.column})" if partitioned else ""
    conn.execute(sa.text(f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS){tail}'))
    conn.execute(sa.text(f'ALTER TABLE "{table}" ADD CONSTRAINT "{primary}" PRIMARY KEY ({key})'))
    for name, columns in INDEXES[table]:
        if partitioned or name != SUBJECT_INDEX:
            conn.execute(sa.text(f'CREATE INDEX "{name}" ON "{table}" ({columns})'))
    if partitioned:
        conn.execute(sa.text(f'CREATE TABLE "{spec.default}" PARTITION OF "{table}" DEFAULT'))
        today = datetime.now(UTC).date()
        days = set(_days(conn, spec, old)) | {today + timedelta(days=n) for n in range(AHEAD_DAYS + 1)}
        for day in sorted(days):
            create_day_partition(conn, spec, day)
    conn.execute(sa.text(f'INSERT INTO "{table}" SELECT * FROM "{old}"'))
    conn.execute(sa.text(f'DROP TABLE "{old}"'))
    if sequence is not None:
        conn.execute(sa.text(f'ALTER SEQUENCE {sequence} OWNED BY "{table}".id'))


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        op.create_index(SUBJECT_INDEX, "decisions", ["subject", "created_at"])
        return
    for spec in (DECISIONS, JOURNAL):
        _rebuild(conn, spec, partitioned=True)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        op.drop_index(SUBJECT_INDEX, "decisions")
        return
    for spec in (DECISIONS, JOURNAL):
        _rebuild(conn, spec, partitioned=False)
