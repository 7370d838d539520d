"""Ruleset heartbeats: each worker's served generation and versions, for the fleet view.

Revision ID: 0013_ruleset_heartbeats
Revises: 0012_approval_requests
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_ruleset_heartbeats"
down_revision = "0012_approval_requests"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ruleset_heartbeats",
        sa.Column("worker", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("engine", sa.String(16), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("served", sa.JSON(), nullable=False),
        sa.Column("reload_error", sa.String(200), nullable=True),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("seen_at", TIME, nullable=False),
    )
    op.create_index("ix_ruleset_heartbeats_seen_at", "ruleset_heartbeats", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_ruleset_heartbeats_seen_at", table_name="ruleset_heartbeats")
    op.drop_table("ruleset_heartbeats")
