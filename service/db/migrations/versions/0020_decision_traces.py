"""Decisions: each trace kept once per day and content, the decision naming it by digest.

A new table `decision_traces` (day, digest, trace), and a column `decisions.trace_digest`. A decision's
trace goes to the table of traces (once per UTC day and digest) and its row names it; rows logged before
keep their trace inline in `decisions.trace`. On PostgreSQL the table of traces is partitioned by day like
the decision log (a partition for today and the next week, and a default one; `service.db.partitions`
keeps the days coming and drops the old ones with the log's). The downgrade writes every trace back into
its decisions' rows.

Revision ID: 0020_decision_traces
Revises: 0019_decision_key_index
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from service.db.day_partitions import TRACES, create_day_partition

revision = "0020_decision_traces"
down_revision = "0019_decision_key_index"
branch_labels = None
depends_on = None

AHEAD_DAYS = 7
# the UTC day of a decision, as its trace's `day` is written (a date on PostgreSQL, 'YYYY-MM-DD' on SQLite)
DAY = {
    "postgresql": "(decisions.created_at AT TIME ZONE 'UTC')::date",
    "sqlite": "date(decisions.created_at)",
}


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("decisions", sa.Column("trace_digest", sa.String(32), nullable=True))
    if conn.dialect.name != "postgresql":
        op.create_table(
            TRACES.table,
            sa.Column("day", sa.Date(), primary_key=True),
            sa.Column("digest", sa.String(32), primary_key=True),
            sa.Column("trace", sa.JSON(), nullable=False),
        )
        return
    conn.execute(
        sa.text(
            f'CREATE TABLE "{TRACES.table}" (day date NOT NULL, digest varchar(32) NOT NULL, '
            f"trace json NOT NULL, PRIMARY KEY (day, digest)) PARTITION BY RANGE (day)"
        )
    )
    conn.execute(sa.text(f'CREATE TABLE "{TRACES.default}" PARTITION OF "{TRACES.table}" DEFAULT'))
    today = datetime.now(UTC).date()
    for offset in range(AHEAD_DAYS + 1):
        create_day_partition(conn, TRACES, today + timedelta(days=offset))


def downgrade() -> None:
    conn = op.get_bind()
    day = DAY[conn.dialect.name]
    conn.execute(
        sa.text(
            f"UPDATE decisions SET trace = (SELECT t.trace FROM {TRACES.table} t "
            f"WHERE t.day = {day} AND t.digest = decisions.trace_digest) "
            "WHERE trace_digest IS NOT NULL"
        )
    )
    op.drop_table(TRACES.table)
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("trace_digest")
