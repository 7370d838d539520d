"""Indexes that keep periodic and per-request reads to the rows they are about, whatever the planner's
statistics say.

The moves' recovery reads, every sweeper round, the transfers executed (not yet received) in the few
minutes since its last round: by `updated_at`, which no index held, so it read every executed case
through the index of (status, created_at). A partial index of `updated_at` over executed transfers holds
just those cases; a case leaves it once its transfer is received.

Expected receipts are read only while units are outstanding: the delayed-receipt check looks for those
past their `expected_at`, a transfer_in books units into those of its SKU and location. Both indexes held
every receipt ever recorded (the check, a one-sided range without statistics, read the whole table); they
become partial (`WHERE outstanding > 0`), and a receipt leaves them once it is fully in.

A query names the partial condition in literals (`status = 'executed'`, `outstanding > 0`), so that
SQLite and PostgreSQL's plan of a prepared statement may use the index.

Revision ID: 0024_bounded_reads
Revises: 0023_outbox_txid
"""

import sqlalchemy as sa
from alembic import op

revision = "0024_bounded_reads"
down_revision = "0023_outbox_txid"
branch_labels = None
depends_on = None

EXECUTED = "ix_approval_cases_executed_transfers"
EXECUTED_TRANSFER = sa.text("status = 'executed' AND kind = 'transfer'")
OUTSTANDING = sa.text("outstanding > 0")
# (old index, new index, columns)
RECEIPTS = (
    ("ix_expected_receipts_expected_at", "ix_expected_receipts_outstanding_expected_at", ["expected_at"]),
    (
        "ix_expected_receipts_sku_to_location",
        "ix_expected_receipts_outstanding_sku_to_location",
        ["sku", "to_location"],
    ),
)


def upgrade() -> None:
    op.create_index(
        EXECUTED,
        "approval_cases",
        ["updated_at"],
        sqlite_where=EXECUTED_TRANSFER,
        postgresql_where=EXECUTED_TRANSFER,
    )
    for old, new, columns in RECEIPTS:
        op.drop_index(old, "expected_receipts")
        op.create_index(
            new, "expected_receipts", columns, sqlite_where=OUTSTANDING, postgresql_where=OUTSTANDING
        )


def downgrade() -> None:
    for old, new, columns in RECEIPTS:
        op.drop_index(new, "expected_receipts")
        op.create_index(old, "expected_receipts", columns)
    op.drop_index(EXECUTED, "approval_cases")
