"""Simulations: the time the worker running one last reported it alive.

Revision ID: 0008_simulation_heartbeat
Revises: 0007_capacity
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_simulation_heartbeat"
down_revision = "0007_capacity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("simulations", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("simulations") as batch:
        batch.drop_column("heartbeat_at")
