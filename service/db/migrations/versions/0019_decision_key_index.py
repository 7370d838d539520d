"""Decisions: the index of idempotency keys holds the decisions that have one.

Most decisions (availability, allocations without a reservation, reorder reviews) have no idempotency key,
and each still cost a write to the index of (kind, idempotency_key). The index becomes partial (`WHERE
idempotency_key IS NOT NULL`): a lookup by kind and key (`kind = ? AND idempotency_key = ?`) implies the
condition and uses it on SQLite and PostgreSQL alike. On PostgreSQL the index of the partitioned table is
made again on every partition.

Revision ID: 0019_decision_key_index
Revises: 0018_journal_checkpoint
"""

import sqlalchemy as sa
from alembic import op

revision = "0019_decision_key_index"
down_revision = "0018_journal_checkpoint"
branch_labels = None
depends_on = None

INDEX = "ix_decisions_kind_idempotency_key"
HAS_KEY = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    op.drop_index(INDEX, "decisions")
    op.create_index(
        INDEX, "decisions", ["kind", "idempotency_key"], sqlite_where=HAS_KEY, postgresql_where=HAS_KEY
    )


def downgrade() -> None:
    op.drop_index(INDEX, "decisions")
    op.create_index(INDEX, "decisions", ["kind", "idempotency_key"])
