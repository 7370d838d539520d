"""Stock: the weighted demand rate per (sku, location) kept from applied sales.

Revision ID: 0006_demand
Revises: 0005_simulations
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_demand"
down_revision = "0005_simulations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stock_levels", sa.Column("demand_rate", sa.Double(), nullable=True))
    op.add_column("stock_levels", sa.Column("demand_at_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stock_levels") as batch:
        batch.drop_column("demand_at_ms")
        batch.drop_column("demand_rate")
