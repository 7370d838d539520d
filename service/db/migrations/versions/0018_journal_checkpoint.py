"""Stock journal checkpoint: the folded state of the journal days the retention took away.

`stock_checkpoint` is one row (id 1): how many entries were folded, the highest entry id and write number
among them, the cutoff of the latest fold and a generation that every fold raises. `stock_checkpoint_items`
holds the folded state by (kind, key): `level` and `rate` per "SKU<TAB>LOCATION", `event` per applied
event id, `resv` per reservation id (see `service.stock.fold`). The downgrade drops them: once journal days
were folded and dropped, the journal alone no longer rebuilds Redis in full.

Revision ID: 0018_journal_checkpoint
Revises: 0017_decision_inputs
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_journal_checkpoint"
down_revision = "0017_decision_inputs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    header = op.create_table(
        "stock_checkpoint",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("writes", sa.BigInteger(), nullable=False),
        sa.Column("cutoff_ms", sa.BigInteger(), nullable=False),
        sa.Column("made_at_ms", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(
        header,
        [
            {
                "id": 1,
                "generation": 0,
                "entries": 0,
                "last_id": 0,
                "writes": 0,
                "cutoff_ms": 0,
                "made_at_ms": 0,
            }
        ],
    )
    op.create_table(
        "stock_checkpoint_items",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stock_checkpoint_items")
    op.drop_table("stock_checkpoint")
