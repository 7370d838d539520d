"""Outbox events carry, on PostgreSQL, the id of the transaction that wrote them.

PostgreSQL takes an event's id from a sequence when the row is inserted, and transactions commit in any
order, so an event can become visible after one with a higher id. The dispatcher used to find those by
looking at every event every few seconds, an anti-join of the whole outbox. With the writing transaction's
id (`pg_current_xact_id()`, 64 bits: no wraparound) on each row, a round looks only at events whose
transaction is at or past the oldest one still running when the previous round read
(`pg_snapshot_xmin`): every transaction before it had committed or rolled back, so its events were
visible to that round. The index serves that look. On SQLite the column stays NULL: events commit in the
order of their ids there.

Revision ID: 0023_outbox_txid
Revises: 0022_case_roles_in_inbox_order
"""

import sqlalchemy as sa
from alembic import op

revision = "0023_outbox_txid"
down_revision = "0022_case_roles_in_inbox_order"
branch_labels = None
depends_on = None

INDEX = "ix_outbox_events_txid"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    default = sa.text("(pg_current_xact_id()::text::bigint)") if postgres else None
    op.add_column("outbox_events", sa.Column("txid", sa.BigInteger(), nullable=True, server_default=default))
    if postgres:
        op.create_index(INDEX, "outbox_events", ["txid"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(INDEX, "outbox_events")
    with op.batch_alter_table("outbox_events") as batch:
        batch.drop_column("txid")
