"""Simulation records.

Revision ID: 0005_simulations
Revises: 0004_decisions
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_simulations"
down_revision = "0004_decisions"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "simulations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("kpis", sa.Text, nullable=True),
        sa.Column("report", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_simulations_created_at", "simulations", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_simulations_created_at", table_name="simulations")
    op.drop_table("simulations")
