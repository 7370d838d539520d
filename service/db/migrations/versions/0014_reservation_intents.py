"""Stock intents: orders and finishes taken in steps on several Redis Cluster slots, while under way.

Revision ID: 0014_reservation_intents
Revises: 0013_ruleset_heartbeats
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_reservation_intents"
down_revision = "0013_ruleset_heartbeats"
branch_labels = None
depends_on = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "stock_intents",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("rid", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.UniqueConstraint("rid", name="uq_stock_intents_rid"),
        # an intent's id is its attempt's token (Redis fences name it): never reused, also on SQLite
        sqlite_autoincrement=True,
    )
    op.create_index("ix_stock_intents_lease_until_ms", "stock_intents", ["lease_until_ms"])


def downgrade() -> None:
    op.drop_index("ix_stock_intents_lease_until_ms", table_name="stock_intents")
    op.drop_table("stock_intents")
