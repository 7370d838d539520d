"""Stock: daily capacity usage per (day, location), and each reservation's capacity claim.

Revision ID: 0007_capacity
Revises: 0006_demand
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_capacity"
down_revision = "0006_demand"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "capacity_usage",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("location", sa.String(64), primary_key=True),
        sa.Column("used", sa.BigInteger(), nullable=False),
    )
    op.add_column("reservations", sa.Column("capacity", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("capacity")
    op.drop_table("capacity_usage")
